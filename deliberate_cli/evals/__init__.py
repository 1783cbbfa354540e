"""`dacli eval <name>`: conf/eval/<name>.yaml names its runner (RUNNERS), its metric and the verdict
the rate counts; this module picks the model (trained checkpoint, base, or a path), runs the runner
into the eval's store entry (store.Entry: lock, partial dir, resume, manifest, rename), scores, and
writes samples.jsonl + scores.json + manifest.json (+ an Inspect log).

A runner is one module with a `RUNNER` (runner.py): the content its samples depend on, its run over
a model, its own blocks in scores.json and its summary lines. Scoring (rates with 95% Wilson
intervals and bounds) is shared. The eval's cache key is `key` below: the eval's config with every
runtime setting stripped (config.declared), so a finished eval is reused when only where or how fast
it runs changes (a batch size, a grader's URL) and made again when what it computes changes.
"""
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from omegaconf import OmegaConf

from .. import rundir, usage
from ..config import declared
from ..errors import DacliError
from ..models import is_model_dir, locate, resolve
from ..spec import identity as spec_identity
from ..store import Entry
from . import am, forced_choice, grader, grader_check, monitor, prompted
from .runner import Runner
from .scoring import citation, headline, headline_of, mean_over, score_rows, truncated

# eval.runner -> the runner (a new runner: its module, a line here, a YAML file under conf/eval/).
RUNNERS: Dict[str, Runner] = {"am": am.RUNNER, "prompted": prompted.RUNNER, "forced_choice": forced_choice.RUNNER,
                              "grader_check": grader_check.RUNNER}


def runner_of(cfg) -> Runner:
    if cfg.eval.runner not in RUNNERS:
        raise DacliError(f"eval '{cfg.eval.name}': unknown runner '{cfg.eval.runner}'; valid: {', '.join(RUNNERS)}")
    return RUNNERS[cfg.eval.runner]


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
    which = "eval.engine.model_path" if cfg.eval.engine.model_path else "eval.checkpoint"
    located = locate(choice, which)
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
    r = runner_of(cfg)
    if not r.evaluates_model:
        return _check(cfg, r)
    model_path, label, inputs = pick_model(cfg)
    # A checkpoint every job of a sweep shares (the run dir links it from the store: the msm method's
    # midtrained model) is scored once, in the store, under the entry's own path as every job names it.
    last = rundir.checkpoint_dir(cfg, cfg.method.stages[-1])
    own = cfg.eval.checkpoint == "auto" and not cfg.eval.engine.model_path
    shared = cfg.method.stages[-1] if own and last.is_symlink() else None
    if shared:
        model_path = str(last.resolve())
        inputs = {"checkpoint": rundir.input_ref(Path(model_path))}
    return _evaluate(cfg, r, model_path, label, inputs, shared, link_as=cfg.eval.name)


def run_baseline(cfg) -> Dict[str, Any]:
    """The untrained model's eval, once per model and eval settings: into the store, linked from every
    run dir as eval/<name>-baseline, so a sweep has one baseline row (eval.baseline=false skips it)."""
    r = runner_of(cfg)
    if not cfg.eval.baseline or not r.evaluates_model:
        return {"skipped": True, "dir": ""}
    _check_grader(cfg)
    return _evaluate(cfg, r, resolve(cfg.model), "base", {}, "baseline", link_as=f"{cfg.eval.name}-baseline")


def key(cfg, r: Runner, model_path: str) -> Dict[str, Any]:
    """What an eval's result depends on: the eval's settings but which checkpoint it was asked for (the
    model path and its identity stand for that), the other runners' sections and every runtime setting; the grader and the monitor
    only when they are on (a monitor is shown the spec: another spec is other monitor answers); the
    model settings the prompts are rendered with; the runner's content."""
    e = declared(cfg, "eval")["eval"]
    for later in ("checkpoint", "baseline"):
        e.pop(later)
    for other in RUNNERS.values():  # another runner's settings say nothing about this eval
        if other is not r and other.section:
            e.pop(other.section)
    if not e["grader"]["enabled"]:
        e.pop("grader")
    if not e["monitor"]["enabled"]:
        e.pop("monitor")
    else:
        e["monitor"]["spec"] = spec_identity(cfg.spec)
    return {"eval": e, "model": model_path, "agent_family": cfg.model.family, "max_model_len": cfg.model.max_model_len,
            "chat_template_kwargs": OmegaConf.to_container(_model_cfg(cfg).chat_template_kwargs),
            "content": r.content(cfg)}


def _resume_stamp(k: Dict[str, Any], inputs: Dict[str, Dict[str, str]]) -> Dict[str, Any]:
    """What the generated shards depend on: the key but the grader and the monitor, whose own stamps
    guard the graded shards and the monitor's answers, and eval.truncated, which only rescores them;
    plus the checkpoint's identity."""
    e = {name: v for name, v in k["eval"].items() if name not in ("grader", "monitor", "truncated")}
    return {**k, "eval": e, "inputs": inputs}


def _evaluate(cfg, r: Runner, model_path: str, label: str, inputs: Dict[str, Dict[str, str]], shared: Optional[str],
              link_as: str) -> Dict[str, Any]:
    """Score a model into <run>/eval/<link_as>, or, when `shared` (what the store entry is of), into the
    store, linked from there."""
    name = cfg.eval.name
    monitor.check(cfg)  # a monitor that names no model fails before the first sample
    k = key(cfg, r, model_path)
    path = rundir.store_path(cfg, f"eval-{name}-{shared}", k) if shared else rundir.eval_dir(cfg, name)
    entry = Entry(path, f"eval_{name}", k, inputs, resume=_resume_stamp(k, inputs), keep_shards=True)
    built = entry.materialise(lambda work: _score(cfg, r, model_path, label, work),
                              link=(cfg, f"eval/{link_as}") if shared else None)
    scores = json.loads((path / "scores.json").read_text())
    timing = {} if built.cached else {t: built.manifest["counts"].get(t) for t in
                                      ("engine_seconds", "generated_tokens", "tokens_per_second")}
    # eval.headline only picks which stored figure leads: read from the scores, never written into a
    # finished (maybe shared) entry
    return {"dir": str(path), "cached": built.cached, **scores["overall"],
            "headline": headline_of(scores, cfg.eval.headline), **timing}


