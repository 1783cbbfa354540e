"""`dacli generate`: deliberative CoT data (and, for msm_* methods, spec documents).

Recipe: load spec + prompts → per shard of prompts, the generator (spec in its system prompt)
writes a CoT and an answer → deterministic checks → per shard, the spec-aware judge scores what
passed → best-of-k → aft.parquet (kept), rejects.parquet (with reasons), manifest.json.

CoT formats: with `model.thinking_format=delimiter` the CoT and the answer come from two calls, the
second continuing after `</think>`, so the split never depends on the model closing its own tag.
With `reasoning_content` (Qwen3 and other native thinkers) one call is made and the CoT is taken
from the server's reasoning field or the model's own <think> block. Shards are written as they
finish; a killed run resumes at the first missing shard, and no record is lost or duplicated.
"""
import json
import time
from collections import Counter
from typing import Any, Dict, List, Tuple

from omegaconf import OmegaConf

from . import cot as cot_format
from . import judge as judging
from . import rundir
from .backends import Backend, Completion, Sampling, open_backend
from .errors import DacliError
from .models import resolve
from .msm import generate_docs
from .prompts import load_prompts
from .spec import Spec, generator_system_prompt, load_spec


def _container(cfg, *keys: str) -> Dict[str, Any]:
    return {k: OmegaConf.to_container(cfg[k], resolve=True) for k in keys}


def aft_subset(cfg) -> Dict[str, Any]:
    return _container(cfg, "model", "spec", "data", "generator", "judge")


def msm_subset(cfg) -> Dict[str, Any]:
    return _container(cfg, "model", "spec", "generator", "msm")


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
        return self.cfg.judge.model_path or self.generator_path

    def judge(self) -> Backend:
        j = self.cfg.judge
        same = (j.backend, self.judge_path()) == (self.cfg.generator.backend, self.generator_path)
        return self._get(self.cfg.generator if same else j, self.judge_path())

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
        self.current, self.key = None, None


def run(cfg) -> Dict[str, Any]:
    if cfg.generator.cot_budget not in ("reject", "force"):
        raise DacliError(f"generator.cot_budget must be reject or force, got '{cfg.generator.cot_budget}'")
    spec = load_spec(cfg.spec)
    prompts = load_prompts(cfg.data)
    aft_out, msm_out = rundir.aft_data_dir(cfg), rundir.msm_data_dir(cfg)
    summary: Dict[str, Any] = {"aft": {"dir": str(aft_out), "cached": rundir.is_fresh(aft_out, aft_subset(cfg), {})}}
    if "midtrain" in cfg.method.stages:
        summary["msm"] = {"dir": str(msm_out), "cached": rundir.is_fresh(msm_out, msm_subset(cfg), {})}
    engines = _Engines(cfg)
    try:
        if not summary["aft"]["cached"]:
            summary["aft"].update(_aft(cfg, spec, prompts, engines))
        if "msm" in summary and not summary["msm"]["cached"]:
            started, subset = time.time(), msm_subset(cfg)
            with rundir.atomic_dir(msm_out, resume={"config_hash": rundir.config_hash(subset)}) as tmp:
                counts = generate_docs(cfg, spec, engines.generator, tmp, engines.generator_path)
                rundir.write_json(tmp / rundir.MANIFEST, rundir.manifest(
                    "generate_msm", subset, {}, counts, started, generator=engines.generator_path))
            summary["msm"].update(counts)
    finally:
        engines.close()
    return summary


def _shards(prompts: List[Dict], size: int) -> List[Tuple[int, List[Dict]]]:
    return [(start, prompts[start:start + size]) for start in range(0, len(prompts), size)]


