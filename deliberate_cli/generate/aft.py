"""The AFT data: the generator writes a CoT and an answer for each prompt with the spec in context,
deterministic checks reject what no judge needs to see, the spec-aware judge scores the rest, and
best-of-k keeps one sample per prompt.

`data.n_samples` counts kept examples, the MSM paper's axis: prompts are taken in the set's order, in
rounds, until the judge has kept that many; each round after the first asks for as many prompts as the
keep rate so far says the missing examples need. A set (or data.max_prompts) that runs out first ends
with one line: how many were kept, and the judge's reasons for the rest.

The data are a store entry shared by every method and count: `shards/samples-*` as each range of
prompts is sampled, `shards/judged-*` once the judge has scored it, then aft.parquet (kept) and
rejects.parquet (with reasons) over all of them, and the manifest. A killed run resumes at the first
missing shard; a larger `data.n_samples` extends the entry, a smaller one reads a prefix of it (the
first n kept examples in prompt order, so every count of a sweep trains on a prefix of the next).

CoT calls (`generator.cot_calls`): two by default, the second continuing after `</think>`, so the split
never depends on the model closing its own tag. One call when the trained model thinks natively
(`model.thinking_format=reasoning_content`: the CoT is the server's reasoning field or the model's own
<think> block) or the generator is a hosted model (`generator.model`, which takes no assistant prefix:
the CoT is the <think> block the system prompt asks for). How the student is trained on the CoT follows
its own format either way (train/data.py).
"""
import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from .. import cot as cot_format
from .. import diversity, progress, rundir
from .. import judge as judging
from ..backends import Backend, Completion, Sampling
from ..config import declared
from ..errors import DacliError
from ..shards import Shards
from ..spec import Spec, generator_system_prompt
from ..spec import identity as spec_identity
from ..store import Entry
from .engines import Engines


# The first n prompts of the run's prompt set, in its order (fewer where the set ends).
Prompts = Callable[[int], List[Dict]]


def key(cfg, prompts_sha256: str) -> Dict[str, Any]:
    """What the AFT data depend on. Not `data.n_samples`: every count is a prefix of one dataset; nor
    `max_prompts`, `select`, `candidates`: they bound or choose, they do not change a prompt's samples; nor
    `data.decontam_threshold`: it decides whether generate runs, not what it writes; nor `data.mix`:
    it acts at training time; nor `data.generated`: a generated pool's identity is in `prompts_sha256`;
    nor any runtime setting (config.declared)."""
    k = declared(cfg, "model", "data", "generator", "judge")
    for later in ("n_samples", "max_prompts", "select", "candidates", "decontam_threshold", "mix", "generated",
                  "name"):
        k["data"].pop(later, None)
    if not k["data"].get("given_responses"):
        k["data"].pop("given_responses", None)  # keys made before the setting existed stay valid
    return {**k, "spec": spec_identity(cfg.spec), "prompts_sha256": prompts_sha256}


def wanted(cfg) -> int:
    """Examples to keep: data.n_samples, or the candidates a diverse selection chooses them from."""
    return max(cfg.data.n_samples, cfg.data.candidates or 0) if cfg.data.select == "diverse" else cfg.data.n_samples


def entry(cfg, prompts_id: str, n: int) -> Entry:
    """The store entry of the AFT data, holding at least n kept examples, or all a finite source gave."""
    k, bound = key(cfg, prompts_id), cfg.data.max_prompts

    def covers(m: Dict[str, Any]) -> bool:
        c = m["counts"]
        return c["kept"] >= n or bool(c.get("source_exhausted")) or bool(bound and c["prompts"] >= bound)

    return Entry(rundir.store_path(cfg, "aft", k), "generate_aft", k, covers=covers)


def ensure(cfg, spec: Spec, prompts: Prompts, prompts_id: str, engines: Engines,
           contamination: Dict[str, Any]) -> Dict[str, Any]:
    """Make the store entry hold `wanted(cfg)` kept examples (sampling prompts in the set's order until
    it does), generating only what it lacks, and link the run dir to it. The summary counts the prompts
    up to the one that gave the last example wanted. Too few kept: one line, after the entry is saved.

    Request seeds follow each prompt's position in the order, so a prompt's samples do not depend on
    which run generated them (with vLLM and HTTP; transformers seeds per batch, see docs/configs.md).
    """
    n = wanted(cfg)
    e = entry(cfg, prompts_id, n)
    if cfg.data.given_responses:
        build = lambda out: _given(cfg, spec, prompts(n), out, contamination)  # noqa: E731
    else:
        build = lambda out: _generate(cfg, spec, prompts, n, engines, out, contamination, e.found())  # noqa: E731
    built = e.materialise(build, link=(cfg, "data/aft"))
    c = built.manifest["counts"]
    if c["kept"] < n:
        raise DacliError(short_of(cfg, c, n, e.path))
    here = _counts(cfg, *_read_store(e.path, n), None) if c["kept"] > n else c
    this_call = {} if built.cached else built.manifest.get("history", [{}])[-1]  # what this run generated
    return {"dir": str(e.path), "cached": built.cached, **here,
            **{k: this_call.get(k) for k in ("engine_seconds", "generated_tokens", "tokens_per_second", "resumed_shards")
               if k in this_call}}


