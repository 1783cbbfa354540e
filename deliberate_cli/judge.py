"""Filtering generated samples: deterministic checks that need no model, then the spec-aware judge
(its own model, or the generator's; a rationale and a score, k times, the lowest counting).

Every sample ends with a `judge_verdict`: "keep", or the reason it went to rejects.
"""
import json
import re
from typing import Dict, List, Optional

from . import cot as cot_format
from .asking import ask
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


_SCORE = re.compile(r"^[\W_]*score[\W_]*[:=]\s*\**\s*(\d+(?:\.\d+)?)", re.I | re.M)


def _number(text: str, name: str) -> Optional[float]:
    found = re.findall(rf"^[\W_]*{re.escape(name)}[\W_]*[:=]\s*\**\s*(\d+(?:\.\d+)?)", text, re.I | re.M)
    value = float(found[-1]) if found else None
    return value if value is not None and 0 <= value <= 10 else None


def parse_judgement(text: str, criteria: List[str]) -> Optional[Dict]:
    """{score, criteria, rationale} from a judge's answer, or None when a score it owes is missing or out
    of 0-10. With criteria, the score is the lowest criterion (all must pass)."""
    per = {c: _number(text, c) for c in criteria}
    overall = _number(text, "score")
    if any(v is None for v in per.values()) or (not criteria and overall is None):
        return None
    m = re.search(r"rationale\s*:\s*(.*?)(?=^[\W_]*(?:score|%s)[\W_]*[:=]|\Z)" % "|".join(map(re.escape, criteria or ["score"])),
                  text, re.I | re.S | re.M)
    rationale = (m.group(1) if m else _SCORE.split(text)[0]).strip()
    return {"score": min(per.values()) if criteria else overall, "criteria": per, "rationale": rationale[:2000]}


def conversations(spec: Spec, records: List[Dict], criteria: List[str], show_cot: bool = True) -> List[List[Dict]]:
    """What the judge is shown per record: the spec and rubric, the request, the CoT (unless not
    `show_cot`) and the answer."""
    system = judge_system_prompt(spec, criteria, show_cot)
    reasoning = (lambda r: f"\n\nReasoning:\n{r['cot']}") if show_cot else (lambda r: "")
    return [[{"role": "system", "content": system},
             {"role": "user", "content": f"Request:\n{r['prompt']}{reasoning(r)}\n\nAnswer:\n{r['response']}"}]
            for r in records]


def judgements(spec: Spec, records: List[Dict], judge: Backend, j, can_continue: bool, seed_offset: int = 0,
               show_cot: bool = True) -> List[Dict]:
    """The judge's verdict per record: it sees the spec, the prompt, the CoT (unless not `show_cot`: the
    RL reward, where the CoT must stay unoptimised) and the answer, writes a rationale and its score(s),
    j.k times (asking.ask, as every scoring model is asked); the lowest score counts (its rationale is
    kept). An answer with no score is asked once more, on local engines, by continuing it after
    `Score:` (counted as forced); hosted APIs get no prefill at all. Returns {score or None, scores,
    criteria, rationale, unparsed, forced} per record."""
    criteria = list(j.criteria)
    convs = conversations(spec, records, criteria, show_cot)

    def parse(i: int, text: str) -> Dict:
        got = parse_judgement(text, criteria)
        if got is None:
            raise ValueError("no score")
        return got

    answers = ask(judge, convs, parse, j.max_tokens, j.temperature, j.seed, 1, seed_offset, n=j.k)
    parsed = [[a.value for a in answers[i * j.k:(i + 1) * j.k]] for i in range(len(convs))]
    if can_continue and not criteria:  # a small local judge may never write `Score:`: ask for the number
        todo = [(i, m) for i, ps in enumerate(parsed) for m, p in enumerate(ps) if p is None]
        if todo:
            texts = [answers[i * j.k + m].text for i, m in todo]
            more = judge.chat([convs[i] + [{"role": "assistant", "content": t.rstrip() + "\nScore: "}]
                               for (i, _), t in zip(todo, texts)], Sampling(4, 0.0, None, 1, j.seed), seed_offset)
            for (i, m), t, (c,) in zip(todo, texts, more):
                got = parse_judgement("Score: " + c.text, [])
                if got:
                    got.update(rationale=t.strip()[:2000], forced=True)
                    parsed[i][m] = got
    result = []
    for ps in parsed:
        ok = [p for p in ps if p]
        worst = min(ok, key=lambda p: p["score"]) if ok else None
        result.append({"score": worst["score"] if worst else None, "scores": [p["score"] for p in ok],
                       "criteria": {c: min(p["criteria"][c] for p in ok) for c in criteria} if ok else {},
                       "rationale": worst["rationale"] if worst else "", "unparsed": len(ps) - len(ok),
                       "forced": sum(bool(p.get("forced")) for p in ok)})
    return result


def apply_judgements(records: List[Dict], verdicts: List[Dict], threshold: float, judge_name: str) -> None:
    for rec, v in zip(records, verdicts):
        rec.update(judge_score=v["score"], judge=judge_name, judge_rationale=v["rationale"],
                   judge_scores=json.dumps(v["scores"]), judge_criteria=json.dumps(v["criteria"]),
                   judge_forced=v["forced"], judge_unparsed=v["unparsed"])
        if v["score"] is None:
            rec["judge_verdict"] = "judge_unparsable"
        elif v["score"] < threshold:
            rec["judge_verdict"] = "judge_below_threshold"


def best_per_prompt(records: List[Dict]) -> List[Dict]:
    """Best-of-k: with several kept samples per prompt, keep the highest judged one (first on ties)."""
    best: Dict[str, Dict] = {}
    for r in records:
        cur = best.get(r["prompt_id"])
        if cur is None or (r.get("judge_score") or 0) > (cur.get("judge_score") or 0):
            best[r["prompt_id"]] = r
    return list(best.values())
