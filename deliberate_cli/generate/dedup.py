"""Near-duplicate detection for generated prompts, ideas and documents: MinHash signatures, LSH banding
for candidates, then the exact Jaccard similarity of the candidates' word n-gram sets.

Documents use 5-grams; prompts and one-line list items use 3-grams (a 5-gram set of a 15-word
prompt is too small to tell a paraphrase from a different request).
"""
import hashlib
import re
from typing import Dict, List

_PERMS = 64
_BANDS = 16
_MASK = (1 << 61) - 1
# Odd multipliers make each (a*h + b) mod 2^61 a permutation of hash values: one per MinHash row.
_ODD = [((2 * i + 1) * 0x9E3779B97F4A7C15) & _MASK | 1 for i in range(_PERMS)]
_COEFFS = list(zip(_ODD, reversed(_ODD)))


def shingles(text: str, n: int = 5) -> set:
    words = re.findall(r"\w+", text.lower())
    if len(words) < n:
        return {" ".join(words)}
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def _minhash(sh: set) -> List[int]:
    hashes = [int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little") for s in sh]
    return [min(((a * h + b) & _MASK) for h in hashes) for a, b in _COEFFS]


class NearDuplicates:
    """Remembers kept texts; `is_duplicate` answers for a new one and keeps it when it is new."""

    def __init__(self, threshold: float, n: int = 5):
        self.threshold, self.n = threshold, n
        self.buckets: Dict[tuple, List[int]] = {}
        self.kept: List[set] = []

    def is_duplicate(self, text: str) -> bool:
        sh = shingles(text, self.n)
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
