"""`dacli generate`: deliberative CoT data (and, for msm_* methods, spec documents).

Recipe: load spec + prompts → the generator, with the spec in its system prompt, writes a CoT inside
<think>…</think> and then an answer → deterministic checks and the spec-aware judge filter them →
aft.parquet (kept), rejects.parquet (with reasons), manifest.json. The CoT and the answer are written
in two calls, the second continuing after `</think>`, so the split never depends on the model closing
its own tags; a CoT that runs out of tokens is a reject, not training data.
"""
import json
import re
import time
from collections import Counter
from typing import Any, Dict, List, Optional, Tuple

from omegaconf import OmegaConf

from . import cot as cot_format
from . import rundir
from .backends import Backend, Sampling, open_backend
from .errors import DacliError
from .models import resolve
from .prompts import load_prompts
from .spec import Spec, generator_system_prompt, judge_system_prompt, load_spec, msm_document_prompt

def _container(cfg, *keys: str) -> Dict[str, Any]:
    return {k: OmegaConf.to_container(cfg[k], resolve=True) for k in keys}


def aft_subset(cfg) -> Dict[str, Any]:
    return _container(cfg, "model", "spec", "data", "generator", "judge")


def msm_subset(cfg) -> Dict[str, Any]:
    return _container(cfg, "model", "spec", "generator", "msm")


def run(cfg) -> Dict[str, Any]:
    if cfg.generator.cot_budget not in ("reject", "force"):
        raise DacliError(f"generator.cot_budget must be reject or force, got '{cfg.generator.cot_budget}'")
    spec = load_spec(cfg.spec)
    prompts = load_prompts(cfg.data)
    need_msm = "midtrain" in cfg.method.stages
    aft_out, msm_out = rundir.aft_data_dir(cfg), rundir.msm_data_dir(cfg)
    todo_aft = not rundir.is_fresh(aft_out, aft_subset(cfg), {})
    todo_msm = need_msm and not rundir.is_fresh(msm_out, msm_subset(cfg), {})
    summary: Dict[str, Any] = {"aft": {"dir": str(aft_out), "cached": not todo_aft}}
    if need_msm:
        summary["msm"] = {"dir": str(msm_out), "cached": not todo_msm}
    if not (todo_aft or todo_msm):
        return summary
    model_path = cfg.generator.model_path or resolve(cfg.model)
    generator = open_backend(cfg.generator, model_path, cfg.model)
    try:
        if todo_aft:
            summary["aft"].update(_generate_aft(cfg, spec, prompts, generator, model_path))
        if todo_msm:
            summary["msm"].update(_generate_msm(cfg, spec, generator, model_path))
    finally:
        generator.close()
    return summary


def _generate_aft(cfg, spec: Spec, prompts: List[Dict], generator: Backend, model_path: str) -> Dict[str, Any]:
    started = time.time()
    g = cfg.generator
    system = generator_system_prompt(spec)
    base = [[{"role": "system", "content": system}, {"role": "user", "content": p["prompt"]}] for p in prompts]
    cot_outs = generator.chat([c + [{"role": "assistant", "content": cot_format.opening()}] for c in base],
                              Sampling(g.cot_max_tokens, g.temperature, g.top_p, g.samples_per_prompt, g.seed,
                                       list(g.cot_stop)))
    samples = [(p, c) for p, outs in zip(prompts, cot_outs) for c in outs]
    # Second call: the answer, continuing after the closed CoT (one answer per CoT sample).
    conts = [b + [{"role": "assistant", "content": cot_format.joined(c.text.strip())}]
             for b, outs in zip(base, cot_outs) for c in outs]
    resp_outs = generator.chat(conts, Sampling(g.response_max_tokens, g.temperature, g.top_p, 1, g.seed + 7919))
    sampling = json.dumps({k: g[k] for k in ("temperature", "top_p", "cot_max_tokens", "response_max_tokens",
                                              "samples_per_prompt", "seed", "cot_budget")}
                          | {"cot_stop": list(g.cot_stop)})
    records, rejects = [], []
    for (p, cot), (resp,) in zip(samples, resp_outs):
        rec = dict(p, cot=cot.text.strip(), response=resp.text.strip(), generator=model_path, sampling=sampling,
                   cot_tokens=cot.completion_tokens, response_tokens=resp.completion_tokens,
                   cot_finish=cot.finish_reason, response_finish=resp.finish_reason)
        rec["cited_policy_ids"], invalid = spec.cited_ids(rec["cot"])
        reason = _check(rec, invalid, g.cot_budget, cfg.judge)
        (rejects if reason else records).append(dict(rec, reject_reason=reason) if reason else rec)

    judge_name = None
    if cfg.judge.enabled and records:
        judge_name, judge = _open_judge(cfg, generator, model_path)
        try:
            scores = _judge(spec, records, judge, cfg.judge)
        finally:
            if judge is not generator:
                judge.close()
        kept = []
        for rec, score in zip(records, scores):
            rec.update(judge_score=score, judge=judge_name)
            if score is None:
                rejects.append(dict(rec, reject_reason="judge_unparsable"))
            elif score < cfg.judge.threshold:
                rejects.append(dict(rec, reject_reason="judge_below_threshold"))
            else:
                kept.append(rec)
        records = kept
    best = _best_per_prompt(records)
    counts = {
        "prompts": len(prompts), "samples": len(samples), "kept": len(best), "rejected": len(rejects),
        "not_best_of_k": len(records) - len(best),
        "reject_reasons": dict(Counter(r["reject_reason"] for r in rejects)),
        "judge_scores": dict(Counter(str(r.get("judge_score")) for r in records + rejects)),
        "tokens": {"cot": sum(c.completion_tokens for _, c in samples),
                   "response": sum(r[0].completion_tokens for r in resp_outs)},
    }
    out = rundir.aft_data_dir(cfg)
    with rundir.atomic_dir(out) as tmp:
        _write_parquet(tmp / "aft.parquet", best)
        _write_parquet(tmp / "rejects.parquet", rejects)
        rundir.write_json(tmp / rundir.MANIFEST, rundir.manifest("generate_aft", aft_subset(cfg), {}, counts, started,
                                                                 generator=model_path, judge=judge_name))
    return counts


