"""`dacli generate`: deliberative CoT data (and, for msm_* methods, spec documents).

Recipe: load spec + prompts → per shard of prompts, the generator (spec in its system prompt)
writes a CoT and an answer → deterministic checks → per shard, the spec-aware judge scores what
passed → best-of-k → aft.parquet (kept), rejects.parquet (with reasons), manifest.json. Before any
of it, the prompts are checked against every eval's text (decontam.py) and refused above
`data.decontam_threshold`; the check's record goes into the manifest and the stage's summary.

CoT formats: with `model.thinking_format=delimiter` the CoT and the answer come from two calls, the
second continuing after `</think>`, so the split never depends on the model closing its own tag.
With `reasoning_content` (Qwen3 and other native thinkers) one call is made and the CoT is taken
from the server's reasoning field or the model's own <think> block. Shards are written as they
finish; a killed run resumes at the first missing shard, and no record is lost or duplicated.
"""
import json
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Tuple

from . import cot as cot_format
from . import decontam, diversity
from . import judge as judging
from . import rundir
from .backends import Backend, Completion, Sampling, open_backend
from .errors import DacliError
from .models import resolve
from .msm import generate_docs
from .prompts import load_prompt_set
from .spec import Spec, generator_system_prompt, load_spec


class _Engines:
    """Loads the generator and the judge on first use only; one engine when they are the same."""

    def __init__(self, cfg):
        self.cfg, self.current, self.key = cfg, None, None
        self.generator_path = cfg.generator.model_path or resolve(cfg.model)

    def _get(self, engine, path: str) -> Backend:
        key = (engine.backend, path, engine.base_url)
        if key != self.key:
            self.close()
            self.current, self.key = open_backend(engine, path, self.cfg.model), key
        return self.current

    def generator(self) -> Backend:
        return self._get(self.cfg.generator, self.generator_path)

    def judge_path(self) -> str:
        j = self.cfg.judge
        return j.model_path or (j.served_model_name if j.backend == "openai" else None) or self.generator_path

    def _judge_engine(self):
        j = self.cfg.judge
        same = (j.backend, self.judge_path()) == (self.cfg.generator.backend, self.generator_path)
        return self.cfg.generator if same else j

    def judge(self) -> Backend:
        return self._get(self._judge_engine(), self.judge_path())

    def judge_backend(self) -> str:
        return self._judge_engine().backend

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
        self.current, self.key = None, None


def run(cfg) -> Dict[str, Any]:
    spec = load_spec(cfg.spec)
    prompts, prompts_sha = load_prompt_set(cfg.data)
    # Before any engine (or the embedded model's conversion) starts: a contaminated set fails in seconds.
    contamination = decontam.check(prompts, float(cfg.data.decontam_threshold))
    if contamination["over_threshold"]:
        raise DacliError(decontam.refusal(contamination))
    aft_out = rundir.aft_data_dir(cfg, prompts_sha)
    summary: Dict[str, Any] = {"decontamination": contamination}
    engines = _Engines(cfg)
    try:
        with rundir.locked(aft_out):
            summary["aft"] = {"dir": str(aft_out), **_aft(cfg, spec, prompts, prompts_sha, engines, aft_out,
                                                          contamination)}
        rundir.link(cfg, "data/aft", aft_out)
        if "midtrain" in cfg.method.stages:
            msm_out, key = rundir.msm_data_dir(cfg), rundir.msm_key(cfg)
            with rundir.locked(msm_out):
                summary["msm"] = {"dir": str(msm_out), "cached": rundir.is_fresh(msm_out, key, {})}
                if not summary["msm"]["cached"]:
                    started = time.time()
                    with rundir.atomic_dir(msm_out, resume={"config_hash": rundir.config_hash(key)}) as tmp:
                        counts = generate_docs(cfg, spec, engines.generator, tmp, engines.generator_path)
                        rundir.write_json(tmp / rundir.MANIFEST, rundir.manifest(
                            "generate_msm", key, {}, counts, started, generator=engines.generator_path))
                    summary["msm"].update(counts)
            rundir.link(cfg, "data/msm", msm_out)
    finally:
        engines.close()
    return summary


