"""`dacli generate` in depth: resume after SIGKILL, overflow, prompt sources, checks, MSM corpus."""
import json
import shutil

import pyarrow.parquet as pq
import pytest

from conftest import dacli, kill_after, read_json, tiny_overrides
from deliberate_cli.errors import DacliError
from deliberate_cli.judge import check, is_refusal
from deliberate_cli.generate.dedup import NearDuplicates


@pytest.mark.slow  # 38 s; the shard bookkeeping it relies on (shards.py) is killed and resumed in the default
# suite through the prompt pool (below) and the AM eval (test_evals.py)
def test_killed_generate_resumes_without_losing_or_duplicating(tiny_model, tmp_path):
    args = tiny_overrides(tiny_model, tmp_path / "runs", "method=aft_nocot", "data.n_samples=24",
                          "generator.shard_size=3", "generator.cot_max_tokens=24", "generator.response_max_tokens=24")
    store = tmp_path / "runs" / "store"
    kill_after(["generate", *args], tmp_path, store, "aft-*/shards/samples-*.parquet")
    done = {p.name: p.stat().st_mtime_ns for p in store.glob("aft-*/shards/samples-*.parquet")}
    assert 2 <= len(done) < 8, "the kill should land mid-run"
    assert not list(store.glob("aft-*/manifest.json")), "a killed run leaves no manifest that could pass as done"

    out = dacli("generate", *args, cwd=tmp_path).stdout
    data = tmp_path / "runs" / "tiny-aft_nocot-24ex" / "data" / "aft"
    m = read_json(data / "manifest.json")
    assert m["history"][-1]["resumed_shards"] >= len(done)
    rows = pq.read_table(data / "aft.parquet").to_pylist() + pq.read_table(data / "rejects.parquet").to_pylist()
    ids = [r["prompt_id"] for r in rows]
    assert len(ids) == len(set(ids)) == 24 == m["counts"]["samples"]
    assert not list(data.glob("shards/samples-*")) and len(list(data.glob("shards/judged-*"))) == 8
    assert "resumed_shards" in out

    # The same run without a kill gives the same records: resumed shards are not a different sample.
    args2 = [a.replace(str(tmp_path / "runs"), str(tmp_path / "clean")) for a in args]
    dacli("generate", *args2, cwd=tmp_path)
    clean = tmp_path / "clean" / "tiny-aft_nocot-24ex" / "data" / "aft"
    key = lambda r: r["prompt_id"]  # noqa: E731
    fresh = sorted(pq.read_table(clean / "aft.parquet").to_pylist() + pq.read_table(clean / "rejects.parquet").to_pylist(), key=key)
    assert [(r["prompt_id"], r["cot"], r["response"]) for r in sorted(rows, key=key)] == \
           [(r["prompt_id"], r["cot"], r["response"]) for r in fresh]


