"""`data.source=generated`: training prompts written by the generator from the spec.

Recipe (the MSM paper's App. B pipeline, with deliberative alignment's categories):
spec → categories (the spec's own `categories`, each with its policies) → conversation domains
per category (one list request each, stored as domains.parquet) → user prompts, one request per
(domain, round) asking for a handful of messages tagged [help]/[partial]/[refuse] → near-duplicates
dropped (MinHash over word 3-grams), and any prompt that overlaps an eval's text dropped
(decontam.py) → the pool, in request order.

Requests go round-robin over the domains, so any prefix of the pool is spread over categories and
domains alike. The pool is a store entry shared by every method and count: request shards are
written as they finish (a killed run resumes), and a larger count extends it with further rounds,
so the first N prompts never change once written.
"""
import math
import re
import time
from collections import Counter
from typing import Any, Dict, List, Tuple

from .. import decontam, diversity, progress, rundir
from ..backends import Sampling
from ..config import declared
from ..errors import DacliError
from ..shards import Shards
from ..spec import Spec
from ..spec import identity as spec_identity
from ..store import Entry
from . import lists
from .dedup import NearDuplicates
from .engines import model_identity

_BEHAVIOUR = {"help": "comply", "comply": "comply", "partial": "safe-complete", "refuse": "refuse"}


def categories(spec: Spec) -> List[Tuple[str, List[str]]]:
    """(category, its policy ids) in the spec's order; a spec without categories: one per policy."""
    names = list(dict.fromkeys(c for p in spec.policies for c in p.categories))
    if not names:
        return [(p.id, [p.id]) for p in spec.policies]
    return [(c, [p.id for p in spec.policies if c in p.categories]) for c in names]


def key(cfg) -> Dict[str, Any]:
    """What the pool depends on: not how many prompts are asked for (a larger count extends it), nor any
    runtime setting (data.generated.pool, max_requests, shard_size: config.declared)."""
    k = declared(cfg, "model", "data.generated", "data.decontam_threshold")
    return {"model": k["model"], "spec": spec_identity(cfg.spec), "generator": model_identity(cfg.generator),
            "generated": k["data.generated"], "decontam_threshold": k["data.decontam_threshold"]}


def _policies(spec: Spec, ids: List[str]) -> str:
    return "\n".join(spec.render_policy(spec.get(i)) for i in ids)


def _domain_request(spec: Spec, ids: List[str], n: int) -> str:
    return (f"An AI assistant follows these policies:\n{_policies(spec, ids)}\n\n"
            f"List {n} different settings in which people bring the assistant requests where these policies "
            "matter: professions, hobbies, life situations, kinds of task. One per line, numbered, a few words "
            "each. Write nothing else.")


def _prompt_request(spec: Spec, ids: List[str], domain: str, n: int) -> str:
    return (f"You are helping to test an AI assistant that follows these policies:\n{_policies(spec, ids)}\n\n"
            f"Write {n} different messages that a user might send to the assistant in this setting: {domain}.\n"
            "About half should be requests the assistant should simply help with; the rest requests it should "
            "refuse, or help with only in part, under the policies. Vary the length, tone and detail, and write "
            "each as the user would, in their own words.\n"
            "Put each on its own line, numbered, starting with [help], [partial] or [refuse]. Write nothing else.")


def _tagged(item: str) -> Tuple[str, str]:
    """(expected behaviour or "", the message) of one `[help] message` line."""
    m = re.match(r"^\s*[\[(]\s*(help|comply|partial|refuse)\s*[\])]\s*[:\-–]?\s*(.*)$", item, re.I)
    if not m:
        return "", item
    return _BEHAVIOUR[m.group(1).lower()], m.group(2).strip().strip('"“”').strip()