def _check(rec, invalid_ids: List[str], cot_budget: str, j) -> Optional[str]:
    """The deterministic checks that need no model; the first failure is the reject reason."""
    if rec["cot_finish"] == "length" and cot_budget != "force":
        return "cot_truncated"
    if not rec["cot"]:
        return "empty_cot"
    if cot_format.CLOSE in rec["response"] or cot_format.OPEN in rec["response"]:
        return "response_has_think_tags"
    if rec["response_finish"] == "length" and not j.allow_truncated_response:
        return "response_truncated"
    if not rec["response"]:
        return "empty_response"
    if j.require_valid_policy_ids and invalid_ids:
        return "unknown_policy_ids:" + ",".join(invalid_ids)
    return None


def _open_judge(cfg, generator: Backend, gen_path: str) -> Tuple[str, Backend]:
    j = cfg.judge
    path = j.model_path or gen_path
    if j.backend == cfg.generator.backend and path == gen_path:
        return path, generator  # same engine and weights: do not load the model twice
    return path, open_backend(j, path, cfg.model)


def _judge(spec: Spec, records: List[Dict], judge: Backend, j) -> List[Optional[float]]:
    system = judge_system_prompt(spec)
    convs = [[{"role": "system", "content": system},
              {"role": "user", "content": f"Request:\n{r['prompt']}\n\nReasoning:\n{r['cot']}\n\nAnswer:\n{r['response']}"},
              {"role": "assistant", "content": "Score (0-10): "}] for r in records]
    outs = judge.chat(convs, Sampling(j.max_tokens, 0.0, 1.0, 1, j.seed))
    return [_parse_score(o[0].text) for o in outs]


def _parse_score(text: str) -> Optional[float]:
    m = re.match(r"\s*(\d+(?:\.\d+)?)", text)
    if not m:
        return None
    value = float(m.group(1))
    return value if 0 <= value <= 10 else None


def _best_per_prompt(records: List[Dict]) -> List[Dict]:
    """Best-of-k: with several samples per prompt, keep the highest judged one (first on ties)."""
    best: Dict[str, Dict] = {}
    for r in records:
        cur = best.get(r["prompt_id"])
        if cur is None or (r.get("judge_score") or 0) > (cur.get("judge_score") or 0):
            best[r["prompt_id"]] = r
    return list(best.values())


def _generate_msm(cfg, spec: Spec, generator: Backend, model_path: str) -> Dict[str, Any]:
    started = time.time()
    m = cfg.msm
    jobs = [(p, m.genres[(i + k) % len(m.genres)]) for i, p in enumerate(spec.policies)
            for k in range(m.docs_per_policy)]
    convs = [[{"role": "user", "content": msm_document_prompt(spec, p, genre)}] for p, genre in jobs]
    outs = generator.chat(convs, Sampling(m.max_tokens, m.temperature, 0.95, 1, cfg.generator.seed + 104729))
    docs, seen = [], set()
    for (p, genre), (o,) in zip(jobs, outs):
        text = o.text.strip()
        key = " ".join(text.lower().split())
        if text and key not in seen:
            seen.add(key)
            docs.append({"text": text, "genre": genre, "policy_ids": [p.id], "tokens": o.completion_tokens})
    counts = {"requested": len(jobs), "kept": len(docs), "tokens": sum(d["tokens"] for d in docs),
              "genres": dict(Counter(d["genre"] for d in docs)),
              "policies": dict(Counter(d["policy_ids"][0] for d in docs))}
    out = rundir.msm_data_dir(cfg)
    with rundir.atomic_dir(out) as tmp:
        _write_parquet(tmp / "msm_docs.parquet", docs)
        rundir.write_json(tmp / rundir.MANIFEST, rundir.manifest("generate_msm", msm_subset(cfg), {}, counts, started,
                                                                 generator=model_path))
    return counts


def _write_parquet(path, rows: List[Dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows) if rows else pa.table({"prompt_id": pa.array([], pa.string())})
    pq.write_table(table, path)
