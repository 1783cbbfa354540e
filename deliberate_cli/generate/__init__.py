"""`dacli generate`: the training data a method needs, each part a store entry linked from the run dir.

Recipe:
1. the spec, its `{model_name}`/`{provider_name}` filled in;
2. the prompts: the bundled set, a file or an HF dataset (refused if one overlaps an eval's text), or
   `data.source=generated`: written from the spec (prompt_pool.py) → `data/prompts`;
3. for methods with an sft stage, the AFT data: CoT + answer per prompt with the spec in context,
   checks, the judge, best-of-k (aft.py) → `data/aft`;
4. for methods with a midtrain stage, the MSM documents from their hierarchy (msm.py), about
   `msm.spec` when set (another spec than the AFT data's), else the run's → `data/msm`.
Every step writes shards as it goes (shards.py), so a killed run resumes where it died; train reads
only what the run dir links to.
"""
import shutil
import time
from typing import Any, Dict, List, Tuple

from .. import decontam, progress, rundir
from ..errors import DacliError
from ..prompts import load_prompt_set
from ..spec import Spec, load_spec, msm_spec_config, names
from . import aft, msm, prompt_pool
from .engines import Engines


def run(cfg) -> Dict[str, Any]:
    spec = load_spec(cfg.spec, names(cfg))
    summary: Dict[str, Any] = {}
    engines = Engines(cfg)
    try:
        if "sft" in cfg.method.stages:
            prompts, prompts_id, contamination = _prompts(cfg, spec, engines, summary)
            summary["decontamination"] = contamination
            aft_out = rundir.aft_data_dir(cfg, prompts_id)
            with rundir.locked(aft_out):
                summary["aft"] = {"dir": str(aft_out),
                                  **aft.ensure(cfg, spec, prompts, prompts_id, engines, aft_out, contamination)}
            rundir.link(cfg, "data/aft", aft_out)
        if "midtrain" in cfg.method.stages:  # on msm.spec when set: another spec than the AFT data's
            summary["msm"] = _msm(cfg, load_spec(msm_spec_config(cfg), names(cfg)), engines)
            rundir.link(cfg, "data/msm", summary["msm"]["dir"])
    finally:
        engines.close()
    return summary


def _prompts(cfg, spec: Spec, engines: Engines, summary: Dict[str, Any]) -> Tuple[List[Dict], str, Dict[str, Any]]:
    """(the first data.n_samples prompts, the identity of the set they are a prefix of, the decontamination
    record). A given set is refused when a prompt overlaps an eval; a generated pool drops such prompts."""
    if cfg.data.source == "generated":
        target = max(cfg.data.n_samples, cfg.data.generated.pool)
        pool, pool_id, counts = prompt_pool.ensure(cfg, spec, engines, target)
        summary["prompts"] = counts
        rundir.link(cfg, "data/prompts", counts["dir"])
        prompts = pool[:cfg.data.n_samples]
        return prompts, pool_id, decontam.check(prompts, float(cfg.data.decontam_threshold))
    prompts, prompts_sha = load_prompt_set(cfg.data)
    # Before any engine (or the embedded model's conversion) starts: a contaminated set fails in seconds.
    contamination = decontam.check(prompts, float(cfg.data.decontam_threshold))
    if contamination["over_threshold"]:
        raise DacliError(decontam.refusal(contamination))
    return prompts, prompts_sha, contamination


def _msm(cfg, spec: Spec, engines: Engines) -> Dict[str, Any]:
    out, key = rundir.msm_data_dir(cfg), rundir.msm_key(cfg)
    with rundir.locked(out):
        if rundir.is_fresh(out, key, {}):
            return {"dir": str(out), "cached": True, **rundir.read_manifest(out)["counts"]}
        started = time.time()
        with rundir.atomic_dir(out, resume={"config_hash": rundir.config_hash(key)}) as tmp:
            counts = msm.generate_docs(cfg, spec, engines.generator, tmp)
            counts["spec"] = spec.name
            rundir.write_json(tmp / rundir.MANIFEST, rundir.manifest(
                "generate_msm", key, {}, counts, started, generator=engines.generator_path))
        shutil.rmtree(out / "shards", ignore_errors=True)  # only now: a kill before the rename resumes from them
    if not counts["budget_reached"]:
        progress.console().print(
            f"[yellow]warning:[/] the MSM corpus holds {counts['tokens']} of the {counts['token_budget']} tokens asked "
            f"for after {counts['idea_rounds']} rounds of ideas (msm.max_idea_rounds); see {out}/manifest.json",
            highlight=False, soft_wrap=True)
    return {"dir": str(out), "cached": False, **counts}