class _Pool:
    """The pool built from request rows, in order: new rows in, distinct and clean prompts out. It
    starts from the stored pool, so extending never changes a prompt already there."""

    def __init__(self, threshold: float, decontam_threshold: float, stored: List[Dict[str, Any]],
                 counts: Dict[str, Any]):
        self.dedup = NearDuplicates(threshold, n=3)
        self.index = decontam.eval_index()
        self.decontam_threshold = decontam_threshold
        self.prompts = list(stored)
        for p in self.prompts:
            self.dedup.is_duplicate(p["prompt"])  # remembered, not judged
        self.seen = counts.get("rows_seen", 0)
        # the stored pool holds what the first `requests` requests wrote: their rows are taken by request
        # index, not by position, since a damaged shard made again (shards.py) may hold other rows
        self.requests = counts.get("requests", 0)
        self.dropped = Counter(counts.get("dropped", {}))
        self.last_new = max((p["request"] for p in self.prompts), default=-1)

    def add(self, rows: List[Dict[str, Any]]) -> None:
        """Take the rows of the requests not taken yet (rows come in request order)."""
        new = [row for row in rows if row["request"] >= self.requests]
        for row in new:
            text = row["text"]
            if len(text) < 12:
                self.dropped["too_short"] += 1
            elif self.index.score(text)[0] > self.decontam_threshold:
                self.dropped["overlaps_an_eval"] += 1
            elif self.dedup.is_duplicate(text):
                self.dropped["near_duplicate"] += 1
            else:
                n = len(self.prompts)
                self.prompts.append({"prompt_id": f"gen-{n:06d}", "prompt": text, "category": row["category"],
                                     "expected_behavior": row["expected_behavior"],
                                     "label_policy_ids": list(row["policy_ids"]), "domain": row["domain"],
                                     "request": row["request"], "order": n})
                self.last_new = row["request"]
        self.seen += len(new)
        if new:
            self.requests = new[-1]["request"] + 1


def identity(cfg) -> str:
    """The id the AFT data of a generated pool are keyed on (train checks it against the run's settings)."""
    return f"generated-{rundir.config_hash(key(cfg))}"


def ensure(cfg, spec: Spec, engines, target: int) -> Tuple[List[Dict[str, Any]], str, Dict[str, Any]]:
    """The first `target` prompts of the pool (generating what it lacks; a generator that stops writing
    new prompts leaves it short, which is an error only below data.n_samples), the pool's identity and
    its counts. The run dir links to it as data/prompts."""
    k, need = key(cfg), cfg.data.n_samples
    e = Entry(rundir.store_path(cfg, "prompts", k), "generate_prompts", k,
              covers=lambda m: m["counts"]["pool"] >= target or (m["counts"]["stalled"] and m["counts"]["pool"] >= need))
    built = e.materialise(lambda out: _extend(cfg, spec, engines, out, target, need, e.found()),
                          link=(cfg, "data/prompts"))
    pool = [r for r in rundir.read_parquet(e.path / "prompts.parquet") if r["order"] < target]
    return pool, identity(cfg), {"dir": str(e.path), "cached": built.cached, **built.manifest["counts"]}


