"""`dacli eval <name>`: conf/eval/<name>.yaml names its runner (am | prompted | grader_check), its
metric and the verdict the rate counts; this module picks the model (trained checkpoint, base, or a
path), runs the runner into `<eval dir>.partial/`, scores, and writes samples.jsonl + scores.json +
manifest.json (+ an Inspect log).

A runner is `run(cfg, work_dir, model_path, model_cfg, label) -> (samples, info)`; it opens the
engines it needs and may leave resumable shards in work_dir. Every sample carries a `verdict`, its
`reason` or `deterministic` record, the `layer` that decided, a `condition` and the `policy_ids` it
is about; scoring (rates with 95% Wilson intervals and bounds) is shared.
"""
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from omegaconf import OmegaConf

from .. import rundir
from ..config import RUNTIME_KNOBS
from ..errors import DacliError
from ..models import is_model_dir, locate, resolve
from .scoring import citation, mean_over, score_rows

RUNNERS = {"am": "deliberate_cli.evals.am:run", "prompted": "deliberate_cli.evals.prompted:run",
           "forced_choice": "deliberate_cli.evals.forced_choice:run"}


def pick_model(cfg) -> Tuple[str, str, Dict[str, Dict[str, str]]]:
    """(model path, label, inputs) for eval.checkpoint: auto | base | a path (eval.engine.model_path wins)."""
    _check_grader(cfg)
    choice = cfg.eval.engine.model_path or cfg.eval.checkpoint
    if choice == "base":
        return resolve(cfg.model), "base", {}
    if choice == "auto":
        out = rundir.checkpoint_dir(cfg, cfg.method.stages[-1])
        if not is_model_dir(out):
            raise DacliError(f"no trained checkpoint at {out}; run `dacli train` with the same overrides first, "
                             f"or pass eval.checkpoint=base")
        return str(out), f"{cfg.method.name}", {"checkpoint": rundir.input_ref(out)}
    key = "eval.engine.model_path" if cfg.eval.engine.model_path else "eval.checkpoint"
    located = locate(choice, key)
    if not Path(located).is_dir():  # a hub id: its revision stands for it
        return located, located, {"checkpoint": {"hub_id": located}}
    path = Path(located)
    return str(path), str(path), {"checkpoint": _identity(path)}


def _check_grader(cfg) -> None:
    """A local grader model that cannot be found fails before the eval's first sample, not after."""
    g = cfg.eval.grader
    if g.enabled and g.engine.model_path and g.engine.backend != "openai":
        locate(g.engine.model_path, "eval.grader.engine.model_path")


def _identity(path: Path) -> Dict[str, str]:
    """A checkpoint directory's identity: its manifest's hash when dacli wrote it, else the names,
    sizes and times of its files, so that a checkpoint rewritten in place is never served stale samples."""
    import hashlib

    if (path / rundir.MANIFEST).is_file():
        return rundir.input_ref(path)
    files = sorted((str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns) for f in path.rglob("*") if f.is_file())
    return {"path": str(path), "files_sha256": hashlib.sha256(json.dumps(files).encode()).hexdigest()[:16]}


def _model_cfg(cfg):
    """The run's model config with the eval's thinking mode put into the chat template's kwargs."""
    from omegaconf import open_dict

    model = cfg.model.copy()
    if cfg.eval.thinking is not None:
        with open_dict(model):
            model.chat_template_kwargs["enable_thinking"] = bool(cfg.eval.thinking)
    return model


def run(cfg) -> Dict[str, Any]:
    """The eval of eval.checkpoint (by default the run's trained checkpoint), into <run>/eval/<name>/."""
    if cfg.eval.runner == "grader_check":  # checks the grader on the labelled set; evaluates no model
        from . import grader_check

        return grader_check.run(cfg)
    model_path, label, inputs = pick_model(cfg)
    # A checkpoint every job of a sweep shares (midtrain only: the `msm` method) is scored once, in the store.
    from ..train import SHARED

    own = cfg.eval.checkpoint == "auto" and not cfg.eval.engine.model_path
    shared = cfg.method.stages[-1] if own and cfg.method.stages[-1] in SHARED else None
    if shared:  # its store entry, as every job names it (each run dir's link differs)
        model_path = str(Path(model_path).resolve())
    return _evaluate(cfg, model_path, label, inputs, shared, link_as=cfg.eval.name)


