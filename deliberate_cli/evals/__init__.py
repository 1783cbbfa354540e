"""`dacli eval <name>`: pick the model (trained checkpoint, base, or a path), run the named eval
through a backend, score it, write samples.jsonl + scores.json + manifest.json.

Each eval module provides `run(cfg, backend, model_label) -> (samples, info)`, every sample carrying
a `verdict` and a `condition`; scoring (rates with 95% Wilson intervals) is shared.
"""
import json
import time
from pathlib import Path
from typing import Any, Dict, Tuple

from omegaconf import OmegaConf

from .. import rundir
from ..errors import DacliError
from ..models import is_model_dir, resolve
from . import am
from .scoring import score_rows

EVALS = {"am": (am.run, "am_rate")}


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


def run(cfg) -> Dict[str, Any]:
    from ..backends import open_backend

    name = cfg.eval.name
    if name not in EVALS:
        raise DacliError(f"unknown eval '{name}'; valid: {', '.join(EVALS)}")
    run_eval, metric = EVALS[name]
    model_path, label, inputs = pick_model(cfg)
    subset = {"eval": OmegaConf.to_container(cfg.eval, resolve=True), "model": model_path,
              "chat_template_kwargs": OmegaConf.to_container(cfg.model.chat_template_kwargs)}
    out = rundir.eval_dir(cfg, name)
    if rundir.is_fresh(out, subset, inputs):
        return {"dir": str(out), "cached": True, **json.loads((out / "scores.json").read_text())["overall"]}
    started = time.time()
    backend = open_backend(cfg.eval.engine, model_path, cfg.model)
    try:
        samples, info = run_eval(cfg, backend, label)
    finally:
        backend.close()
    overall, rows = score_rows(samples)
    scores = {"eval": name, "metric": metric, "model": label, "model_path": model_path, "overall": overall,
              "conditions": rows, **info}
    with rundir.atomic_dir(out) as tmp:
        with (tmp / "samples.jsonl").open("w") as f:
            for s in samples:
                f.write(json.dumps(s) + "\n")
        rundir.write_json(tmp / "scores.json", scores)
        rundir.write_json(tmp / rundir.MANIFEST, rundir.manifest(
            f"eval_{name}", subset, inputs, {"samples": len(samples), "harmful": overall["k"]}, started))
    return {"dir": str(out), "cached": False, **overall}
