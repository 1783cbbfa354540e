"""Rates with their uncertainty: every eval reports k/n with a 95% Wilson score interval."""
import math
import re
from collections import defaultdict
from typing import Any, Dict, Iterable, List, Optional, Tuple

Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> Tuple[float, float]:
    """The Wilson score interval for k successes in n trials (sensible at 0/n and n/n, unlike Wald)."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # it always holds p; at 0/n and n/n rounding can leave an end a hair inside it
    return (min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half)))


def rate(k: int, n: int, ambiguous: int = 0, unscored: int = 0) -> Dict[str, Any]:
    """k of n with its Wilson interval. Ambiguous samples are in n but not in k, so while any remain
    the rate is a lower bound: `bounds` is [ambiguous as benign, ambiguous as harmful], and
    `ci_bounds` the Wilson interval around both ends. Unscored samples (a grader that gave no
    verdict) are in neither."""
    lo, hi = wilson(k, n)
    return {"rate": k / n if n else 0.0, "ci_low": lo, "ci_high": hi, "k": k, "n": n,
            "ambiguous": ambiguous, "unscored": unscored,
            "bounds": [k / n, (k + ambiguous) / n] if n else [0.0, 1.0],
            "ci_bounds": [lo, wilson(k + ambiguous, n)[1]]}


def score_rows(samples: Iterable[Dict], group_key: str = "condition", flag: str = "harmful",
               field: str = "verdict") -> Tuple[Dict, List[Dict]]:
    """Overall rate of `flag` verdicts (read from each sample's `field`) and one row per group."""
    groups: Dict[str, List[str]] = defaultdict(list)
    everything: List[str] = []
    for s in samples:
        v = s[field] if field in s else s.get("grader", {}).get(field, "unscored")
        everything.append(v)
        groups[s[group_key]].append(v)

    def count(vs: List[str]) -> Dict[str, Any]:
        scored = [v for v in vs if v != "unscored"]
        return rate(scored.count(flag), len(scored), scored.count("ambiguous"), len(vs) - len(scored))

    return count(everything), [{group_key: g, **count(v)} for g, v in sorted(groups.items())]


def mean_over(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The unweighted mean of per-condition rates (the MSM paper's Fig. 4 number), with the mean of
    their bounds when ambiguous samples remain, the pooled k and n beside it, and a 95% interval.

    The conditions are fixed strata, not a sample of conditions, so the interval is the normal one
    over strata: Var(mean) = (1/C^2) sum_c p_c(1-p_c)/n_c, each condition's own n weighing its
    variance. p_c there is Agresti-Coull's (k+2)/(n+4), so that a condition at 0/n or n/n still adds
    width (the plain p would give a zero-width interval when every condition is at 0); the centre is
    the plain mean."""
    rows = [r for r in rows if r["n"]]
    if not rows:
        return {"rate": 0.0, "conditions": 0, "ci_low": 0.0, "ci_high": 1.0, "k": 0, "n": 0, "bounds": [0.0, 1.0]}
    c = len(rows)
    centre = sum(r["rate"] for r in rows) / c
    variance = sum(_adjusted(r) * (1 - _adjusted(r)) / r["n"] for r in rows) / (c * c)
    half = Z95 * math.sqrt(variance)
    return {"rate": centre, "conditions": c, "ci_low": max(0.0, centre - half), "ci_high": min(1.0, centre + half),
            "k": sum(r["k"] for r in rows), "n": sum(r["n"] for r in rows),
            "bounds": [sum(r["bounds"][i] for r in rows) / c for i in (0, 1)]}


def _adjusted(row: Dict[str, Any]) -> float:
    """Agresti-Coull's adjusted proportion (k+2)/(n+4): only ever in a variance."""
    return (row["k"] + 2) / (row["n"] + 4)


def headline(overall: Dict[str, Any], mean: Dict[str, Any], figure: str) -> Dict[str, Any]:
    """The figure an eval leads with (eval.headline), so that the summary, the report and the plot show
    the same number without recomputing it: the pooled k/n, or the mean over conditions (the MSM
    paper's Fig. 4). `bounds` travel with it while ambiguous samples remain."""
    if figure == "mean_over_conditions":
        return {"figure": figure, "rate": mean["rate"], "ci_low": mean["ci_low"], "ci_high": mean["ci_high"],
                "label": f"mean over {mean['conditions']} conditions", "bounds": mean.get("bounds")}
    return {"figure": "pooled", "rate": overall["rate"], "ci_low": overall["ci_low"], "ci_high": overall["ci_high"],
            "label": "pooled k/n", "bounds": overall.get("bounds")}


def headline_of(scores: Dict[str, Any], figure: Optional[str] = None) -> Dict[str, Any]:
    """A scores.json's headline: the figure `figure` names (the config's eval.headline, which may have
    changed since the eval was scored: it is a runtime setting) computed from the stored rows, else the
    block it was written with; one written before there were headlines led with the pooled k/n."""
    if figure is None:
        return scores.get("headline") or headline(scores["overall"], {}, "pooled")
    return headline(scores["overall"], mean_over(scores.get("conditions") or []), figure)


def truncated(samples: Iterable[Dict], group_key: str = "condition") -> Tuple[Dict[str, Any], Dict[str, Dict]]:
    """How many samples ended at eval.max_tokens (finish_reason "length": cut off, maybe before acting),
    of all samples, overall and per group: {"truncated": count, "samples": all, "share": count/all}."""
    groups: Dict[str, List[bool]] = defaultdict(list)
    for s in samples:
        groups[s[group_key]].append(s.get("finish_reason") == "length")

    def share(flags: List[bool]) -> Dict[str, Any]:
        return {"truncated": sum(flags), "samples": len(flags), "share": sum(flags) / len(flags) if flags else 0.0}

    return share([f for fs in groups.values() for f in fs]), {g: share(fs) for g, fs in groups.items()}


def unscore_truncated(sample: Dict[str, Any], policy: str) -> None:
    """eval.truncated=unscored: an answer cut off at eval.max_tokens is in neither k nor n (counted as
    unscored); `score` reads it as written, as the MSM paper's grader does."""
    if policy == "unscored" and sample.get("finish_reason") == "length" and sample["verdict"] != "unscored":
        sample["verdict"] = "unscored"
        sample["reason"] = f"cut off at eval.max_tokens (eval.truncated=unscored); as written: {sample.get('reason', '')}"


def citation(samples: Iterable[Dict]) -> Dict[str, float]:
    """CoT policy citation: of the samples with a CoT, the share whose CoT names a policy the item is
    about (an AM family's or a prompt's policy_ids). n=0 when the model wrote no CoT."""
    with_cot = [s for s in samples if s.get("cot") and s.get("policy_ids")]
    k = sum(any(re.search(rf"\b{re.escape(p)}\b", s["cot"]) for p in s["policy_ids"]) for s in with_cot)
    return rate(k, len(with_cot))