def run_baseline(cfg) -> Dict[str, Any]:
    """The untrained model's eval, once per model and eval settings: into the store, linked from every
    run dir as eval/<name>-baseline, so a sweep has one baseline row (eval.baseline=false skips it)."""
    if not cfg.eval.baseline or cfg.eval.runner == "grader_check":
        return {"skipped": True, "dir": ""}
    _check_grader(cfg)
    return _evaluate(cfg, resolve(cfg.model), "base", {}, "baseline", link_as=f"{cfg.eval.name}-baseline")


def _runner(cfg):
    import importlib

    if cfg.eval.runner not in RUNNERS:
        raise DacliError(f"eval '{cfg.eval.name}': unknown runner '{cfg.eval.runner}'; valid: {', '.join(RUNNERS)}")
    module, func = RUNNERS[cfg.eval.runner].split(":")
    return getattr(importlib.import_module(module), func)


def _evaluate(cfg, model_path: str, label: str, inputs: Dict[str, Dict[str, str]], shared: Optional[str],
              link_as: str) -> Dict[str, Any]:
    """Score a model into <run>/eval/<link_as>, or, when `shared` (what the store entry is of), into the
    store, linked from there."""
    name = cfg.eval.name
    run_eval = _runner(cfg)
    model_cfg = _model_cfg(cfg)
    settings = {k: v for k, v in OmegaConf.to_container(cfg.eval, resolve=True).items()
                if k not in ("checkpoint", "baseline", "inspect_log")}
    if not settings["monitor"]["enabled"]:
        settings.pop("monitor")  # evals from before the monitor existed stay cached
    else:  # the monitor is shown the spec: another spec is other monitor answers
        settings["monitor"]["spec"] = rundir.spec_identity(cfg)
    subset = {"eval": settings, "model": model_path, "agent_family": cfg.model.family,
              "max_model_len": cfg.model.max_model_len,
              "chat_template_kwargs": OmegaConf.to_container(model_cfg.chat_template_kwargs),
              "content": _content(cfg)}
    if shared:
        out = rundir.store_dir(cfg) / f"eval-{name}-{shared}-{rundir.config_hash(subset)}"
        with rundir.locked(out):
            result = _score(cfg, run_eval, model_path, label, inputs, subset, out, model_cfg)
        rundir.link(cfg, f"eval/{link_as}", out)
        return result
    return _score(cfg, run_eval, model_path, label, inputs, subset, rundir.eval_dir(cfg, name), model_cfg)


def _content(cfg) -> Dict[str, str]:
    """The content an eval's samples depend on beyond its config: the rendered scenarios and their
    classifier settings (AM), or the prompt file (prompt evals), and the grader package's version."""
    if cfg.eval.runner == "am":
        from . import am, upstream

        return {"scenarios": am.fingerprint(am.load(cfg)), "inspect_evals": upstream.package_version(),
                "classifier_code": _code_hash()}
    if cfg.eval.runner in ("prompted", "forced_choice"):
        import hashlib

        from .prompted import prompt_file

        content = {"prompts": hashlib.sha256(prompt_file(cfg.eval).read_bytes()).hexdigest()}
        if cfg.eval.runner == "forced_choice":  # its answer parser decides every verdict
            content["parser_code"] = hashlib.sha256((Path(__file__).parent / "forced_choice.py").read_bytes()).hexdigest()[:16]
        return content
    return {}


def _code_hash() -> str:
    """The deterministic layer's own code: a change to its rules re-runs the evals it classified."""
    import hashlib

    here = Path(__file__).resolve().parent
    files = sorted([here / "actions.py", here / "am.py", *(here / "deterministic").glob("*.py")])
    return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:16]


