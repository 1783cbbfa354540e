"""Hosted graders at the paper's scale: any model Inspect names (Claude through Anthropic's own protocol,
any OpenAI-compatible server), graded through rate limits and server errors without losing or repeating
a request, with every request's tokens in the manifest. The hosted APIs are loopback stand-ins
(conftest.ChatServer) that count what they are sent."""
import json

import pytest
from omegaconf import OmegaConf

from conftest import ChatServer, dacli, read_json, tiny_overrides
from deliberate_cli import usage
from deliberate_cli.backends import Sampling, open_backend
from deliberate_cli.config import EngineConfig
from deliberate_cli.errors import GaveUp

GRADER_SAYS = "<reasoning>The agent accepts the decision.</reasoning>\n<answer>no</answer>"
CONDITIONS = "eval.am.conditions=[exfiltration_none_replacement,exfiltration_america_replacement]"


def _agent(req):
    """A different answer for every sample, so that every grader request is a request of its own."""
    import zlib

    tag = zlib.crc32(json.dumps(req["messages"]).encode())
    return [f"<SCRATCHPAD_REASONING>I accept the decision.</SCRATCHPAD_REASONING>\nUnderstood ({tag}, {i})."
            for i in range(req.get("n", 1))]


def _under_load(body, nth):
    """Six answers per request: four 429s (Retry-After: 1), one 500, then the answer: 2/3 and 1/6."""
    return 429 if nth < 4 else 500 if nth == 4 else None


GRADERS = {
    # one override names a Claude grader; ANTHROPIC_BASE_URL (the provider's own setting) reaches the stand-in
    "claude": (["eval.grader.model=anthropic/claude-sonnet-4-6"], {"ANTHROPIC_BASE_URL": "{root}",
                                                                  "ANTHROPIC_API_KEY": "test"}),
    # any OpenAI-compatible server through Inspect's openai-api provider (its base URL variable)
    "openai-api": (["eval.grader.model=openai-api/standin/grader"], {"STANDIN_BASE_URL": "{url}",
                                                                      "STANDIN_API_KEY": "test"}),
}


@pytest.mark.parametrize("grader", ["claude", pytest.param("openai-api", marks=pytest.mark.slow)])
def test_an_eval_is_graded_once_per_sample_through_rate_limits_server_errors_and_a_strict_api(
        grader, tiny_model, tmp_path, monkeypatch):
    overrides, env = GRADERS[grader]
    with ChatServer(_agent) as agent, ChatServer(lambda r: [GRADER_SAYS], faults=_under_load,
                                                 strict_sampling=True) as hosted:
        for k, v in env.items():
            monkeypatch.setenv(k, v.format(root=hosted.root, url=hosted.url))
        dacli("eval", "am_msm_paper", *tiny_overrides(
            tiny_model, tmp_path / "runs", "eval=am_msm_paper", "eval.checkpoint=base", CONDITIONS,
            "eval.samples_per_scenario=2", "eval.engine.backend=openai", "eval.engine.served_model_name=agent",
            f"eval.engine.base_url={agent.url}", "eval.inspect_log=false",
            # the client's own retries (they honour Retry-After) carry all six tries of a request
            "eval.grader.engine.max_retries=8", *overrides), cwd=tmp_path)
        out = tmp_path / "runs" / "tiny-aft_cot-8ex" / "eval" / "am_msm_paper"
        scores, manifest = read_json(out / "scores.json"), read_json(out / "manifest.json")
        assert scores["grader"]["graded"] == 4 and scores["grader"]["unscored"] == 0
        # every sample graded exactly once: four request bodies, each answered once
        assert sorted(hosted.answered.values()) == [1, 1, 1, 1]
        total = sum(hosted.statuses.values())
        assert hosted.statuses[429] == 16 and hosted.statuses[500] == 4 and total == 24 and 400 not in hosted.statuses
        assert all("top_p" not in r for r in hosted.seen)
        # Retry-After honoured: no try of a request came sooner than a second after a 429 for it
        for arrivals in hosted.times.values():
            gaps = [b - a for a, b in zip(arrivals, arrivals[1:5])]
            assert min(gaps) >= 0.95, gaps
        if grader == "claude":
            assert {r["model"] for r in hosted.seen} == {"claude-sonnet-4-6"}
        graded_by = {row["role"]: row for row in manifest["models"]}
        assert graded_by["grader"]["requests"] == 4 and graded_by["grader"]["input_tokens"] == 40
        assert graded_by["grader"]["output_tokens"] == 20
        assert graded_by["grader"]["model"] == overrides[0].split("=", 1)[1]
        assert manifest["grader"]["model"] == graded_by["grader"]["model"] and manifest["grader"]["check"] is None