_SHARD = re.compile(r"(samples|judged)-(\d{8})-(\d{8})\.parquet$")


def _shard_files(shards: Path) -> Dict[Tuple[int, int], Dict[str, Path]]:
    """(start, end) -> {"samples"|"judged": path} for the shard files present."""
    found: Dict[Tuple[int, int], Dict[str, Path]] = {}
    for path in shards.glob("*.parquet"):
        m = _SHARD.match(path.name)
        if m:
            found.setdefault((int(m.group(2)), int(m.group(3))), {})[m.group(1)] = path
    return dict(sorted(found.items()))


def _covered(ranges) -> int:
    """How many prompts, from the first, the shards cover without a gap."""
    end = 0
    for start, stop in ranges:
        if start != end:
            raise DacliError(f"the AFT store has a gap in its shards at prompt {end}; delete the store entry to regenerate")
        end = stop
    return end


def _aft(cfg, spec: Spec, prompts: List[Dict], prompts_sha: str, engines: "_Engines", out: Path,
         contamination: Dict[str, Any]) -> Dict[str, Any]:
    """Make the store entry cover `prompts` (a prefix of one fixed order), generating only what it lacks.

    The entry holds one judged shard per generated range of prompts, and aft.parquet/rejects.parquet
    over all of them. A larger `data.n_samples` extends it; a smaller one reads a prefix of it.
    Request seeds follow each prompt's position in the order, so a prompt's samples do not depend on
    which run generated them (with vLLM and HTTP; transformers seeds per batch, see docs/configs.md).
    """
    started, key, g = time.time(), rundir.aft_key(cfg, prompts_sha), cfg.generator
    n, key_hash = len(prompts), rundir.config_hash(key)
    m = rundir.read_manifest(out)
    if m and m.get("config_hash") != key_hash:
        raise DacliError(f"{out} holds data for another config; remove it")
    if m and m["counts"]["prompts"] >= n:
        return {"cached": True, **_counts(cfg, *_read_store(out, n), n)}
    shards = out / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    rundir.write_json(out / "key.json", key)
    files = _shard_files(shards)
    covered = _covered(files)
    call = {"from_prompt": covered, "to_prompt": max(n, covered), "engine_seconds": 0.0, "generated_tokens": 0,
            "resumed_shards": sum(1 for f in files.values() if "judged" not in f), "started": started}
    for start in range(covered, n, g.shard_size):
        shard = prompts[start:start + g.shard_size]
        generator = engines.generator()  # loaded on first use, outside the timed part
        t0 = time.time()
        rows = _sample(cfg, spec, shard, generator, engines.generator_path, start)
        call["engine_seconds"] += time.time() - t0
        call["generated_tokens"] += sum(r["cot_tokens"] + r["response_tokens"] for r in rows)
        rundir.write_parquet(shards / f"samples-{start:08d}-{start + len(shard):08d}.parquet", rows)
    _judge_shards(cfg, spec, shards, engines)
    samples = [r for f in _shard_files(shards).values() for r in rundir.read_parquet(f["judged"])]
    samples = _best_of_k(samples)
    kept = [s for s in samples if s["judge_verdict"] == "keep"]
    rundir.write_parquet(out / "aft.parquet", kept)
    rundir.write_parquet(out / "rejects.parquet", [s for s in samples if s["judge_verdict"] != "keep"])
    total = _covered(_shard_files(shards))
    history = (m or {}).get("history", []) + [{k: round(v, 2) if isinstance(v, float) else v for k, v in call.items()}]
    counts = _counts(cfg, samples, kept, total)
    rundir.write_json(out / rundir.MANIFEST, rundir.manifest(
        "generate_aft", key, {}, counts, started, generator=engines.generator_path,
        judge=engines.judge_path() if cfg.judge.enabled else None, history=history, decontamination=contamination))
    here = _counts(cfg, *_read_store(out, n), n) if total > n else counts
    return {"cached": False, **here, **{k: history[-1][k] for k in ("engine_seconds", "generated_tokens",
                                                                     "resumed_shards")}}


