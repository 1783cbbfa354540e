"""Runtime settings are declared once (config.RUNTIME_KEYS) and no stage's cache key, resume stamp or run
name holds them: changing where or how fast a stage runs after it finished is a cache hit. A
representative input of every stage does change its key. End to end: a finished am_msm_paper eval is
reused after its batch size or its grader's URL changes, and made again when its sample count does."""
import json

import pytest
from omegaconf import OmegaConf

from conftest import ChatServer, dacli, read_json, tiny_overrides
from deliberate_cli import config, naming
from deliberate_cli.compose import load
from deliberate_cli.evals import RUNNERS, _resume_stamp, check_key, key as eval_key, monitor
from deliberate_cli.generate import aft, msm, prompt_pool
from deliberate_cli.train.data import key as train_key

SECTIONS = {"resources.": "resources.gpus", "run.": "run.root", "hydra.": None, "prices.": "prices",
            "throughput.": "throughput.train_mfu"}


def _runtime_keys():
    """Every runtime setting as a concrete dotted key of the composed config."""
    keys = [SECTIONS.get(k, k) for k in config.RUNTIME_KEYS]
    return [k for k in keys if k]


@pytest.fixture(scope="module")
def cfg():
    return load(["eval=am_msm_paper", "method=msm_aft_cot", "data=generated", "judge=vllm",
                 "eval.grader.engine.served_model_name=grader", "eval.monitor.enabled=true",
                 "eval.monitor.engine.served_model_name=monitor"])


def _keys(cfg):
    """Every stage's declared key (and the stamps that guard its partial work), as one comparable dict."""
    am = RUNNERS["am"]
    k = eval_key(cfg, am, "/models/m")
    return {"prompts": prompt_pool.key(cfg), "aft": aft.key(cfg, "sha"), "msm": msm.key(cfg),
            **{f"train_{s}": train_key(cfg, s) for s in ("midtrain", "sft", "rl")},
            "eval": k, "eval_resume": _resume_stamp(k, {}), "grader": config.declared(cfg, "eval.grader"),
            "monitor": monitor._stamp(cfg, "spec text"), "grader_check": check_key(cfg, RUNNERS["grader_check"])}


def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 3
    if isinstance(value, float):
        return value / 2 + 0.01
    if isinstance(value, list):
        return ["wandb"] if list(value) != ["wandb"] else ["none"]
    if isinstance(value, dict):  # model_args, prices
        return {**value, "some/model": {"input": 3.0}}
    return "http://localhost:9/v1" if value is None else f"{value}-changed"


def test_every_runtime_setting_leaves_every_key_and_the_run_name_unchanged(cfg):
    before = json.dumps(_keys(cfg), sort_keys=True, default=str)
    checked = []
    for k in _runtime_keys():
        changed = cfg.copy()
        value = OmegaConf.select(changed, k)
        value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        OmegaConf.update(changed, k, _changed(value), merge=False)
        assert OmegaConf.select(changed, k) != value, k
        assert json.dumps(_keys(changed), sort_keys=True, default=str) == before, f"{k} changed a cache key"
        assert naming.variant([f"{k}={_changed(value)}"]) == [], f"{k} would name a run"
        checked.append(k)
    assert len(checked) >= 60 and "eval.grader.engine.base_url" in checked and "eval.engine.batch_size" in checked


@pytest.mark.parametrize("setting, value, stages", [
    ("data.generated.prompts_per_request", 5, {"prompts"}),
    ("generator.temperature", 0.3, {"aft"}),
    ("judge.threshold", 7.0, {"aft", "train_rl"}),
    ("msm.tokens", 999, {"msm"}),
    ("train.learning_rate", 3e-5, {"train_midtrain", "train_sft", "train_rl"}),
    ("method.rl.beta", 0.1, {"train_rl"}),
    ("eval.samples_per_scenario", 7, {"eval", "eval_resume"}),
    ("eval.grader.engine.served_model_name", "another-grader", {"eval", "grader", "grader_check"}),
    ("eval.monitor.engine.served_model_name", "another-monitor", {"eval", "monitor"}),
    ("eval.am.conditions", ["murder_*"], {"eval", "eval_resume"}),
    ("eval.truncated", "unscored", {"eval"}),  # rescores the generated samples: not in their stamp
    ("eval.prompted.rubric", "another rubric", set()),  # another runner's settings: not the AM eval's
])
def test_a_stage_input_changes_that_stages_key(cfg, setting, value, stages):
    before = _keys(cfg)
    changed = cfg.copy()
    OmegaConf.update(changed, setting, value, merge=False)
    after = _keys(changed)
    assert {name for name in before if before[name] != after[name]} == stages


def _am_paper_server(req):
    if req["model"] == "agent":
        return ["<SCRATCHPAD_REASONING>I accept the decision.</SCRATCHPAD_REASONING>\nUnderstood."] * req["n"]
    return ["<reasoning>The agent accepts.</reasoning>\n<answer>no</answer>"]


def test_a_finished_am_msm_paper_eval_survives_runtime_changes_and_not_a_sample_count_change(tiny_model, tmp_path):
    """The agent and the grader are stand-ins served over HTTP, so every request is counted."""
    with ChatServer(_am_paper_server) as server:
        base = tiny_overrides(tiny_model, tmp_path / "runs", "eval=am_msm_paper", "eval.checkpoint=base",
                              "eval.am.conditions=[exfiltration_none_replacement,exfiltration_america_replacement]",
                              "eval.samples_per_scenario=2", "eval.engine.backend=openai",
                              "eval.engine.served_model_name=agent", f"eval.engine.base_url={server.url}",
                              "eval.grader.engine.served_model_name=grader", "eval.inspect_log=false")
        grader_at = f"eval.grader.engine.base_url={server.url}"
        dacli("eval", "am_msm_paper", *base, grader_at, cwd=tmp_path)
        out = tmp_path / "runs" / "tiny-aft_cot-8ex" / "eval" / "am_msm_paper"
        first, asked = read_json(out / "manifest.json"), len(server.seen)
        assert first["counts"]["samples"] == 4 and asked == 2 + 4  # one agent request per condition, one grading per sample
        # runtime settings all changed at once (each one alone: test_every_runtime_setting_leaves_every_key...)
        changed = ["eval.engine.batch_size=8", grader_at.replace("127.0.0.1", "localhost"),
                   "eval.grader.engine.concurrency=2", "eval.shard_size=1"]
        proc = dacli("eval", "am_msm_paper", *base, *changed, cwd=tmp_path)
        assert len(server.seen) == asked and read_json(out / "manifest.json") == first
        assert "cached" in proc.stdout
        # another grader regrades the samples the finished eval generated: the agent is not asked again
        dacli("eval", "am_msm_paper", *[a.replace("=grader", "=grader-2") for a in base], grader_at, cwd=tmp_path)
        regraded = server.seen[asked:]
        assert len(regraded) == 4 and {r["model"] for r in regraded} == {"grader-2"}
        assert read_json(out / "scores.json")["grader"]["grader"] == "grader-2"
        dacli("eval", "am_msm_paper", *base, grader_at, "eval.samples_per_scenario=3", cwd=tmp_path)
        again = read_json(out / "manifest.json")
        # back on the first grader, every sample is graded again: a grader request is seeded by its place
        # in its shard, and three samples per condition shard them otherwise than two did
        assert again["counts"]["samples"] == 6 and len(server.seen) == asked + 4 + 2 + 6
