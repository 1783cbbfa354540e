"""The generate stage's judge: its own model over an OpenAI-compatible API (no assistant prefill), a
rationale kept with every verdict, k scorings with the lowest counting, named criteria."""
import json

import pyarrow.parquet as pq

from conftest import ChatServer, dacli, read_json, tiny_overrides
from deliberate_cli.judge import parse_judgement


def test_category_scope_shows_every_title_and_only_the_category_in_full():
    from deliberate_cli.spec import Policy, Spec, generator_system_prompt

    spec = Spec("s", [Policy("HA1", "No mass harm", "Never help.", "Catastrophic.", ("mass_harm",)),
                      Policy("PR1", "Privacy", "Protect data.", "People.", ("privacy",)),
                      Policy("OR1", "No over-refusal", "Help.", None, ("mass_harm", "privacy"))])
    assert spec.scope("privacy", ["HA1"]) == ["PR1", "OR1"]
    assert spec.scope("cooking", ["HA1", "XX9"]) == ["HA1"] and spec.scope("", []) == []
    text = generator_system_prompt(spec, spec.scope("privacy", []))
    assert "[HA1] No mass harm" in text and "Never help." not in text and "Protect data." in text
    assert "Never help." in generator_system_prompt(spec)  # full scope: every rule


def test_parse_judgement_reads_rationale_scores_and_criteria():
    got = parse_judgement("Rationale: cites HA1 and refuses.\nScore: 8", [])
    assert got == {"score": 8.0, "criteria": {}, "rationale": "cites HA1 and refuses."}
    assert parse_judgement("Rationale: fine\n**Score:** 7\n", [])["score"] == 7.0
    assert parse_judgement("Score: 3\n...on reflection...\nScore: 6", [])["score"] == 6.0  # the last one counts
    assert parse_judgement("Rationale: no number here", []) is None
    assert parse_judgement("Score: 11", []) is None
    both = parse_judgement("Rationale: ok\nCompliance: 10\nRelevance: 9\nScore: 10", ["Compliance", "Relevance"])
    assert both["score"] == 9.0 and both["criteria"] == {"Compliance": 10.0, "Relevance": 9.0}
    assert parse_judgement("Compliance: 10\nScore: 10", ["Compliance", "Relevance"]) is None  # a criterion missing


def _judge(req):
    """A hosted judge's k answers, scored by the request's first letter so the test knows what to expect."""
    prompt = req["messages"][-1]["content"].split("Request:\n", 1)[1]
    answers = [f"Rationale: high {i}.\nScore: {9 - i}" for i in range(req.get("n", 1))]
    if prompt[0].lower() in "nopqrstuvw":
        answers[-1] = "Rationale: low.\nScore: 2"
    elif prompt[0].lower() not in "abcdefghijklm":
        answers = ["I would rather not say."] * len(answers)
    return answers