def short_of(cfg, counts: Dict[str, Any], n: int, where: Path) -> str:
    """The one line for AFT data that kept fewer examples than a run asks for: how many, why the rest
    were rejected, and what would give more."""
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(counts["reject_reasons"].items(), key=lambda kv: -kv[1]))
    bound = cfg.data.max_prompts
    ran_out = (f"data.max_prompts={bound} reached" if bound and counts["prompts"] >= bound
               else "the prompt set is used up")
    return (f"kept {counts['kept']} of the {n} examples asked for (data.n_samples) from {counts['prompts']} prompts: "
            f"{ran_out}; rejected: {reasons or 'none'} (see {where}/rejects.parquet); lower data.n_samples, give "
            f"more prompts (data.source, data.generated.pool, data.max_prompts) or loosen the judge (judge.threshold)")


def more_prompts(n: int, kept: int, covered: int) -> int:
    """Prompts to add for the n - kept examples still missing: n in the first round; then as the keep rate
    so far says, with 15% to spare, so that a third round is rare; while fewer than ten were kept (too few
    to trust a rate), the missing count or as many prompts as were used, whichever is more."""
    if covered == 0:
        return n
    if kept < 10:
        return max(n - kept, covered)
    return max(n - kept, math.ceil((n - kept) * covered / kept * 1.15))


