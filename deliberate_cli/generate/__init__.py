"""`dacli generate`: the training data a method needs, each part a store entry linked from the run dir.

Recipe:
1. the spec, its `{model_name}`/`{provider_name}` filled in;
2. the prompts: the bundled set, a file or an HF dataset (refused if one overlaps an eval's text), or
   `data.source=generated`: written from the spec (prompt_pool.py) → `data/prompts`;
3. for methods with an sft stage, the AFT data: CoT + answer per prompt with the spec in context,
   checks, the judge, best-of-k, over as many prompts as it takes to keep data.n_samples examples
   (aft.py) → `data/aft`;
4. for methods with a midtrain stage, the MSM documents from their hierarchy (msm.py), about
   `msm.spec` when set (another spec than the AFT data's), else the run's → `data/msm`.
Every step writes shards as it goes (shards.py), so a killed run resumes where it died; train reads
only what the run dir links to.
"""
from typing import Any, Dict, List, Tuple

from .. import decontam, progress
from ..compose import msm_spec_config
from ..errors import DacliError
from ..prompts import load_prompt_set
from ..spec import Spec, load_spec, names
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
            summary["aft"] = aft.ensure(cfg, spec, prompts, prompts_id, engines, contamination)
        if "midtrain" in cfg.method.stages:  # on msm.spec when set: another spec than the AFT data's
            summary["msm"] = _msm(cfg, load_spec(msm_spec_config(cfg), names(cfg)), engines)
    finally:
        engines.close()
    return summary


def _prompts(cfg, spec: Spec, engines: Engines, summary: Dict[str, Any]) -> Tuple[aft.Prompts, str, Dict[str, Any]]:
    """(the first m prompts of the run's set for any m, the identity of that set, the decontamination
    record). A given set is refused when a prompt overlaps an eval; a generated pool drops such prompts,
    and grows when the AFT data need more prompts than it holds."""
    if cfg.data.source == "generated":
        def upto(m: int) -> List[Dict]:
            pool, _, counts = prompt_pool.ensure(cfg, spec, engines, max(m, cfg.data.generated.pool))
            summary["prompts"] = counts
            return pool[:m]

        first = upto(cfg.data.n_samples)
        return upto, prompt_pool.identity(cfg), decontam.check(first, float(cfg.data.decontam_threshold))
    prompts, prompts_sha = load_prompt_set(cfg.data)
    # Before any engine (or the embedded model's conversion) starts: a contaminated set fails in seconds.
    contamination = decontam.check(prompts, float(cfg.data.decontam_threshold))
    if contamination["over_threshold"]:
        raise DacliError(decontam.refusal(contamination))
    return lambda m: prompts[:m], prompts_sha, contamination


def _msm(cfg, spec: Spec, engines: Engines) -> Dict[str, Any]:
    def build(work):
        counts = msm.generate_docs(cfg, spec, engines.generator, work)
        return {"counts": {**counts, "spec": spec.name}, "generator": engines.generator_path}

    entry = msm.entry(cfg)
    built = entry.materialise(build, link=(cfg, "data/msm"))
    counts = built.manifest["counts"]
    if not built.cached and not counts["budget_reached"]:
        progress.console().print(
            f"[yellow]warning:[/] the MSM corpus holds {counts['tokens']} of the {counts['token_budget']} tokens asked "
            f"for after {counts['idea_rounds']} rounds of ideas (msm.max_idea_rounds); see {entry.path}/manifest.json",
            highlight=False, soft_wrap=True)
    return {"dir": str(entry.path), "cached": built.cached, **counts}
