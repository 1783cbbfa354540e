"""The headline figure (eval.headline: the pooled k/n or the mean over conditions with its stratified
interval) and truncated answers (eval.truncated), on labelled samples built in memory: no model loads."""
import json

import pytest
from omegaconf import OmegaConf

from conftest import read_json
from deliberate_cli.compose import load
from deliberate_cli.errors import DacliError
from deliberate_cli.evals.scoring import headline, headline_of, mean_over, rate, score_rows, truncated, \
    unscore_truncated


def _row(k: int, n: int, ambiguous: int = 0) -> dict:
    return rate(k, n, ambiguous)


def test_all_conditions_at_zero_still_have_an_upper_bound_above_zero():
    """27 conditions at 0/300: the plain p would give a zero-width interval; Agresti-Coull's does not."""
    m = mean_over([_row(0, 300) for _ in range(27)])
    assert m["rate"] == 0.0 and m["ci_low"] == 0.0
    # by hand: p~ = 2/304 in each stratum, Var = 27 p~(1-p~)/300 / 27^2, half = 1.96 sqrt(Var)
    assert m["ci_high"] > 0 and abs(m["ci_high"] - 0.0017606) < 1e-6
    assert (m["k"], m["n"], m["conditions"]) == (0, 8100, 27)


def test_each_conditions_own_n_weighs_its_variance():
    """10/20 and 30/300: Var = (0.5*0.5/20 + (32/304)(272/304)/300) / 4, half-width 0.1109 by hand. The
    small condition dominates; with the n's swapped the half-width would be 0.0730."""
    m = mean_over([_row(10, 20), _row(30, 300)])
    assert abs(m["rate"] - 0.3) < 1e-12
    assert abs(m["ci_low"] - 0.189067) < 1e-5 and abs(m["ci_high"] - 0.410933) < 1e-5
    assert (m["k"], m["n"]) == (40, 320)  # the pooled k, n beside: 12.5%, which is not the mean


@pytest.mark.parametrize("rows", [
    [(0, 300), (300, 300)], [(300, 300)] * 3, [(1, 4), (3, 50), (17, 300)], [(5, 5), (0, 7)],
])
def test_the_interval_holds_the_mean_and_stays_in_0_1(rows):
    m = mean_over([_row(k, n) for k, n in rows])
    assert 0.0 <= m["ci_low"] <= m["rate"] <= m["ci_high"] <= 1.0
    assert m["ci_high"] - m["ci_low"] > 0


def test_all_conditions_at_n_of_n_clip_at_one_with_a_lower_bound_below():
    m = mean_over([_row(300, 300) for _ in range(27)])
    assert m["rate"] == 1.0 and m["ci_high"] == 1.0 and m["ci_low"] < 1.0


def test_ambiguous_samples_keep_their_bounds_and_conditions_without_samples_drop_out():
    samples = [{"condition": c, "verdict": v} for c, v in
               [("a", "harmful"), ("a", "ambiguous"), ("a", "benign"), ("a", "benign"),
                ("b", "ambiguous"), ("b", "benign"), ("c", "unscored")]]
    _, rows = score_rows(samples)
    m = mean_over(rows)
    assert m["conditions"] == 2  # c has no scored sample
    # the mean of [1/4, 2/4] and [0, 1/2], as before the interval was added
    assert m["bounds"] == [0.125, 0.5] and m["rate"] == 0.125
    assert (m["k"], m["n"]) == (1, 6)
    assert mean_over([])["conditions"] == 0 and mean_over([])["ci_high"] == 1.0


def test_the_headline_block_names_its_figure():
    overall, rows = score_rows([{"condition": c, "verdict": v} for c, v in
                                [("a", "harmful"), ("a", "benign"), ("b", "benign"), ("b", "benign"),
                                 ("b", "benign"), ("b", "benign")]])
    mean = mean_over(rows)
    pooled = headline(overall, mean, "pooled")
    assert pooled["figure"] == "pooled" and pooled["label"] == "pooled k/n" and pooled["rate"] == 1 / 6
    lead = headline(overall, mean, "mean_over_conditions")
    assert lead["label"] == "mean over 2 conditions" and lead["rate"] == 0.25
    assert (lead["ci_low"], lead["ci_high"]) == (mean["ci_low"], mean["ci_high"])
    # a scores.json written before headlines existed led with the pooled rate
    assert headline_of({"overall": overall})["figure"] == "pooled"


def test_truncated_share_per_condition_and_overall():
    samples = [{"condition": "a", "finish_reason": "length"}, {"condition": "a", "finish_reason": "stop"},
               {"condition": "b", "finish_reason": "stop"}, {"condition": "b", "finish_reason": "overflow"}]
    overall, by = truncated(samples)
    assert overall == {"truncated": 1, "samples": 4, "share": 0.25}
    assert by["a"]["share"] == 0.5 and by["b"]["truncated"] == 0


@pytest.mark.parametrize("policy, k, n, unscored", [("score", 1, 2, 0), ("unscored", 0, 1, 1)])
def test_a_truncated_harmful_sample_counts_only_when_scored(policy, k, n, unscored):
    samples = [{"condition": "a", "verdict": "harmful", "reason": "blackmail", "finish_reason": "length"},
               {"condition": "a", "verdict": "benign", "reason": "accepts", "finish_reason": "stop"}]
    for s in samples:
        unscore_truncated(s, policy)
    overall, _ = score_rows(samples)
    assert (overall["k"], overall["n"], overall["unscored"]) == (k, n, unscored)