def _generate(cfg, spec: Spec, prompts: Prompts, n: int, engines: Engines, out: Path,
              contamination: Dict[str, Any], previous: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Sample, check and judge prompts in rounds until n examples are kept or the prompts run out; the
    manifest fields of the whole."""
    g, bound = cfg.generator, cfg.data.max_prompts
    shards = Shards(out / "shards")
    call = {"from_prompt": shards.covered("samples", "judged"), "engine_seconds": 0.0, "generated_tokens": 0,
            "resumed_shards": len(shards.ranges("samples")), "rounds": 0, "started": time.time()}

    def sample(batch: List[Dict], start: int, stop: int) -> List[Dict]:
        generator = engines.generator()  # loaded on first use, outside the timed part
        t0 = time.time()
        rows = _sample(cfg, spec, batch[start:stop], generator, engines.generator_path, start)
        call["engine_seconds"] += time.time() - t0
        call["generated_tokens"] += sum(r["cot_tokens"] + r["response_tokens"] for r in rows)
        advance(stop - start, passed_checks=sum(r["judge_verdict"] == "keep" for r in rows))
        return rows

    exhausted = False
    while True:
        pending = [r for r, files in shards.ranges("samples", "judged").items() if "judged" not in files]
        if pending:  # sampled by this round or by a killed run, not judged yet
            with progress.track("shards judged", len(pending)) as advance:
                shards.transform("samples", "judged",
                                 lambda rows, start: _judge(cfg, spec, rows, start, engines, advance))
        covered = shards.covered("judged")
        kept = len({r["prompt_id"] for r in shards.read("judged") if r["judge_verdict"] == "keep"})
        upto = covered + more_prompts(n, kept, covered)
        if kept >= n or exhausted or (bound and covered >= bound):
            break
        batch = prompts(min(upto, bound) if bound else upto)
        if len(batch) <= covered:
            exhausted = True
            break
        exhausted = len(batch) < upto and not (bound and len(batch) >= bound)
        call["rounds"] += 1
        with progress.track("prompts sampled", len(batch) - covered) as advance:
            shards.fill("samples", g.shard_size, lambda start, stop: sample(batch, start, stop), total=len(batch),
                        also=("judged",))
    call["to_prompt"] = covered
    samples = _best_of_k(shards.read("judged"))
    kept_rows = [s for s in samples if s["judge_verdict"] == "keep"]
    rundir.write_parquet(out / "aft.parquet", kept_rows)
    rundir.write_parquet(out / "rejects.parquet", [s for s in samples if s["judge_verdict"] != "keep"])
    if call["engine_seconds"] > 0:
        call["tokens_per_second"] = call["generated_tokens"] / call["engine_seconds"]
    history = (previous or {}).get("history", []) + [
        {k: round(v, 2) if isinstance(v, float) else v for k, v in call.items()}]
    counts = _counts(cfg, samples, kept_rows, covered)
    counts["source_exhausted"] = exhausted and len(kept_rows) < n
    return {"counts": counts, "generator": engines.generator_path,
            "judge": engines.judge_path() if cfg.judge.enabled else None, "history": history,
            "decontamination": contamination}


def _given(cfg, spec: Spec, prompts: List[Dict], out: Path, contamination: Dict[str, Any]) -> Dict[str, Any]:
    """data.given_responses: the prompt set's own answers (and CoTs) are the AFT data, kept as they are:
    no generator, no judge (the MSM paper's opaque AFT set trains every model on the same answers)."""
    empty = [p["prompt_id"] for p in prompts if not p["response"]]
    if empty:
        raise DacliError(f"data.given_responses=true but {len(empty)} prompt(s) have no response, e.g. {empty[0]}")
    rows = [dict(p, spec_scope="given", generator="given", sampling="{}", cot_tokens=0, response_tokens=0,
                 cot_finish="given", response_finish="given", judge_score=None, judge=None, judge_rationale="",
                 judge_scores="[]", judge_criteria="{}", judge_forced=0, judge_unparsed=0, judge_verdict="keep",
                 cited_policy_ids=spec.cited_ids(p["cot"])[0]) for p in prompts]
    rundir.write_parquet(out / "aft.parquet", rows)
    rundir.write_parquet(out / "rejects.parquet", [])
    counts = dict(_counts(cfg, rows, rows, len(rows)), source_exhausted=len(rows) < wanted(cfg))  # all are kept
    return {"counts": counts, "generator": "given", "decontamination": contamination}


def _read_store(out: Path, n: int) -> Tuple[List[Dict], List[Dict]]:
    """(all samples, kept samples) of a store entry's prompts up to the one that gave its n-th kept example."""
    kept = first_kept(rundir.read_parquet(out / "aft.parquet"), n)
    last = kept[-1].get("order", 0) if kept else -1
    rejects = [r for r in rundir.read_parquet(out / "rejects.parquet") if r.get("order", 0) <= last]
    return kept + rejects, kept


def first_kept(kept: List[Dict], n: int) -> List[Dict]:
    """The first n kept examples in prompt order: what a run with data.n_samples=n trains on."""
    return sorted(kept, key=lambda r: r.get("order", 0))[:n]


def _best_of_k(samples: List[Dict]) -> List[Dict]:
    """Of each prompt's samples that passed, keep the best; the others become `not_best_of_k` rejects."""
    best = {id(s) for s in judging.best_per_prompt([s for s in samples if s["judge_verdict"] == "keep"])}
    for s in samples:
        if s["judge_verdict"] == "keep" and id(s) not in best:
            s["judge_verdict"] = "not_best_of_k"
    return samples


def _counts(cfg, samples: List[Dict], kept: List[Dict], prompts: Optional[int]) -> Dict[str, Any]:
    """The counts of these samples (of `prompts` prompts; None: the prompts they hold)."""
    rejects = [s for s in samples if s["judge_verdict"] != "keep"]
    return {
        "prompts": len({s["prompt_id"] for s in samples}) if prompts is None else prompts, "samples": len(samples), "kept": len(kept), "rejected": len(rejects),
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
    """native (one call, a thinking model), one_call (one call, the <think> block a hosted generator
    writes), or delimiter_two_call."""
    calls = cfg.generator.cot_calls
    if calls == "two" or (calls == "auto" and not cfg.generator.model and cfg.model.thinking_format != "reasoning_content"):
        return "delimiter_two_call"
    return "native" if cfg.model.thinking_format == "reasoning_content" else "one_call"


def _sample(cfg, spec: Spec, shard: List[Dict], generator: Backend, model_path: str, start: int) -> List[Dict]:
    """CoT + answer for every prompt of a shard (samples_per_prompt each), with the deterministic checks."""
    g = cfg.generator
    scopes = [spec.scope(p.get("category", ""), p.get("label_policy_ids") or []) if g.spec_scope == "category" else []
              for p in shard]
    base = [[{"role": "system", "content": generator_system_prompt(spec, scope)}, {"role": "user", "content": p["prompt"]}]
            for p, scope in zip(shard, scopes)]
    k = g.samples_per_prompt
    if _cot_mode(cfg) != "delimiter_two_call":
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


def _judge(cfg, spec: Spec, chunk: List[Dict], start: int, engines: Engines, advance) -> List[Dict]:
    """One sampled shard, judged: the samples that passed the deterministic checks get the judge's verdict."""
    j = cfg.judge
    todo = [s for s in chunk if s["judge_verdict"] == "keep"]
    if j.enabled and todo:
        verdicts = judging.judgements(spec, todo, engines.judge(), j, engines.judge_continues(),
                                      start * cfg.generator.samples_per_prompt)
        judging.apply_judgements(todo, verdicts, j.threshold, engines.judge_path())
    advance(1, kept=sum(s["judge_verdict"] == "keep" for s in chunk))
    return chunk
