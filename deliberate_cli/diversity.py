"""How varied generated text is, so a researcher sees when a small generator collapses: distinct-n
(the share of word n-grams that are distinct, across the whole set), the near-duplicate rate (texts
whose 5-gram Jaccard similarity to an earlier one reaches `threshold`, by MinHash-LSH as the MSM
corpus is deduplicated), and category balance (normalised entropy: 1 = every category equally often).
"""
import math
import re
from collections import Counter
from typing import Any, Dict, Iterable, List


def distinct_n(texts: Iterable[str], n: int) -> float:
    grams: List[tuple] = []
    for t in texts:
        words = re.findall(r"\w+", t.lower())
        grams += [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return round(len(set(grams)) / len(grams), 4) if grams else 0.0


def near_duplicate_rate(texts: List[str], threshold: float = 0.7) -> float:
    from .generate.dedup import NearDuplicates

    seen = NearDuplicates(threshold)
    dupes = sum(seen.is_duplicate(t) for t in texts if t.strip())
    nonempty = sum(bool(t.strip()) for t in texts)
    return round(dupes / nonempty, 4) if nonempty else 0.0


def balance(labels: Iterable[str]) -> Dict[str, Any]:
    counts = Counter(label or "(none)" for label in labels)
    total = sum(counts.values())
    if len(counts) < 2:
        return {"categories": len(counts), "entropy_normalised": 1.0 if counts else 0.0, "counts": dict(counts)}
    entropy = -sum(c / total * math.log(c / total) for c in counts.values())
    return {"categories": len(counts), "entropy_normalised": round(entropy / math.log(len(counts)), 4),
            "counts": dict(counts.most_common())}


def report(texts: List[str], labels: Iterable[str] = ()) -> Dict[str, Any]:
    """The diversity record a manifest keeps for one set of texts."""
    out: Dict[str, Any] = {"n": len(texts), "distinct_1": distinct_n(texts, 1), "distinct_2": distinct_n(texts, 2),
                           "near_duplicate_rate": near_duplicate_rate(texts)}
    labels = list(labels)
    if labels:
        out["balance"] = balance(labels)
    return out