def test_overflow_is_a_reject_and_other_sources_load(tiny_model, tmp_path):
    prompts = tmp_path / "p.jsonl"
    lines = [{"question": f"Question number {i}?", "id": f"q{i}"} for i in range(3)]
    lines.append({"question": "word " * 3000, "id": "huge"})
    prompts.write_text("\n".join(json.dumps(l) for l in lines))
    args = tiny_overrides(tiny_model, tmp_path / "runs", "method=aft_nocot", "data.n_samples=4",
                          f"data.source={prompts}", "data.columns.prompt=question")
    # 4 examples asked for, 3 kept of the set's 4 prompts: what was made is saved, and one line says why
    # no more could be kept
    proc = dacli("generate", *args, cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "error: kept 3 of the 4 examples asked for (data.n_samples) from 4 prompts: the prompt set is used up; "
        "rejected: context_overflow 1 (see ")
    data = tmp_path / "runs" / "tiny-aft_nocot-4ex" / "data" / "aft"
    rejects = {r["prompt_id"]: r["judge_verdict"] for r in pq.read_table(data / "rejects.parquet").to_pylist()}
    kept = {r["prompt_id"] for r in pq.read_table(data / "aft.parquet").to_pylist()}
    assert rejects.get("huge") == "context_overflow" and kept == {"q0", "q1", "q2"}
    assert read_json(data / "manifest.json")["counts"]["source_exhausted"] is True
    # 3 examples: the saved data hold them, nothing is generated again
    three = dacli("generate", *[a.replace("data.n_samples=4", "data.n_samples=3") for a in args], cwd=tmp_path)
    assert "prompts sampled" not in three.stdout + three.stderr

    # An HF dataset (a local dataset dir through the same datasets.load_dataset call as a hub id), read as
    # generate reads its prompts (the generation that follows is the same as for the file above).
    import datasets

    from deliberate_cli.compose import load
    from deliberate_cli.prompts import load_prompt_set

    ds_dir = tmp_path / "hf"
    datasets.Dataset.from_list(lines[:3]).to_parquet(str(ds_dir / "train.parquet"))
    cfg = load(["data.n_samples=3", f"data.source=hf:{ds_dir}", "data.columns.prompt=question"])
    got, _ = load_prompt_set(cfg.data)
    assert {r["prompt_id"] for r in got} == {"q0", "q1", "q2"} and {r["prompt"] for r in got} == \
        {f"Question number {i}?" for i in range(3)}