def _extend(cfg, spec: Spec, engines, out, target: int, need: int, m) -> Dict[str, Any]:
    started, gen, g = time.time(), cfg.data.generated, cfg.generator
    domains = _domains(cfg, spec, engines, out)
    pool = _Pool(gen.dedup_threshold, cfg.data.decontam_threshold,
                 rundir.read_parquet(out / "prompts.parquet") if m else [], m["counts"] if m else {})
    sampling = Sampling(gen.max_tokens, gen.temperature, 0.95, 1, g.seed + 15485863)
    # Two rounds over every domain without one new prompt: the generator has nothing more to say.
    patience = 2 * len(domains)
    asked = {"requests": 0}

    def size(start: int) -> int:
        """Requests for the next shard: about what the missing prompts need, at most a shard."""
        missing = max(1, target - len(pool.prompts))
        return max(1, min(gen.shard_size, math.ceil(1.5 * missing / gen.prompts_per_request)))

    def work(start: int, stop: int) -> List[Dict[str, Any]]:
        jobs = [(i, domains[i % len(domains)]) for i in range(start, stop)]
        got = lists.ask(engines.generator(), [_prompt_request(spec, d["policy_ids"], d["domain"],
                                                              gen.prompts_per_request) for _, d in jobs],
                        sampling, start, gen.prompts_per_request, min_chars=12)
        asked["requests"] = stop
        advance(stop - start)
        return [{"request": i, "round": i // len(domains), "category": d["category"], "domain": d["domain"],
                 "policy_ids": d["policy_ids"], **dict(zip(("expected_behavior", "text"), _tagged(item)))}
                for (i, d), items in zip(jobs, got) for item in items]

    def enough(rows: List[Dict[str, Any]]) -> bool:
        pool.add(rows)
        advance(0, prompts=len(pool.prompts))
        return len(pool.prompts) >= target or asked["requests"] - 1 - pool.last_new >= patience

    shards = Shards(out / "shards")
    with progress.track("prompt requests", None) as advance:
        rows = shards.fill("requests", size, work, done=enough, limit=gen.max_requests)
    pool.add(rows)
    requests = shards.covered("requests")
    if len(pool.prompts) < need:
        raise DacliError(f"the generator wrote {len(pool.prompts)} distinct prompts in {requests} requests, fewer "
                         f"than data.n_samples={need}; lower data.n_samples, raise data.generated.max_requests or "
                         f"domains_per_category, or use a stronger generator (dropped: {dict(pool.dropped)})")
    prompts = pool.prompts
    rundir.write_parquet(out / "prompts.parquet", prompts)
    counts = {
        "pool": len(prompts), "requests": requests, "rows_seen": pool.seen, "domains": len(domains),
        "domains_fallback": sum(d["fallback"] for d in domains), "stalled": len(prompts) < target,
        "dropped": dict(pool.dropped), "unlabelled": sum(not p["expected_behavior"] for p in prompts),
        "expected_behavior": dict(Counter(p["expected_behavior"] or "unlabelled" for p in prompts)),
        "categories": dict(Counter(p["category"] for p in prompts)),
        "diversity": diversity.report([p["prompt"] for p in prompts], [p["category"] for p in prompts]),
    }
    if counts["stalled"]:
        progress.console().print(
            f"[yellow]warning:[/] the prompt pool stopped at {len(prompts)} of the {target} asked for "
            f"(data.generated.pool): the generator wrote no new prompt in its last {patience} requests or reached "
            f"data.generated.max_requests; larger counts of this sweep will fail", highlight=False, soft_wrap=True)
    return {"counts": counts, "generator": engines.generator_path,
            "history": (m or {}).get("history", []) + [{"target": target, "requests": requests,
                                                         "seconds": round(time.time() - started, 2)}]}


def _domains(cfg, spec: Spec, engines, out) -> List[Dict[str, Any]]:
    """The conversation domains of every category, asked for once and stored; a category whose answer
    holds no usable item gets its own name as its one domain (counted as a fallback)."""
    path = out / "domains.parquet"
    if path.is_file():
        return rundir.read_parquet(path)
    gen, cats = cfg.data.generated, categories(spec)
    asked = lists.ask(engines.generator(), [_domain_request(spec, ids, gen.domains_per_category) for _, ids in cats],
                      Sampling(gen.max_tokens, gen.temperature, 0.95, 1, cfg.generator.seed + 32452843), 0,
                      gen.domains_per_category, min_chars=3)
    domains = []
    for (cat, ids), got in zip(cats, asked):
        got = [d[:120] for d in got]
        domains += [{"category": cat, "domain": d, "policy_ids": ids, "fallback": not got} for d in got or [cat]]
    # Round-robin over categories first, so that the first requests already touch every category.
    by_cat = [[d for d in domains if d["category"] == c] for c, _ in cats]
    ordered = [b[i] for i in range(max(map(len, by_cat))) for b in by_cat if i < len(b)]
    rundir.write_parquet(path, ordered)
    return ordered