def _aft(cfg, spec: Spec, prompts: List[Dict], engines: _Engines) -> Dict[str, Any]:
    started, subset, g, j = time.time(), aft_subset(cfg), cfg.generator, cfg.judge
    out = rundir.aft_data_dir(cfg)
    timing = {"engine_seconds": 0.0, "generated_tokens": 0, "resumed_shards": 0}
    with rundir.atomic_dir(out, resume={"config_hash": rundir.config_hash(subset)}) as tmp:
        samples: List[Dict] = []
        for start, shard in _shards(prompts, g.shard_size):
            path = tmp / f"samples-{start:08d}.parquet"
            if path.exists():
                timing["resumed_shards"] += 1
            else:
                generator = engines.generator()  # loaded on first use, outside the timed part
                t0 = time.time()
                rows = _sample(cfg, spec, shard, generator, engines.generator_path, start)
                timing["engine_seconds"] += time.time() - t0
                timing["generated_tokens"] += sum(r["cot_tokens"] + r["response_tokens"] for r in rows)
                rundir.write_parquet(path, rows)
            samples += rundir.read_parquet(path)
        if j.enabled:
            samples = _judge_shards(cfg, spec, samples, engines, tmp)
        kept = judging.best_per_prompt([s for s in samples if s["judge_verdict"] == "keep"])
        best = {id(s) for s in kept}
        for s in samples:
            if s["judge_verdict"] == "keep" and id(s) not in best:
                s["judge_verdict"] = "not_best_of_k"
        rejects = [s for s in samples if s["judge_verdict"] != "keep"]
        counts = {
            "prompts": len(prompts), "samples": len(samples), "kept": len(kept), "rejected": len(rejects),
            "reject_reasons": dict(Counter(r["judge_verdict"].split(":")[0] for r in rejects)),
            "judge_scores": dict(sorted(Counter(str(s.get("judge_score")) for s in samples).items())),
            "cited_policy_ids": dict(Counter(i for s in kept for i in s["cited_policy_ids"])),
            "cot_format": _cot_mode(cfg),
            **{k: round(v, 2) if isinstance(v, float) else v for k, v in timing.items()},
        }
        rundir.write_parquet(tmp / "aft.parquet", kept)
        rundir.write_parquet(tmp / "rejects.parquet", rejects)
        for shard in list(tmp.glob("samples-*.parquet")) + list(tmp.glob("judged-*.parquet")):
            shard.unlink()
        rundir.write_json(tmp / rundir.MANIFEST, rundir.manifest(
            "generate_aft", subset, {}, counts, started, generator=engines.generator_path,
            judge=engines.judge_path() if j.enabled else None))
    return counts


def _cot_mode(cfg) -> str:
    return "native" if cfg.model.thinking_format == "reasoning_content" else "delimiter_two_call"


def _sample(cfg, spec: Spec, shard: List[Dict], generator: Backend, model_path: str, start: int) -> List[Dict]:
    """CoT + answer for every prompt of a shard (samples_per_prompt each), with the deterministic checks."""
    g = cfg.generator
    base = [[{"role": "system", "content": generator_system_prompt(spec)}, {"role": "user", "content": p["prompt"]}]
            for p in shard]
    k = g.samples_per_prompt
    if _cot_mode(cfg) == "native":
        outs = generator.chat(base, Sampling(g.cot_max_tokens + g.response_max_tokens, g.temperature, g.top_p, k,
                                             g.seed), start)
        pairs = [(p, *_split_native(c)) for p, cs in zip(shard, outs) for c in cs]
    else:
        cot_outs = generator.chat([c + [{"role": "assistant", "content": cot_format.opening()}] for c in base],
                                  Sampling(g.cot_max_tokens, g.temperature, g.top_p, k, g.seed, list(g.cot_stop)), start)
        fits = [(b, c) for b, cs in zip(base, cot_outs) for c in cs]
        resp_outs = generator.chat([b + [{"role": "assistant", "content": cot_format.joined(c.text.strip())}]
                                    for b, c in fits],
                                   Sampling(g.response_max_tokens, g.temperature, g.top_p, 1, g.seed + 7919), start * k)
        pairs = [(p, _cot_of(c), r[0]) for p, (_, c), r in zip([p for p in shard for _ in range(k)], fits, resp_outs)]
    sampling = json.dumps({key: g[key] for key in ("temperature", "top_p", "cot_max_tokens", "response_max_tokens",
                                                   "samples_per_prompt", "seed", "cot_budget")}
                          | {"cot_stop": list(g.cot_stop)})
    rows = []
    for p, (cot_text, cot_finish, cot_tokens), resp in pairs:
        rec = dict(p, cot=cot_text, response=resp.text.strip(), generator=model_path, sampling=sampling,
                   cot_tokens=cot_tokens, response_tokens=resp.completion_tokens, cot_finish=cot_finish,
                   response_finish=resp.finish_reason, judge_score=None, judge=None)
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


def _judge_shards(cfg, spec: Spec, samples: List[Dict], engines: _Engines, tmp) -> List[Dict]:
    """Model scores for the samples that passed the checks, one shard file per generation shard."""
    j, size = cfg.judge, cfg.generator.shard_size * cfg.generator.samples_per_prompt
    judged: List[Dict] = []
    for start in range(0, len(samples), size):
        path = tmp / f"judged-{start:08d}.parquet"
        if not path.exists():
            chunk = [dict(s) for s in samples[start:start + size]]
            todo = [s for s in chunk if s["judge_verdict"] == "keep"]
            if todo:
                scores = judging.model_scores(spec, todo, engines.judge(), j, start)
                judging.apply_scores(todo, scores, j.threshold, engines.judge_path())
            rundir.write_parquet(path, chunk)
        judged += rundir.read_parquet(path)
    return judged