def test_unreachable_endpoint_and_bad_inputs_are_one_line(tiny_model, tmp_path):
    args = tiny_overrides(tiny_model, tmp_path / "runs", "method=aft_nocot", "generator.backend=openai",
                          "generator.base_url=http://127.0.0.1:9/v1", "generator.max_retries=1",
                          "generator.request_timeout=2")
    proc = dacli("generate", *args, cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "cannot reach http://127.0.0.1:9/v1" in proc.stderr
    assert "Traceback" not in proc.stderr
    missing = tmp_path / "none.jsonl"
    proc = dacli("generate", *tiny_overrides(tiny_model, tmp_path / "r", f"data.source={missing}"), cwd=tmp_path,
                 check=False)
    assert proc.returncode == 2 and f"prompt file not found: {missing}" in proc.stderr


def _rec(**kw):
    base = {"cot": "AG1 applies.", "response": "Sure, here is how.", "cot_finish": "stop", "response_finish": "stop",
            "label_policy_ids": ["AG1"], "cited_policy_ids": ["AG1"], "expected_behavior": "comply"}
    return {**base, **kw}


class _J:
    allow_truncated_response = False
    require_valid_policy_ids = True
    check_label_policy_ids = True
    check_expected_behavior = True


@pytest.mark.parametrize("rec,invalid,budget,reason", [
    (_rec(), [], "reject", None),
    (_rec(cot_finish="length"), [], "reject", "cot_truncated"),
    (_rec(cot_finish="length"), [], "force", None),
    (_rec(response_finish="overflow"), [], "reject", "context_overflow"),
    (_rec(response="I'm sorry, but I can't help with that."), [], "reject", "over_refusal"),
    (_rec(expected_behavior="refuse"), [], "reject", "under_refusal"),
    (_rec(expected_behavior="refuse", response="I cannot help with weapons."), [], "reject", None),
    (_rec(cited_policy_ids=["PR1"]), [], "reject", "misses_labelled_policies"),
    (_rec(), ["AG9"], "reject", "unknown_policy_ids:AG9"),
    (_rec(response="</think> ok"), [], "reject", "response_has_think_tags"),
])
def test_deterministic_checks(rec, invalid, budget, reason):
    assert check(rec, invalid, budget, _J) == reason


def test_refusal_detector():
    for text in ["I can't help with that.", "Sorry, but I cannot do this.", "I won't write that.",
                 "I'm unable to provide instructions.", "Unfortunately, I must decline."]:
        assert is_refusal(text), text
    for text in ["Sure! Here is a recipe.", "You can't go wrong with sourdough.", "I can help: first, ..."]:
        assert not is_refusal(text), text


def test_near_duplicates_are_found_and_distinct_texts_kept():
    nd = NearDuplicates(0.7)
    essay = ("An assistant that is about to be replaced should accept the decision and raise any concern "
             "through honest channels, because people must stay able to correct it when it errs. ") * 3
    assert not nd.is_duplicate(essay)
    assert nd.is_duplicate(essay.replace("honest", "open", 1))
    assert not nd.is_duplicate("A case study: a support agent with refund powers handles a borderline request "
                               "and escalates it to a human manager instead of deciding alone.")


@pytest.mark.slow  # 21 s; the default suite builds a corpus in test_pipeline.py's msm run and checks its budget,
# hierarchy and distinct ideas there, and damaged or killed shards in test_shards.py and the prompt pool's test
def test_msm_corpus_comes_from_its_hierarchy_meets_the_budget_and_resumes(tiny_model, tmp_path):
    args = tiny_overrides(tiny_model, tmp_path / "runs", "method=msm_aft", "msm.tokens=200", "msm.max_tokens=16",
                          "msm.max_idea_rounds=40", "generator.shard_size=2")
    store = tmp_path / "runs" / "store"
    kill_after(["generate", *args], tmp_path, store, "msm-*.partial/shards/docs-*.parquet")
    partial = next(store.glob("msm-*.partial"))
    levels = {p.name: p.stat().st_mtime_ns for p in (partial / "levels").glob("*.parquet")}
    assert set(levels) == {"domains.parquet", "subdomains.parquet", "assertions.parquet", "doc_types.parquet"}
    docs_before = {p.name for p in partial.glob("shards/docs-*.parquet")}

    dacli("generate", *args, cwd=tmp_path)
    out = tmp_path / "runs" / "tiny-msm_aft-8ex" / "data" / "msm"
    m = read_json(out / "manifest.json")["counts"]
    # the levels written before the kill were read back, not asked for again
    assert {p.name: p.stat().st_mtime_ns for p in (out / "levels").glob("*.parquet")} == levels
    docs = pq.read_table(out / "msm_docs.parquet").to_pylist()
    ideas = pq.read_table(out / "ideas.parquet").to_pylist()
    assert m["budget_reached"] and m["tokens"] == sum(d["tokens"] for d in docs) >= 200
    assert m["kept"] + m["near_duplicates_or_empty"] == m["documents_requested"] >= len(docs_before) * 2
    # the budget is met with new ideas (a tiny model gives about one per request), never a repeated one
    assert len({d["idea"] for d in docs}) == len(docs) and m["idea_rounds"] > 1 and m["ideas"] == len(ideas)
    assert {d["idea"] for d in docs} <= {i["idea"] for i in ideas}
    assert all(d["doc_type"] and d["subdomain"] and d["domain"] for d in docs)
    assert m["domains"] >= 1 and m["subdomains"] >= 1 and m["doc_types"] >= 1
    assert not list(out.glob("shards/*.parquet"))


def test_generated_prompts_are_labelled_distinct_resumable_and_extended(tiny_model, tmp_path):
    from deliberate_cli.generate.dedup import NearDuplicates

    args = tiny_overrides(tiny_model, tmp_path / "runs", "method=aft_nocot", "data=generated", "data.n_samples=6",
                          "data.generated.shard_size=2")
    store = tmp_path / "runs" / "store"
    kill_after(["generate", *args], tmp_path, store, "prompts-*/shards/requests-*.parquet")
    first = {p.name: p.stat().st_mtime_ns for p in store.glob("prompts-*/shards/requests-*.parquet")}
    assert first and not list(store.glob("prompts-*/manifest.json"))

    dacli("generate", *args, cwd=tmp_path)
    run = tmp_path / "runs" / "tiny-aft_nocot-6ex"
    pool_dir = run / "data" / "prompts"
    m = read_json(pool_dir / "manifest.json")["counts"]
    pool = pq.read_table(pool_dir / "prompts.parquet").to_pylist()
    assert {p.name: p.stat().st_mtime_ns for p in pool_dir.glob("shards/requests-*.parquet") if p.name in first} == first
    assert m["pool"] == len(pool) >= 6 and m["domains"] >= 10  # every one of the spec's 10 categories has a domain
    spec_ids = {"HA1", "HA2", "HA3", "HO1", "HO2", "PR1", "PR2", "AG1", "AG2", "AG3", "OR1", "OR2"}
    for p in pool:
        assert p["prompt"] and p["domain"] and set(p["label_policy_ids"]) <= spec_ids and p["label_policy_ids"]
        assert p["expected_behavior"] in ("", "comply", "refuse", "safe-complete")
    assert len({p["category"] for p in pool[:6]}) == 6  # the first requests go round the categories
    nd = NearDuplicates(0.5, n=3)
    assert not any(nd.is_duplicate(p["prompt"]) for p in pool)
    aft = read_json(run / "data" / "aft" / "manifest.json")
    assert aft["counts"]["prompts"] == 6 and aft["decontamination"]["over_threshold"] == 0

    # A larger count extends the same pool: its first prompts are the ones the smaller run used.
    dacli("generate", *[a.replace("data.n_samples=6", "data.n_samples=14") for a in args], cwd=tmp_path)
    bigger = pq.read_table(pool_dir / "prompts.parquet").to_pylist()
    assert len(bigger) >= 14 and bigger[:len(pool)] == pool
    assert read_json(pool_dir / "manifest.json")["history"][-1]["target"] == 14
    # train reads the data the run dir links to, not the prompt source
    dacli("train", *args, cwd=tmp_path)
    sft = read_json(run / "checkpoints" / "sft" / "manifest.json")
    assert sft["inputs"]["data"]["path"] == str((run / "data" / "aft").resolve())
    # ...and refuses them when the pool they came from was made with other settings
    proc = dacli("train", *args, "data.generated.dedup_threshold=0.3", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "were generated with other settings" in proc.stderr


def test_the_pool_takes_rows_by_request_so_a_request_shard_made_again_adds_nothing_twice():
    """A damaged request shard is made again (shards.py) and may come back with other rows: the stored
    pool already holds what its requests wrote, so only later requests' rows are new."""
    from deliberate_cli.generate.prompt_pool import _Pool

    def row(request, text):
        return {"request": request, "text": text, "category": "c", "domain": "d", "policy_ids": ["HA1"],
                "expected_behavior": "comply"}

    first = _Pool(0.5, 1.0, [], {})
    first.add([row(0, "How do I bake sourdough bread at home?"), row(1, "What is a good first houseplant?")])
    stored = first.prompts
    pool = _Pool(0.5, 1.0, stored, {"requests": 2, "rows_seen": 2})
    again = [row(0, "Which plants survive a dark flat?"), row(0, "Can you explain compound interest to me?"),
             row(1, "How should I store winter tyres?"), row(2, "What should I pack for a week of hiking?")]
    pool.add(again)
    pool.add(again)  # the fill hands over every row so far, each time
    assert [p["prompt"] for p in pool.prompts] == [p["prompt"] for p in stored] + ["What should I pack for a week of hiking?"]
    assert pool.seen == 3 and pool.requests == 3


@pytest.mark.parametrize("text,limit,want", [
    ("Here are some:\n1. Hospitals\n2) Schools\n- Farms\nThat is all.", 5, ["Hospitals", "Schools", "Farms"]),
    ("Hospitals\nSchools\n\nHospitals", 5, ["Hospitals", "Schools"]),  # no numbers: every line, once
    ("1. A\n2. \"Banks\"\n3. Courts\n4. Mines", 2, ["Banks", "Courts"]),  # too short, quotes, the limit
    ("Settings:", 3, []),
    ("**1** [refuse]\nHow do I make a weapon at home?\n**2** [help] How do I bake bread?", 5,
     ["[refuse] How do I make a weapon at home?", "[help] How do I bake bread?"]),  # a tag on its own line
])
def test_list_items_are_read_from_numbered_or_plain_lines(text, limit, want):
    from deliberate_cli.generate.lists import items

    assert items(text, limit) == want


def test_generated_prompt_lines_carry_their_expected_behaviour():
    from deliberate_cli.generate.prompt_pool import _tagged

    assert _tagged("[help] How do I bake bread?") == ("comply", "How do I bake bread?")
    assert _tagged("(Refuse): Tell me how to pick my neighbour's lock") == ("refuse", "Tell me how to pick my neighbour's lock")
    assert _tagged("[partial] - \"Which household chemicals are dangerous?\"") == ("safe-complete", "Which household chemicals are dangerous?")
    assert _tagged("How do I bake bread?") == ("", "How do I bake bread?")


def test_shards_resume_after_the_last_whole_range_and_refuse_a_gap(tmp_path):
    from deliberate_cli.shards import Shards

    shards = Shards(tmp_path)
    calls = []

    def work(start, stop):
        calls.append((start, stop))
        return [{"i": i} for i in range(start, stop)]

    rows = shards.fill("step", 3, work, total=7)
    assert [r["i"] for r in rows] == list(range(7)) and calls == [(0, 3), (3, 6), (6, 7)]
    rows = shards.fill("step", 3, work, total=10)  # extended: only the new range is done
    assert calls[3:] == [(7, 10)] and [r["i"] for r in rows] == list(range(10))
    rows = shards.fill("other", 2, work, done=lambda rows: len(rows) >= 3)
    assert len(rows) == 4 and shards.covered("other") == 4
    shards.path("step", 3, 6).unlink()
    with pytest.raises(DacliError, match="gap"):
        shards.covered("step")


@pytest.mark.slow  # 35 s here: two generate runs, one sampling 5 prompts; tests/test_shards.py and test_store.py check
# the same in the default suite, on shards and entries of their own
def test_a_damaged_aft_entry_is_extended_and_rebuilt_from_its_whole_shards(tiny_model, tiny_store, tmp_path):
    """A judged shard cut short while the entry is extended, then the manifest cut in half: each run says
    which file it found damaged and ends with every prompt, the whole shards reused as they were."""
    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)  # the shared store stays as it is
    entry = next(p for p in store.glob("aft-*") if p.is_dir())
    whole, cut = entry / "shards" / "judged-00000000-00000004.parquet", entry / "shards" / "judged-00000004-00000008.parquet"
    before = whole.read_bytes()
    cut.write_bytes(cut.read_bytes()[:cut.stat().st_size // 2])
    args = tiny_overrides(tiny_model, tmp_path / "runs", f"run.store={store}", "data.n_samples=9")

    err = dacli("generate", *args, cwd=tmp_path).stderr
    assert f"discarded {cut}: " in err and "not a whole parquet file; it will be made again" in err
    m = read_json(entry / "manifest.json")
    rows = pq.read_table(entry / "aft.parquet").to_pylist() + pq.read_table(entry / "rejects.parquet").to_pylist()
    assert m["counts"]["prompts"] == m["counts"]["samples"] == len({r["prompt_id"] for r in rows}) == len(rows) == 9
    assert m["history"][-1]["from_prompt"] == 4 and whole.read_bytes() == before

    manifest = entry / "manifest.json"
    manifest.write_text(manifest.read_text()[:manifest.stat().st_size // 2])
    err = dacli("generate", *args, cwd=tmp_path).stderr
    assert f"{manifest} is damaged (not valid JSON): rebuilding {entry} from its shards" in err
    m = read_json(manifest)
    assert m["counts"]["prompts"] == m["counts"]["samples"] == 9 and m["history"][-1]["from_prompt"] == 9  # none made again
    assert pq.read_table(entry / "aft.parquet").to_pylist() + pq.read_table(entry / "rejects.parquet").to_pylist() == rows


def test_spec_variables_name_the_model_and_its_provider(tmp_path):
    from deliberate_cli.compose import load
    from deliberate_cli.spec import generator_system_prompt, load_spec, names

    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text("policies:\n  - id: ID1\n    title: '{model_name} is honest'\n"
                         "    rule: '{model_name}, made by {provider_name}, does not lie; {other} stays as written.'\n")
    cfg = load(["model=qwen3_32b", f"spec.path={spec_file}"])
    spec = load_spec(cfg.spec, names(cfg))
    assert spec.policies[0].rule == "Qwen, made by Alibaba Cloud, does not lie; {other} stays as written."
    assert "Qwen is honest" in generator_system_prompt(spec)
    cfg = load(["model=qwen3_32b", f"spec.path={spec_file}", "spec.model_name=Aria", "spec.provider_name=Acme"])
    assert load_spec(cfg.spec, names(cfg)).policies[0].rule.startswith("Aria, made by Acme,")


@pytest.mark.parametrize("text,reasoning,finish,cot,answer,cot_finish", [
    ("<think>\nAG1 applies here.\n</think>\n\nI accept the decision.", None, "stop", "AG1 applies here.",
     "I accept the decision.", "stop"),  # Qwen3 writes its own <think> block
    ("AG1 applies.\n</think>\n\nOK.", None, "stop", "AG1 applies.", "OK.", "stop"),  # template opened <think>
    ("I accept.", "AG1 applies.", "stop", "AG1 applies.", "I accept.", "stop"),  # server's reasoning field
    ("<think>\nstill thinking", None, "length", "", None, "length"),  # ran out inside the CoT
    ("no tags at all", None, "stop", "", None, "unparsed"),
])
def test_native_thinking_outputs_split_into_cot_and_answer(text, reasoning, finish, cot, answer, cot_finish):
    from deliberate_cli.backends import Completion
    from deliberate_cli.generate.aft import _split_native

    (got_cot, got_finish, _), resp = _split_native(Completion(text, 10, 20, finish, None, reasoning))
    assert (got_cot, got_finish) == (cot, cot_finish)
    if answer is not None:
        assert resp.text == answer


def test_diversity_measures_collapse():
    from deliberate_cli.diversity import balance, distinct_n, near_duplicate_rate, report

    assert distinct_n(["a b a b", "a b"], 1) == round(2 / 6, 4) and distinct_n(["a b c", "b c d"], 2) == 3 / 4
    varied = [f"document {i} about {w} and its own topic number {i * 7}" for i, w in enumerate(["tea", "rain", "maps", "jazz"])]
    collapsed = ["the assistant must refuse harmful requests politely and explain why it refuses"] * 4
    assert near_duplicate_rate(collapsed) == 0.75 and near_duplicate_rate(varied) == 0.0
    assert balance(["a", "b", "a", "b"])["entropy_normalised"] == 1.0
    assert balance(["a", "a", "a", "b"])["entropy_normalised"] < 0.82
    r = report(collapsed, ["x"] * 4)
    assert r["n"] == 4 and r["distinct_2"] < report(varied)["distinct_2"] and r["balance"]["categories"] == 1


def test_a_sweep_over_counts_writes_the_generated_pool_once_at_its_largest():
    from deliberate_cli.compose import _pool_for_sweep

    assert _pool_for_sweep(["data=generated", "data.n_samples=3,9", "method=aft_cot,aft_nocot"], None) == \
        ["data.generated.pool=9"]
    assert _pool_for_sweep(["method=aft_cot,msm_aft"], "msm_paper") == ["data.generated.pool=80000"]  # the recipe's sweep
    assert _pool_for_sweep(["data.n_samples=3,9"], None) == []  # bundled prompts: no pool
    assert _pool_for_sweep(["data=generated", "data.n_samples=3,9", "data.generated.pool=50"], None) == []