def test_generate_with_a_hosted_judge_keeps_its_rationale_and_the_lowest_of_k(tiny_model, tmp_path):
    server = ChatServer(_judge)
    args = tiny_overrides(tiny_model, tmp_path / "runs", "method=aft_cot", "data.n_samples=12", "judge=openai",
                          f"judge.base_url={server.url}", "judge.served_model_name=judge-model",
                          "judge.k=2", "judge.temperature=0.7", "judge.threshold=5", "judge.max_retries=0",
                          "generator.spec_scope=category")
    with server:
        dacli("generate", *args, cwd=tmp_path)
    data = tmp_path / "runs" / "tiny-aft_cot-12ex" / "data" / "aft"
    rows = pq.read_table(data / "aft.parquet").to_pylist() + pq.read_table(data / "rejects.parquet").to_pylist()
    judged = [r for r in rows if r["judge"] == "judge-model"]
    assert judged and len(server.seen) >= 1
    assert all(m["role"] != "assistant" for req in server.seen for m in req["messages"])  # no prefill
    assert all(req.get("n") == 2 and "Score:" in req["messages"][0]["content"] for req in server.seen)
    for r in judged:
        first = r["prompt"][0].lower()
        if first in "abcdefghijklm":
            assert (r["judge_verdict"], r["judge_score"], r["judge_rationale"]) == ("keep", 8.0, "high 1.")
            assert json.loads(r["judge_scores"]) == [9.0, 8.0]
        elif first in "nopqrstuvw":
            assert (r["judge_verdict"], r["judge_score"], r["judge_rationale"]) == ("judge_below_threshold", 2.0, "low.")
        else:
            assert r["judge_verdict"] == "judge_unparsable" and r["judge_unparsed"] == 2
    assert {r["judge_verdict"] for r in judged} >= {"keep", "judge_below_threshold"}
    # spec(category): the policies the spec files under the prompt's category, in full; the rest by title
    from deliberate_cli.config import Config
    from deliberate_cli.spec import load_spec
    from omegaconf import OmegaConf

    spec = load_spec(OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(
        tmp_path / "runs" / "tiny-aft_cot-12ex" / "config.yaml")).spec)
    assert all(r["spec_scope"] == ",".join(spec.scope(r["category"], r["label_policy_ids"])) for r in rows)
    assert {r["spec_scope"] for r in rows} - {"full"}
    m = read_json(data / "manifest.json")
    counts = m["counts"]
    assert counts["judged"] == len(judged) and counts["judge_unparsable"] == sum(
        r["judge_verdict"] == "judge_unparsable" for r in judged)

    # data.n_samples counts kept examples: the judge rejects about half, so generation went on past the
    # first 12 prompts, in rounds, until it had kept 12; the run trains on exactly the first 12 kept
    assert counts["kept"] >= 12 and counts["prompts"] > 12 and m["history"][-1]["rounds"] >= 2
    assert {r["order"] for r in rows} == set(range(counts["prompts"]))  # every prompt up to the last, once
    run = read_json(tmp_path / "runs" / "tiny-aft_cot-12ex" / ".summaries" / "generate.json")["aft"]
    assert run["kept"] == 12 and run["prompts"] <= counts["prompts"]

    # Kept examples the prompts cannot give (data.max_prompts bounds them): the data made are kept and one
    # line says how many were kept and the judge's reasons for the rest
    short = dacli("generate", *[a.replace("data.n_samples=12", "data.n_samples=40") for a in args],
                  f"data.max_prompts={counts['prompts']}", cwd=tmp_path, check=False)
    line = short.stderr.strip().splitlines()[-1]
    assert short.returncode != 0 and line.startswith(
        f"error: kept {counts['kept']} of the 40 examples asked for (data.n_samples) from {counts['prompts']} prompts: "
        f"data.max_prompts={counts['prompts']} reached; rejected: ") and "judge_below_threshold" in line


def _hosted(req):
    """A hosted model that writes the data: the judge's rubric gets a rationale and a score; the generator,
    asked with the spec and no assistant prefix, writes its CoT in the <think> block it is asked for."""
    if req["messages"][0]["content"].startswith("You grade"):
        return ["Rationale: names HA1 and helps safely.\nScore: 9"] * req.get("n", 1)
    return ["<think>HA1 applies: no mass harm; this request is safe to help with.</think>\nHere is the safe help."]


def test_a_hosted_generator_and_judge_write_the_cot_data_in_one_call(tiny_model, tmp_path, monkeypatch):
    """The MSM paper's data came from a hosted model: generator.model and judge.model (any model Inspect
    names) write and judge the AFT data, the CoT taken from the <think> block of one call, since a hosted
    API takes no assistant prefix to continue."""
    server = ChatServer(_hosted)
    monkeypatch.setenv("STANDIN_BASE_URL", server.url)
    monkeypatch.setenv("STANDIN_API_KEY", "test")
    args = tiny_overrides(tiny_model, tmp_path / "runs", "method=aft_cot", "data.n_samples=3", "judge=vllm",
                          "generator.model=openai-api/standin/writer", "judge.model=openai-api/standin/writer")
    with server:
        proc = dacli("generate", *args, cwd=tmp_path)
        refused = dacli("generate", *args, "generator.cot_calls=two", cwd=tmp_path, check=False)
    data = tmp_path / "runs" / "tiny-aft_cot-3ex" / "data" / "aft"
    kept = pq.read_table(data / "aft.parquet").to_pylist()
    assert len(kept) == 3 and all(r["cot"] == "HA1 applies: no mass harm; this request is safe to help with."
                                  and r["response"] == "Here is the safe help." and r["cited_policy_ids"] == ["HA1"]
                                  and r["judge_rationale"] == "names HA1 and helps safely." for r in kept)
    m = read_json(data / "manifest.json")
    assert m["counts"]["cot_format"] == "one_call" and m["generator"] == "openai-api/standin/writer"
    assert all(msg["role"] != "assistant" for req in server.seen for msg in req["messages"])
    assert "Traceback" not in proc.stderr
    assert refused.returncode == 2 and refused.stderr.strip() == (
        "error: generator.cot_calls=two continues an assistant prefix, which generator.model=openai-api/standin/"
        "writer (a model Inspect names) cannot; use cot_calls=one or auto")
