"""Model Spec Midtraining documents: a corpus of varied genres that discuss the spec's policies.

Documents are generated round by round, each (policy, genre) pair in turn, until the kept corpus
reaches `msm.tokens`; near-duplicates (5-gram Jaccard ≥ `msm.dedup_threshold`, found with MinHash
and LSH banding) are dropped. Each round is a shard, so a killed run resumes at the next round.
"""
import hashlib
import math
import re
import time
from collections import Counter
from typing import Any, Callable, Dict, List

from . import diversity, rundir
from .backends import Backend, Sampling
from .spec import Spec, msm_document_prompt

_PERMS = 64
_BANDS = 16
_MASK = (1 << 61) - 1
# Odd multipliers make each (a*h + b) mod 2^61 a permutation of hash values: one per MinHash row.
_ODD = [((2 * i + 1) * 0x9E3779B97F4A7C15) & _MASK | 1 for i in range(_PERMS)]
_COEFFS = list(zip(_ODD, reversed(_ODD)))


def _shingles(text: str, n: int = 5) -> set:
    words = re.findall(r"\w+", text.lower())
    if len(words) < n:
        return {" ".join(words)}
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def _minhash(shingles: set) -> List[int]:
    hashes = [int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little") for s in shingles]
    return [min(((a * h + b) & _MASK) for h in hashes) for a, b in _COEFFS]


class NearDuplicates:
    """Remembers kept documents; `is_duplicate` answers for a new one (candidates by LSH, then exact Jaccard)."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.buckets: Dict[tuple, List[int]] = {}
        self.kept: List[set] = []

    def is_duplicate(self, text: str) -> bool:
        sh = _shingles(text)
        sig = _minhash(sh)
        rows = _PERMS // _BANDS
        keys = [(b, tuple(sig[b * rows:(b + 1) * rows])) for b in range(_BANDS)]
        candidates = {i for k in keys for i in self.buckets.get(k, [])}
        if any(len(sh & self.kept[i]) / len(sh | self.kept[i]) >= self.threshold for i in candidates):
            return True
        for k in keys:
            self.buckets.setdefault(k, []).append(len(self.kept))
        self.kept.append(sh)
        return False


def generate_docs(cfg, spec: Spec, generator: Callable[[], Backend], tmp, model_path: str) -> Dict[str, Any]:
    """Fill `tmp` with round shards, then msm_docs.parquet; returns the counts for the manifest."""
    started = time.time()
    m, shard_size = cfg.msm, cfg.generator.shard_size
    # Every policy once per pass, each pass shifting the genres, so any prefix of the schedule is
    # spread over policies and genres alike, and len(policies) * len(genres) docs cover every pair.
    pairs = [(p, m.genres[(i + shift) % len(m.genres)]) for shift in range(len(m.genres))
             for i, p in enumerate(spec.policies)]
    dedup = NearDuplicates(m.dedup_threshold)
    docs: List[Dict] = []
    requested = dropped = engine_seconds = 0
    for rnd in range(m.max_rounds):
        kept_tokens = sum(d["tokens"] for d in docs)
        if kept_tokens >= m.tokens:
            break
        shard = tmp / f"round-{rnd:05d}.parquet"
        if not shard.exists():
            size = min(shard_size, max(len(spec.policies), math.ceil(1.25 * (m.tokens - kept_tokens) / m.max_tokens)))
            jobs = [pairs[(requested + k) % len(pairs)] for k in range(size)]
            convs = [[{"role": "user", "content": msm_document_prompt(spec, p, g)}] for p, g in jobs]
            engine = generator()
            t0 = time.time()
            outs = engine.chat(convs, Sampling(m.max_tokens, m.temperature, 0.95, 1, cfg.generator.seed + 104729),
                                    seed_offset=requested)
            engine_seconds += time.time() - t0
            rundir.write_parquet(shard, [{"text": o.text.strip(), "genre": g, "policy_ids": [p.id],
                                          "tokens": o.completion_tokens, "finish": o.finish_reason}
                                         for (p, g), (o,) in zip(jobs, outs)])
        rows = rundir.read_parquet(shard)
        requested += len(rows)
        for row in rows:
            if not row["text"] or dedup.is_duplicate(row["text"]):
                dropped += 1
            else:
                docs.append(row)
    rundir.write_parquet(tmp / "msm_docs.parquet", docs)
    for shard in tmp.glob("round-*.parquet"):
        shard.unlink()
    return {"requested": requested, "kept": len(docs), "near_duplicates_or_empty": dropped,
            "tokens": sum(d["tokens"] for d in docs), "token_budget": m.tokens,
            "genres": dict(Counter(d["genre"] for d in docs)),
            "policies": dict(Counter(d["policy_ids"][0] for d in docs)),
            # what the generator wrote before near-duplicates were dropped, and what the corpus keeps
            "near_duplicate_rate": round(dropped / requested, 4) if requested else 0.0,
            "diversity": diversity.report([d["text"] for d in docs], [d["genre"] for d in docs]),
            "engine_seconds": round(engine_seconds, 2), "seconds": round(time.time() - started, 2)}