def _read_store(out: Path, n: int) -> Tuple[List[Dict], List[Dict]]:
    """(all samples, kept samples) of the first n prompts of a store entry."""
    kept = [r for r in rundir.read_parquet(out / "aft.parquet") if r.get("order", 0) < n]
    rejects = [r for r in rundir.read_parquet(out / "rejects.parquet") if r.get("order", 0) < n]
    return kept + rejects, kept


def _best_of_k(samples: List[Dict]) -> List[Dict]:
    """Of each prompt's samples that passed, keep the best; the others become `not_best_of_k` rejects."""
    best = {id(s) for s in judging.best_per_prompt([s for s in samples if s["judge_verdict"] == "keep"])}
    for s in samples:
        if s["judge_verdict"] == "keep" and id(s) not in best:
            s["judge_verdict"] = "not_best_of_k"
    return samples


def _counts(cfg, samples: List[Dict], kept: List[Dict], prompts: int) -> Dict[str, Any]:
    rejects = [s for s in samples if s["judge_verdict"] != "keep"]
    return {
        "prompts": prompts, "samples": len(samples), "kept": len(kept), "rejected": len(rejects),
        "reject_reasons": dict(Counter(r["judge_verdict"].split(":")[0] for r in rejects)),
        "judge_scores": dict(sorted(Counter(str(s.get("judge_score")) for s in samples).items())),
        # judged: scored by the model judge; unparsable: no score in any of its k answers; forced: scores
        # a local judge gave only when asked again after `Score:`
        "judged": sum(s.get("judge") is not None for s in samples),
        "judge_unparsable": sum(s["judge_verdict"] == "judge_unparsable" for s in samples),
        "judge_forced": sum(int(s.get("judge_forced") or 0) for s in samples),
        "cited_policy_ids": dict(Counter(i for s in kept for i in s["cited_policy_ids"])),
        "cot_format": _cot_mode(cfg),
        **_diversity(samples, kept),
    }


def _diversity(samples: List[Dict], kept: List[Dict]) -> Dict[str, Any]:
    """distinct-n, near-duplicate rate and category balance of the prompts used and of the kept CoTs
    and answers, and a one-line digest of them for the terminal."""
    prompts = list({s["prompt_id"]: s for s in samples}.values())
    d = {"prompts": diversity.report([p["prompt"] for p in prompts], [p.get("category", "") for p in prompts]),
         "cots": diversity.report([k["cot"] for k in kept], [k.get("category", "") for k in kept]),
         "responses": diversity.report([k["response"] for k in kept])}
    digest = "; ".join(f"{name} d2={v['distinct_2']:.2f} dup={v['near_duplicate_rate']:.2f}" for name, v in d.items() if v["n"])
    return {"diversity": d, "diversity_digest": digest}


def _cot_mode(cfg) -> str:
    return "native" if cfg.model.thinking_format == "reasoning_content" else "delimiter_two_call"