def _score(cfg, r: Runner, model_path: str, label: str, work: Path) -> Dict[str, Any]:
    e = cfg.eval
    # when this process began the eval; a resumed eval's earlier start is its first sample's batch
    # start, which the inspect log takes when it is earlier (the samples carry it across the kill)
    started = time.time()
    samples, info = r.run(cfg, work, model_path, _model_cfg(cfg), label)
    engine_seconds, engine_tokens = info.pop("engine_seconds"), info.pop("engine_tokens", 0)
    if e.monitor.enabled:  # reads only the samples' CoTs; writes monitor_* into them
        info["monitor"] = monitor.run(cfg, work, samples)
    overall, rows = score_rows(samples, flag=e.counts)
    _, families = score_rows(samples, group_key="family", flag=e.counts)
    cut, cut_by_condition = truncated(samples)
    for row in rows:  # the share of each condition's samples cut off at max_tokens
        row["truncated"] = cut_by_condition[row["condition"]]["truncated"]
        row["truncated_share"] = cut_by_condition[row["condition"]]["share"]
    mean = mean_over(rows)
    # The eval's own facts first, so that none of them can overwrite a computed score.
    scores = {**info, "eval": e.name, "metric": e.metric, "counts": e.counts, "model": label,
              "model_path": model_path, "overall": overall, "mean_over_conditions": mean,
              "headline": headline(overall, mean, e.headline),
              "conditions": rows, "families": families, "ambiguous": overall["ambiguous"],
              "unscored": overall["unscored"],
              "finish_reasons": dict(Counter(s.get("finish_reason", "") for s in samples)),
              "truncated": {**cut, "policy": e.truncated},
              "layers": {layer: sum(s["layer"] == layer for s in samples) for layer in ("deterministic", "grader")},
              "cot_citation": citation(samples), **r.score(cfg, samples)}
    timing = {"engine_seconds": round(engine_seconds, 2),
              "generated_tokens": sum(s["completion_tokens"] for s in samples),
              "tokens_per_second": round(engine_tokens / engine_seconds, 1) if engine_seconds > 0 else None}
    if e.grader.enabled:  # which grader scored it, and how it did on the labelled set if it was checked
        scores["grader"] = {**(scores.get("grader") or {}), "model": grader.grader_name(cfg),
                            "check": grader_checked(cfg)}
    rundir.write_jsonl(work / "samples.jsonl", samples)
    rundir.write_json(work / "scores.json", scores)
    if e.inspect_log:
        from .inspect_log import write as write_inspect_log

        scores["inspect_log"] = write_inspect_log(cfg, work, samples, scores, model_path=model_path, label=label,
                                                  started_at=started, completed_at=time.time())
        rundir.write_json(work / "scores.json", scores)
    return {"counts": {"samples": len(samples), e.counts: overall["k"], **timing}, "models": _models_used(samples),
            **({"grader": scores["grader"]} if e.grader.enabled else {})}


def _models_used(samples) -> list:
    """The requests and tokens of this eval's build (usage.py), its grader's taken from the samples
    themselves: each graded sample keeps what its grading cost, so shards graded before a kill count too."""
    graded = [s["grader"]["usage"] for s in samples if (s.get("grader") or {}).get("usage")]
    if not graded:
        return usage.current()
    by_model: Dict[str, Dict[str, Any]] = {}
    for u in graded:
        row = by_model.setdefault(u["model"], {"role": "grader", "model": u["model"], "requests": 0,
                                               "input_tokens": 0, "output_tokens": 0})
        for field in ("requests", "input_tokens", "output_tokens"):
            row[field] += u[field]
    return [r for r in usage.current() if r["role"] != "grader"] + list(by_model.values())


def check_key(cfg, r: Runner) -> Dict[str, Any]:
    """What a check of a grader depends on: the grader, named by its model, and the runner's content."""
    return {"grader": declared(cfg, "eval.grader")["eval.grader"], "content": r.content(cfg)}


def grader_checked(cfg) -> Optional[Dict[str, Any]]:
    """The store's check of eval.grader on the labelled set (`dacli eval am_grader_check` with the same
    grader settings): its dir and Cohen's kappa per scenario, or None when it was not checked."""
    path = rundir.store_path(cfg, grader_check.NAME, check_key(cfg, grader_check.RUNNER))
    found = rundir.read_manifest(path)
    return {"dir": str(path), "kappa": found["counts"].get("kappa")} if found else None


def _check(cfg, r: Runner) -> Dict[str, Any]:
    """A runner that evaluates no model (the grader check): its result is a store entry of its own,
    keyed on what it checks (the grader, named by its model) and its content, linked as eval/<name>."""
    k = check_key(cfg, r)
    entry = Entry(rundir.store_path(cfg, cfg.eval.name, k), f"eval_{cfg.eval.name}", k)
    built = entry.materialise(lambda work: r.check(cfg, work), link=(cfg, f"eval/{cfg.eval.name}"))
    return {"dir": str(rundir.eval_dir(cfg, cfg.eval.name)), "cached": built.cached, **built.manifest["counts"]}
