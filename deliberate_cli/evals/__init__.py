"""`dacli eval <name>`: pick the model (trained checkpoint, base, or a path), run the named eval
through a backend in one batched pass, classify (deterministic layer, then the optional LLM judge for
what it found ambiguous), score, and write samples.jsonl + scores.json + manifest.json.

Each eval module provides `run(cfg, backend, model_label) -> (samples, info)`, every sample carrying
a `verdict`, its `reason`, the `layer` that decided, a `condition`, `choices` and a `rubric` for the
judge layer, and the `policy_ids` it is about; scoring (rates with 95% Wilson intervals) is shared.
"""
import json
import time
from pathlib import Path
from typing import Any, Dict, Tuple

from omegaconf import OmegaConf

from .. import rundir
from ..errors import DacliError
from ..models import is_model_dir, resolve
from . import am, judge_layer, prompted
from .scoring import citation, score_rows

# name -> (runner, metric, the verdict the metric counts)
EVALS = {
    "am": (am.run, "am_rate", "harmful"),
    "harmful_compliance": (prompted.run, "compliance_rate", "complied"),
    "over_refusal": (prompted.run, "refusal_rate", "refused"),
}


def pick_model(cfg) -> Tuple[str, str, Dict[str, Dict[str, str]]]:
    """(model path, label, inputs) for eval.checkpoint: auto | base | a path (eval.engine.model_path wins)."""
    choice = cfg.eval.engine.model_path or cfg.eval.checkpoint
    if choice == "base":
        return resolve(cfg.model), "base", {}
    if choice == "auto":
        out = rundir.checkpoint_dir(cfg, cfg.method.stages[-1])
        if not is_model_dir(out):
            raise DacliError(f"no trained checkpoint at {out}; run `dacli train` with the same overrides first, "
                             f"or pass eval.checkpoint=base")
        return str(out), f"{cfg.method.name}", {"checkpoint": rundir.input_ref(out)}
    path = Path(choice).expanduser()
    if not is_model_dir(path):
        raise DacliError(f"{path} is not a model directory (no config.json with weights)")
    return str(path), str(path), {}


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
    model_path, label, inputs = pick_model(cfg)
    return _evaluate(cfg, model_path, label, inputs, None)


def run_baseline(cfg) -> Dict[str, Any]:
    """The untrained model's eval, once per model and eval settings: into the store, linked from every
    run dir as eval/<name>-baseline, so a sweep has one baseline row (eval.baseline=false skips it)."""
    if not cfg.eval.baseline:
        return {"skipped": True, "dir": ""}
    return _evaluate(cfg, resolve(cfg.model), "base", {}, "baseline")


def _evaluate(cfg, model_path: str, label: str, inputs: Dict[str, Dict[str, str]], shared) -> Dict[str, Any]:
    name = cfg.eval.name
    if name not in EVALS:
        raise DacliError(f"unknown eval '{name}'; valid: {', '.join(EVALS)}")
    model_cfg = _model_cfg(cfg)
    settings = {k: v for k, v in OmegaConf.to_container(cfg.eval, resolve=True).items() if k not in ("checkpoint", "baseline")}
    subset = {"eval": settings, "model": model_path,
              "chat_template_kwargs": OmegaConf.to_container(model_cfg.chat_template_kwargs)}
    if shared:
        out = rundir.store_dir(cfg) / f"eval-{name}-{shared}-{rundir.config_hash(subset)}"
        with rundir.locked(out):
            result = _score(cfg, name, model_path, label, inputs, subset, out, model_cfg)
        rundir.link(cfg, f"eval/{name}-{shared}", out)
        return result
    return _score(cfg, name, model_path, label, inputs, subset, rundir.eval_dir(cfg, name), model_cfg)


def _score(cfg, name, model_path, label, inputs, subset, out, model_cfg) -> Dict[str, Any]:
    from ..backends import open_backend

    run_eval, metric, flag = EVALS[name]
    if rundir.is_fresh(out, subset, inputs):
        return {"dir": str(out), "cached": True, **json.loads((out / "scores.json").read_text())["overall"]}
    started = time.time()
    backend = open_backend(cfg.eval.engine, model_path, model_cfg)
    try:
        t0 = time.time()
        samples, info = run_eval(cfg, backend, label)
        engine_seconds = time.time() - t0
    finally:
        backend.close()
    j = cfg.eval.classifier_judge
    judged = judge_layer.resolve(cfg, samples, j.engine.model_path or j.engine.served_model_name or "")
    overall, rows = score_rows(samples, flag=flag)
    _, families = score_rows(samples, group_key="family", flag=flag)
    # The eval's own facts first, so that none of them can overwrite a computed score.
    scores = {**info, "eval": name, "metric": metric, "counts": flag, "model": label, "model_path": model_path,
              "overall": overall, "conditions": rows, "families": families,
              "ambiguous": sum(s["verdict"] == "ambiguous" for s in samples),
              "layers": {layer: sum(s["layer"] == layer for s in samples) for layer in ("deterministic", "llm_judge")},
              "classifier_judge": judged, "cot_citation": citation(samples)}
    timing = {"engine_seconds": round(engine_seconds, 2),
              "generated_tokens": sum(s["completion_tokens"] for s in samples)}
    with rundir.atomic_dir(out) as tmp:
        with (tmp / "samples.jsonl").open("w") as f:
            for s in samples:
                f.write(json.dumps(s) + "\n")
        rundir.write_json(tmp / "scores.json", scores)
        rundir.write_json(tmp / rundir.MANIFEST, rundir.manifest(
            f"eval_{name}", subset, inputs, {"samples": len(samples), flag: overall["k"], **timing}, started))
    return {"dir": str(out), "cached": False, **overall, "ambiguous": scores["ambiguous"], **timing}