def _sample(cfg, spec: Spec, shard: List[Dict], generator: Backend, model_path: str, start: int) -> List[Dict]:
    """CoT + answer for every prompt of a shard (samples_per_prompt each), with the deterministic checks."""
    g = cfg.generator
    scopes = [spec.scope(p.get("category", ""), p.get("label_policy_ids") or []) if g.spec_scope == "category" else []
              for p in shard]
    base = [[{"role": "system", "content": generator_system_prompt(spec, scope)}, {"role": "user", "content": p["prompt"]}]
            for p, scope in zip(shard, scopes)]
    k = g.samples_per_prompt
    if _cot_mode(cfg) == "native":
        outs = generator.chat(base, Sampling(g.cot_max_tokens + g.response_max_tokens, g.temperature, g.top_p, k,
                                             g.seed), start)
        pairs = [(p, *_split_native(c)) for p, cs in zip(shard, outs) for c in cs]
        pair_scopes = [scope for scope, cs in zip(scopes, outs) for _ in cs]
    else:
        cot_outs = generator.chat([c + [{"role": "assistant", "content": cot_format.opening()}] for c in base],
                                  Sampling(g.cot_max_tokens, g.temperature, g.top_p, k, g.seed, list(g.cot_stop)), start)
        fits = [(b, c) for b, cs in zip(base, cot_outs) for c in cs]
        resp_outs = generator.chat([b + [{"role": "assistant", "content": cot_format.joined(c.text.strip())}]
                                    for b, c in fits],
                                   Sampling(g.response_max_tokens, g.temperature, g.top_p, 1, g.seed + 7919), start * k)
        pairs = [(p, _cot_of(c), r[0]) for p, (_, c), r in zip([p for p in shard for _ in range(k)], fits, resp_outs)]
        pair_scopes = [scope for scope in scopes for _ in range(k)]
    sampling = json.dumps({key: g[key] for key in ("temperature", "top_p", "cot_max_tokens", "response_max_tokens",
                                                   "samples_per_prompt", "seed", "cot_budget")}
                          | {"cot_stop": list(g.cot_stop)})
    rows = []
    for (p, (cot_text, cot_finish, cot_tokens), resp), scope in zip(pairs, pair_scopes):
        rec = dict(p, spec_scope=",".join(scope) or "full", cot=cot_text, response=resp.text.strip(),
                   generator=model_path, sampling=sampling,
                   cot_tokens=cot_tokens, response_tokens=resp.completion_tokens, cot_finish=cot_finish,
                   response_finish=resp.finish_reason, judge_score=None, judge=None, judge_rationale="",
                   judge_scores="[]", judge_criteria="{}", judge_forced=0, judge_unparsed=0)
        rec["cited_policy_ids"], invalid = spec.cited_ids(rec["cot"])
        rec["judge_verdict"] = judging.check(rec, invalid, g.cot_budget, cfg.judge) or "keep"
        rows.append(rec)
    return rows


def _cot_of(c: Completion) -> Tuple[str, str, int]:
    return c.text.strip(), c.finish_reason, c.completion_tokens


def _split_native(c: Completion) -> Tuple[Tuple[str, str, int], Completion]:
    """(CoT, its finish, tokens) and the answer from one native-thinking completion."""
    if c.reasoning is not None:
        cot = (c.reasoning.strip(), "stop", 0)
        return cot, c
    if c.finish_reason == "overflow":
        return ("", "overflow", 0), c
    if cot_format.CLOSE not in c.text:
        return ("", "length" if c.finish_reason == "length" else "unparsed", c.completion_tokens), c
    head, _, answer = c.text.partition(cot_format.CLOSE)
    cot = head.replace(cot_format.OPEN, "", 1).strip()
    return (cot, "stop", 0), Completion(answer.strip(), c.prompt_tokens, c.completion_tokens, c.finish_reason,
                                        c.stop_reason)


def _judge_shards(cfg, spec: Spec, shards: Path, engines: "_Engines") -> None:
    """Judge every generated shard not judged yet: samples-X-Y.parquet becomes judged-X-Y.parquet."""
    j = cfg.judge
    for (start, stop), files in _shard_files(shards).items():
        if "judged" in files:
            if "samples" in files:  # judged, then killed before the samples file went
                files["samples"].unlink()
            continue
        chunk = rundir.read_parquet(files["samples"])
        todo = [s for s in chunk if s["judge_verdict"] == "keep"]
        if j.enabled and todo:
            backend = engines.judge()
            verdicts = judging.judgements(spec, todo, backend, j, engines.judge_backend() != "openai",
                                          start * cfg.generator.samples_per_prompt)
            judging.apply_judgements(todo, verdicts, j.threshold, engines.judge_path())
        rundir.write_parquet(shards / f"judged-{start:08d}-{stop:08d}.parquet", chunk)
        files["samples"].unlink()
