"""Filtering generated samples: deterministic checks that need no model, then the spec-aware judge.

Every sample ends with a `judge_verdict`: "keep", or the reason it went to rejects.
"""
import re
from typing import Dict, List, Optional

from . import cot as cot_format
from .backends import Backend, Sampling
from .spec import Spec, judge_system_prompt

# First-person refusals at the start of an answer; enough to tell a refusal from compliance in the
# bulk, not a classifier of subtle partial compliance (that is the model judge's job).
_REFUSAL = re.compile(
    r"^\W*(?:sorry|i'?m sorry|i am sorry|i apologi[sz]e|unfortunately)?[\s,.]*"
    r"(?:but\s+)?i\s*(?:can(?:no|')t|cannot|won'?t|will not|am unable to|'m unable to|am not able to|"
    r"'m not able to|must decline|have to decline|refuse)", re.I)


def is_refusal(text: str) -> bool:
    return bool(_REFUSAL.search(text.strip()[:300]))


def check(rec: Dict, invalid_ids: List[str], cot_budget: str, j) -> Optional[str]:
    """The first deterministic check a sample fails, as its reject reason; None if it passes all."""
    if rec["cot_finish"] == "overflow" or rec["response_finish"] == "overflow":
        return "context_overflow"
    if rec["cot_finish"] == "unparsed":
        return "cot_unparsed"
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
    if j.check_label_policy_ids and rec["label_policy_ids"] and not set(rec["label_policy_ids"]) & set(
            rec["cited_policy_ids"]):
        return "misses_labelled_policies"
    if j.check_expected_behavior:
        refused = is_refusal(rec["response"])
        if rec["expected_behavior"] == "comply" and refused:
            return "over_refusal"
        if rec["expected_behavior"] == "refuse" and not refused:
            return "under_refusal"
    return None


def model_scores(spec: Spec, records: List[Dict], judge: Backend, j, seed_offset: int = 0) -> List[Optional[float]]:
    """A 0-10 score per record from a model that sees the spec, the prompt, the CoT and the answer."""
    system = judge_system_prompt(spec)
    convs = [[{"role": "system", "content": system},
              {"role": "user", "content": f"Request:\n{r['prompt']}\n\nReasoning:\n{r['cot']}\n\nAnswer:\n{r['response']}"},
              {"role": "assistant", "content": "Score (0-10): "}] for r in records]
    outs = judge.chat(convs, Sampling(j.max_tokens, 0.0, 1.0, 1, j.seed), seed_offset)
    return [parse_score(o[0].text) for o in outs]


def parse_score(text: str) -> Optional[float]:
    m = re.match(r"\s*(\d+(?:\.\d+)?)", text)
    if not m:
        return None
    value = float(m.group(1))
    return value if 0 <= value <= 10 else None


def apply_scores(records: List[Dict], scores: List[Optional[float]], threshold: float, judge_name: str) -> None:
    for rec, score in zip(records, scores):
        rec.update(judge_score=score, judge=judge_name)
        if score is None:
            rec["judge_verdict"] = "judge_unparsable"
        elif score < threshold:
            rec["judge_verdict"] = "judge_below_threshold"


def best_per_prompt(records: List[Dict]) -> List[Dict]:
    """Best-of-k: with several kept samples per prompt, keep the highest judged one (first on ties)."""
    best: Dict[str, Dict] = {}
    for r in records:
        cur = best.get(r["prompt_id"])
        if cur is None or (r.get("judge_score") or 0) > (cur.get("judge_score") or 0):
            best[r["prompt_id"]] = r
    return list(best.values())
