"""`dacli train`: run the method's stages (midtrain, sft) through TRL's SFTTrainer.

Recipe, per stage:
1. read what it trains on (data.py): the MSM documents for midtrain; prompt → [CoT +] response
   conversations for sft, the spec never in context;
2. skip it when its checkpoint is fresh (same settings, same inputs); midtrain's lives in the store,
   one for every sample count of a sweep;
3. size max_length from the data;
4. fit (fit.py): here, or on train.num_processes ranks under `accelerate launch` (launch.py),
   resuming from the last trainer checkpoint a killed run left;
5. write the checkpoint (an HF model, or with LoRA the adapter) and its manifest, then rename it into place.
The next stage starts from this one's weights (a LoRA adapter merged once for it, models.merged).
A method is only a list of stage names; this package knows stages, never method names.
"""
from typing import Any, Dict

from .. import rundir
from ..errors import DacliError
from ..models import is_adapter, merged, resolve
from ..store import Entry
from . import fit, launch
from .data import STAGES, key, select, sft_example
from .fit import make_trainer

__all__ = ["run", "STAGES", "SHARED", "select", "sft_example", "make_trainer"]

# Stages whose output does not depend on the run's sample count: computed once into the store and
# linked from every run dir (one midtrained checkpoint for all msm_* jobs of a sweep).
SHARED = {"midtrain"}


def run(cfg) -> Dict[str, Any]:
    unknown = [s for s in cfg.method.stages if s not in STAGES]
    if unknown:
        raise DacliError(f"method {cfg.method.name} names unknown stage(s) {', '.join(unknown)}; "
                         f"valid: {', '.join(STAGES)}")
    summary: Dict[str, Any] = {}
    model_path = resolve(cfg.model)
    upstream: Dict[str, Dict[str, str]] = {}
    for stage in cfg.method.stages:
        if is_adapter(model_path):  # the previous stage's LoRA, merged once to train on top of it
            model_path = merged(model_path)
        rows, ref = STAGES[stage](cfg)
        inputs = {"data": ref, **upstream}
        settings = key(cfg, stage)
        shared = stage in SHARED
        out = (rundir.store_path(cfg, stage, {"config": settings, "inputs": inputs}) if shared
               else rundir.checkpoint_dir(cfg, stage))
        built = Entry(out, stage, settings, inputs).materialise(
            lambda tmp: _fit(cfg, stage, model_path, rows, tmp),  # noqa: B023 (called before the loop goes on)
            link=(cfg, f"checkpoints/{stage}") if shared else None)
        summary[stage] = {"dir": str(out), "cached": built.cached, **built.manifest["counts"]}
        upstream = {"init": rundir.input_ref(out)}
        model_path = str(out)
    return summary


def _fit(cfg, stage: str, model_path: str, rows, tmp) -> Dict[str, Any]:
    from transformers import AutoTokenizer

    sizes = fit.sized_max_length(cfg, AutoTokenizer.from_pretrained(model_path), rows)
    label = f"{stage} steps"
    if cfg.train.num_processes > 1:
        counts = launch.fit_launched(cfg, stage, model_path, rows, tmp, sizes, label)
    else:
        counts = fit.train_into(cfg, stage, model_path, rows, tmp, sizes, label)
    if stage == "sft":  # what it trained on, each record tagged with where it came from
        sources = [r.get("source", "alignment") for r in rows]
        counts.update(alignment_examples=sources.count("alignment"), mix_examples=sources.count("mix"))
        rundir.write_jsonl(tmp / "train_data.jsonl", rows)
    return {"counts": counts, "base_model": model_path, "loss_history": counts.pop("loss_history")}