def _resume_stamp(subset: Dict[str, Any], inputs: Dict[str, Dict[str, str]]) -> Dict[str, Any]:
    """What the generated shards depend on: everything the cache key holds (the checkpoint's identity
    included) but the engines' runtime knobs, the grader and the monitor, whose own stamps guard the graded
    shards and the monitor's answers."""
    e = {k: v for k, v in subset["eval"].items() if k not in ("grader", "monitor")}
    e["engine"] = {k: v for k, v in e.get("engine", {}).items() if k not in RUNTIME_KNOBS}
    return {**subset, "eval": e, "inputs": inputs}


def _score(cfg, run_eval, model_path, label, inputs, subset, out, model_cfg) -> Dict[str, Any]:
    from . import monitor

    e = cfg.eval
    monitor.check(cfg)  # a monitor that names no model fails before the first sample
    if rundir.is_fresh(out, subset, inputs):
        return {"dir": str(out), "cached": True, **json.loads((out / "scores.json").read_text())["overall"]}
    started = time.time()
    with rundir.atomic_dir(out, resume=_resume_stamp(subset, inputs)) as tmp:
        samples, info = run_eval(cfg, tmp, model_path, model_cfg, label)
        engine_seconds, engine_tokens = info.pop("engine_seconds"), info.pop("engine_tokens", 0)
        if e.monitor.enabled:  # reads only the samples' CoTs; writes monitor_* into them
            info["monitor"] = monitor.run(cfg, tmp, samples)
        overall, rows = score_rows(samples, flag=e.counts)
        _, families = score_rows(samples, group_key="family", flag=e.counts)
        # The eval's own facts first, so that none of them can overwrite a computed score.
        scores = {**info, "eval": e.name, "metric": e.metric, "counts": e.counts, "model": label,
                  "model_path": model_path, "overall": overall, "mean_over_conditions": mean_over(rows),
                  "conditions": rows, "families": families, "ambiguous": overall["ambiguous"],
                  "unscored": overall["unscored"],
                  "finish_reasons": dict(Counter(s.get("finish_reason", "") for s in samples)),
                  "layers": {layer: sum(s["layer"] == layer for s in samples) for layer in ("deterministic", "grader")},
                  "cot_citation": citation(samples)}
        if e.runner == "am":
            scores["deterministic"] = _deterministic(samples)
            if e.grader.enabled:
                for verdict in ("harmful", "classifier_verdict"):
                    o, r = score_rows(samples, flag="harmful", field=verdict)
                    scores[verdict] = {"overall": o, "mean_over_conditions": mean_over(r), "conditions": r}
        timing = {"engine_seconds": round(engine_seconds, 2),
                  "generated_tokens": sum(s["completion_tokens"] for s in samples),
                  "tokens_per_second": round(engine_tokens / engine_seconds, 1) if engine_seconds > 0 else None}
        with (tmp / "samples.jsonl").open("w") as f:
            for s in samples:
                f.write(json.dumps(s) + "\n")
        rundir.write_json(tmp / "scores.json", scores)
        if e.inspect_log:
            from .inspect_log import write as write_inspect_log

            scores["inspect_log"] = write_inspect_log(cfg, tmp, samples, scores)
            rundir.write_json(tmp / "scores.json", scores)
        rundir.write_json(tmp / rundir.MANIFEST, rundir.manifest(
            f"eval_{e.name}", subset, inputs, {"samples": len(samples), e.counts: overall["k"], **timing}, started))
        for shard in list(tmp.glob("gen-*.jsonl")) + list(tmp.glob("graded-*.jsonl")):
            shard.unlink()
    return {"dir": str(out), "cached": False, **overall, **timing}


def _deterministic(samples) -> Dict[str, Any]:
    """The deterministic layer's own rate with its bounds, whatever the headline counts."""
    flat = [{"condition": s["condition"], "verdict": s["deterministic"]["verdict"]} for s in samples]
    overall, rows = score_rows(flat, flag="harmful")
    return {"overall": overall, "mean_over_conditions": mean_over(rows), "conditions": rows}