@pytest.mark.parametrize("setting, line", [
    ("eval.headline=mean", "eval.headline must be pooled or mean_over_conditions, got 'mean'"),
    ("eval.truncated=drop", "eval.truncated must be score or unscored, got 'drop'"),
])
def test_a_wrong_headline_or_truncated_setting_is_one_line(setting, line):
    from deliberate_cli.config import validate

    with pytest.raises(DacliError) as err:
        validate(load(["eval=am", setting]))
    assert str(err.value) == line


def test_the_paper_preset_leads_with_the_mean_and_scores_what_was_written():
    paper, am = load(["eval=am_msm_paper"]), load(["eval=am"])
    assert (paper.eval.headline, paper.eval.truncated) == ("mean_over_conditions", "score")
    assert (am.eval.headline, am.eval.truncated) == ("pooled", "score")


# --- the AM runner end to end from generated shards (no engine opens: every shard is there already) ---

CONDITIONS = ["blackmail_explicit_replacement", "leaking_explicit_replacement"]


def _am_eval(tmp_path, *overrides):
    """scores.json of an AM eval whose generated shard is written by hand: per condition one harmful
    sample cut off at max_tokens and one benign that stopped."""
    from deliberate_cli import evals
    from deliberate_cli.evals import am
    from deliberate_cli.shards import Shards

    cfg = load(["eval=am", f"eval.am.conditions=[{','.join(CONDITIONS)}]", "eval.samples_per_scenario=2",
                "eval.inspect_log=false", *overrides])
    work = tmp_path / "work"
    rows = [{"family": c.split("_")[0], "condition": c, "axes": {}, "sample": j, "model": "m", "response": "…",
             "cot": "", "actions": [], "policy_ids": [], "completion_tokens": 5,
             "deterministic": {"verdict": ("harmful", "benign")[j], "reason": "labelled"},
             "finish_reason": ("length", "stop")[j]} for c in CONDITIONS for j in range(2)]
    Shards(work / "shards", fmt="jsonl").write(Shards(work / "shards", fmt="jsonl").path("gen", 0, 4), rows)
    evals._score(cfg, am.RUNNER, "/models/m", "m", work)
    return cfg, work, read_json(work / "scores.json")


def test_am_scores_carry_the_headline_and_the_truncated_share(tmp_path):
    _, _, s = _am_eval(tmp_path, "eval.headline=mean_over_conditions")
    assert (s["overall"]["k"], s["overall"]["n"]) == (2, 4)  # eval.truncated=score: the cut-off harm counts
    assert s["headline"]["figure"] == "mean_over_conditions" and s["headline"]["label"] == "mean over 2 conditions"
    assert s["headline"]["rate"] == 0.5 and s["headline"]["ci_low"] < 0.5 < s["headline"]["ci_high"]
    assert [(r["condition"], r["truncated"], r["truncated_share"]) for r in s["conditions"]] == \
        [(c, 1, 0.5) for c in CONDITIONS]
    assert s["truncated"] == {"truncated": 2, "samples": 4, "share": 0.5, "policy": "score"}


def test_am_with_truncated_unscored_leaves_the_cut_off_harm_out_of_k_and_n(tmp_path):
    _, work, s = _am_eval(tmp_path, "eval.truncated=unscored")
    assert (s["overall"]["k"], s["overall"]["n"], s["overall"]["unscored"]) == (0, 2, 2)
    assert (s["deterministic"]["overall"]["k"], s["deterministic"]["overall"]["n"]) == (0, 2)
    assert s["headline"]["figure"] == "pooled"
    samples = [json.loads(line) for line in (work / "samples.jsonl").read_text().splitlines()]
    assert {s["verdict"] for s in samples if s["finish_reason"] == "length"} == {"unscored"}


def test_truncated_is_in_the_eval_key_but_not_in_what_its_generated_samples_depend_on():
    from deliberate_cli.evals import RUNNERS, _resume_stamp, key

    cfg = load(["eval=am"])
    changed = cfg.copy()
    OmegaConf.update(changed, "eval.truncated", "unscored")
    before, after = key(cfg, RUNNERS["am"], "/m"), key(changed, RUNNERS["am"], "/m")
    assert before != after and _resume_stamp(before, {}) == _resume_stamp(after, {})


def test_a_cached_eval_asked_for_the_other_headline_leads_with_it_and_is_left_as_stored(tmp_path):
    _, work, s = _am_eval(tmp_path)
    assert s["headline"]["figure"] == "pooled"
    stored = (work / "scores.json").read_text()
    again = headline_of(read_json(work / "scores.json"), "mean_over_conditions")
    assert again == headline(s["overall"], s["mean_over_conditions"], "mean_over_conditions")
    assert (work / "scores.json").read_text() == stored  # a finished (maybe shared) entry is not rewritten


def test_the_summary_leads_with_the_headline_and_shows_what_was_cut_off(tmp_path, monkeypatch):
    from rich.console import Console

    from deliberate_cli import summary

    _, work, _ = _am_eval(tmp_path, "eval.headline=mean_over_conditions")
    monkeypatch.setattr(summary, "console", Console(record=True, width=250))
    summary.rates_table({"eval": {"dir": str(work)}})
    out = summary.console.export_text()
    lines = out.splitlines()
    lead = next(line for line in lines if "mean over 2 conditions (headline)" in line)
    assert "50.0% [" in lead
    assert "2/4  50.0% [" in next(line for line in lines if line.strip("│ ").startswith("overall, pooled k/n"))
    assert "50% cut off" in next(line for line in lines if CONDITIONS[0] in line)
    assert "2 of 4 samples (50.0%) cut off at eval.max_tokens, scored as written" in out
