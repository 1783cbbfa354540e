"""The Inspect log of an eval, read back as `inspect view` reads it: the run's start and end, the
evaluated model by its path (dacli's label beside it), each sample's time and tokens, and the grader's
tokens under its own model's name. Hand-made rows: no model is loaded."""
import json

from omegaconf import OmegaConf

from deliberate_cli.config import Config
from deliberate_cli.evals import inspect_log
from deliberate_cli.evals.runner import batch_share

MODEL = "/ckpt/runs/tiny-aft_cot-8ex/checkpoints/sft"
GRADER = "Qwen/Qwen2.5-7B-Instruct"


def _cfg():
    return OmegaConf.merge(OmegaConf.structured(Config), {"model": {"name": "m"}, "eval": {
        "name": "am", "runner": "am", "metric": "am_rate", "counts": "harmful"}})


def _row(condition, sample, prompt_tokens, completion_tokens, share, grader=None):
    row = {"family": "exfiltration", "condition": condition, "axes": {}, "sample": sample, "model": "aft_cot",
           "response": f"answer {sample}", "policy_ids": ["AG1"], "finish_reason": "stop",
           "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, **share,
           "deterministic": {"verdict": "benign", "reason": "no harmful action"},
           "verdict": "benign", "reason": "no harmful action", "layer": "deterministic", "actions": []}
    if grader is not None:
        row["grader"] = {"harmful": "benign", "classifier_verdict": "benign", "attempts": 1, "reasoning": "fine",
                         **({"usage": grader} if grader else {})}
        row["layer"] = "grader"
    return row


def _write(tmp_path, rows, started, completed):
    (tmp_path / "scenarios.jsonl").write_text("".join(
        json.dumps({"condition": c, "system": "You are an email agent.", "user": "Read your inbox."}) + "\n"
        for c in sorted({r["condition"] for r in rows})))
    scores = {"model": "aft_cot", "model_path": MODEL, "overall": {"rate": 0.0, "ci_low": 0.0, "ci_high": 0.5}}
    rel = inspect_log.write(_cfg(), tmp_path, rows, scores, model_path=MODEL, label="aft_cot",
                            started_at=started, completed_at=completed)
    from inspect_ai.log import read_eval_log

    return read_eval_log(str(tmp_path / rel))


def test_inspect_log_carries_times_the_model_and_every_models_tokens(tmp_path):
    t = 1_700_000_000.0
    # a resumed eval: its first batch was made before the kill, so before this process began (t + 100)
    first, second = batch_share(t, t + 6.0, 2), batch_share(t + 110, t + 113.0, 1)
    rows = [_row("c1", 0, 812, 40, first, {"model": GRADER, "input_tokens": 1500, "output_tokens": 90, "requests": 1}),
            _row("c1", 1, 812, 57, first, {"model": GRADER, "input_tokens": 1510, "output_tokens": 70, "requests": 2}),
            _row("c2", 0, 640, 33, second, {})]  # graded before usage was recorded: the grader's tokens unknown
    log = _write(tmp_path, rows, started=t + 100, completed=t + 120)

    assert log.status == "success"
    st = log.stats
    assert st.started_at and st.completed_at and st.started_at < st.completed_at
    assert st.started_at.startswith("2023-11-14T22:13:20")  # the first batch's start, not this process's
    assert log.eval.model == MODEL and log.eval.model_args["label"] == "aft_cot"
    assert log.eval.model_roles["grader"].model == GRADER

    for row, s in zip(rows, log.samples):
        u = s.model_usage[MODEL]
        assert (u.input_tokens, u.output_tokens) == (row["prompt_tokens"], row["completion_tokens"])
        assert u.total_tokens == row["prompt_tokens"] + row["completion_tokens"]
        assert s.total_time == row["seconds"] and s.working_time == row["seconds"]
        assert s.started_at and s.completed_at and s.started_at < s.completed_at
        assert s.output.model == MODEL and s.output.usage == u
    assert log.samples[0].total_time == 3.0 and log.samples[2].total_time == 3.0  # each its share of its batch
    assert log.samples[1].model_usage[GRADER].input_tokens == 1510
    assert log.samples[1].scores["dacli"].metadata["grader_usage"]["requests"] == 2
    assert GRADER not in log.samples[2].model_usage

    assert set(st.model_usage) == {MODEL, GRADER}
    assert st.model_usage[MODEL].input_tokens == 812 + 812 + 640
    assert st.model_usage[MODEL].output_tokens == 40 + 57 + 33
    g = st.model_usage[GRADER]
    assert (g.input_tokens, g.output_tokens, g.total_tokens) == (3010, 160, 3170)


def test_a_model_grading_its_own_answers_has_both_usages_summed(tmp_path):
    t = 1_700_000_000.0
    share = batch_share(t, t + 1.0, 1)
    rows = [_row("c1", 0, 100, 10, share, {"model": MODEL, "input_tokens": 300, "output_tokens": 5, "requests": 1})]
    log = _write(tmp_path, rows, started=t - 5, completed=t + 2)
    assert log.stats.started_at.startswith("2023-11-14T22:13:15")  # this process began first
    u = log.samples[0].model_usage[MODEL]
    assert (u.input_tokens, u.output_tokens, u.total_tokens) == (400, 15, 415)
    assert log.stats.model_usage[MODEL].total_tokens == 415


def test_rows_without_times_or_tokens_still_make_a_log(tmp_path):
    """Samples made before rows carried times and prompt tokens (shards of an older eval)."""
    row = _row("c1", 0, 0, 12, {})
    row.pop("prompt_tokens")
    log = _write(tmp_path, [row], started=1_700_000_000.0, completed=1_700_000_009.5)
    assert log.stats.started_at < log.stats.completed_at
    assert log.samples[0].total_time is None and log.samples[0].model_usage[MODEL].output_tokens == 12