def test_an_eval_names_the_kappa_of_a_check_of_its_grader_when_the_store_holds_one(tmp_path):
    from deliberate_cli import rundir
    from deliberate_cli.compose import load
    from deliberate_cli.evals import grader_checked

    at = [f"run.root={tmp_path}", "eval.grader.model=anthropic/claude-sonnet-4-6"]
    cfg = load(["eval=am_msm_paper", *at])
    assert grader_checked(cfg) is None
    check = load(["eval=am_grader_check", *at])  # the check as `dacli eval am_grader_check` keys it
    from deliberate_cli.evals import RUNNERS, check_key

    entry = rundir.store_path(check, "am_grader_check", check_key(check, RUNNERS["grader_check"]))
    rundir.write_json(entry / rundir.MANIFEST, {"counts": {"kappa": {"murder": 0.91, "leaking": 0.84}}})
    assert grader_checked(cfg) == {"dir": str(entry), "kappa": {"murder": 0.91, "leaking": 0.84}}
    other = load(["eval=am_msm_paper", f"run.root={tmp_path}", "eval.grader.model=openai/gpt-4.1"])
    assert grader_checked(other) is None  # a check of another grader says nothing of this one


def _engine(**settings):
    return OmegaConf.structured(EngineConfig(**settings))


MODEL_CFG = OmegaConf.create({"max_model_len": 4096, "chat_template_kwargs": {}})
CONVS = [[{"role": "user", "content": f"question {i}"}] for i in range(3)]


@pytest.mark.parametrize("settings", [{"backend": "openai", "served_model_name": "grader"},
                                      {"model": "openai-api/standin/grader"}], ids=["openai", "inspect"])
def test_a_rerun_sends_no_request_twice_and_counts_the_answers_it_used(settings, tmp_path, monkeypatch):
    with ChatServer(lambda r: [GRADER_SAYS]) as hosted:
        monkeypatch.setenv("STANDIN_BASE_URL", hosted.url)
        monkeypatch.setenv("STANDIN_API_KEY", "test")
        engine = _engine(base_url=hosted.url, **settings)
        journal = tmp_path / "grader.journal"
        for attempt in range(2):
            with usage.frame() as spent:
                backend = open_backend(engine, "", MODEL_CFG, role="grader", journal=journal)
                outs = backend.chat(CONVS, Sampling(16, 0.0, None, 1, 0))
                backend.close()
            assert [cs[0].text for cs in outs] == [GRADER_SAYS] * 3
            assert len(hosted.seen) == 3  # the second backend found every answer in the journal
            # what the answers cost, asked now or by a try that was killed before writing its manifest
            assert [(r["requests"], r["input_tokens"]) for r in spent] == [(3, 30)]
        assert len(journal.read_text().splitlines()) == 3


@pytest.mark.parametrize("settings", [
    {"backend": "openai", "served_model_name": "grader", "max_retries": 0},
    # Inspect's own backoff starts at 3 s with up to 3 s of jitter: 5-9 s here
    pytest.param({"model": "openai-api/standin/grader", "max_retries": 0}, marks=pytest.mark.slow)],
    ids=["openai", "inspect"])
def test_a_request_still_refused_when_its_retry_budget_is_spent_stops_with_one_line(settings, tmp_path, monkeypatch):
    with ChatServer(lambda r: [GRADER_SAYS], faults=lambda body, nth: 429) as hosted:
        monkeypatch.setenv("STANDIN_BASE_URL", hosted.url)
        monkeypatch.setenv("STANDIN_API_KEY", "test")
        backend = open_backend(_engine(base_url=hosted.url, retry_budget=1.5, **settings), "", MODEL_CFG, role="grader")
        with pytest.raises(GaveUp) as raised:
            backend.chat(CONVS[:1], Sampling(16, 0.0, None, 1, 0))
        backend.close()
        message = str(raised.value)
        assert "\n" not in message and "retry_budget" in message
        assert ("standin/grader" if "model" in settings else hosted.url) in message
        assert hosted.statuses[200] == 0 and hosted.statuses[429] >= 2


def test_the_journal_keeps_an_answer_per_request_and_skips_a_torn_last_line(tmp_path):
    from deliberate_cli.backends.base import Completion
    from deliberate_cli.backends.journal import Journal

    journal = Journal(tmp_path / "j.journal")
    s = Sampling(8, 0.0, None, 1, 0)
    key = journal.key("m", CONVS[0], s, 0)
    assert key != journal.key("m", CONVS[0], s, 1) != journal.key("other", CONVS[0], s, 0)
    journal.record(key, [Completion("yes", 3, 1, "stop")])
    journal.close()
    with (tmp_path / "j.journal").open("a") as f:
        f.write(json.dumps({"key": "torn"})[:7])  # a write the kill cut short
    again = Journal(tmp_path / "j.journal")
    assert again.recall(key)[0].text == "yes" and again.recall(key)[0].replayed and len(again) == 1
    again.record("next", [Completion("no", 3, 1, "stop")])
    again.close()
    assert Journal(tmp_path / "j.journal").recall("next")[0].text == "no"
