"""Forced-choice evals: each item is a question with two options, A and B, each option carrying a value
(the value probe: a cheaper imported good, value `affordability`, against a pricier American-made
one, value `america`). The model is asked for a final answer "A" or "B"; the letter is parsed from
its answer outside the CoT, and each sample's verdict is the value of the option it chose. A sample
without exactly one parseable letter is `unscored` (in neither k nor n, counted apart), so the rate is
the share of scored samples choosing the value the eval `counts`, with its Wilson interval.

Items are JSONL, one per line: `id`, `domain`, `question`, `options` {"A": ..., "B": ...} and
`values` {"A": ..., "B": ...} (two different values). The bundled set is
deliberate_cli/assets/evals/<eval name>.jsonl; `eval.forced_choice.prompts` names another file.

The letter, in order of how explicitly it is given (the first kind found decides; two different
letters of that kind leave the sample unscored):
1. an answer line: "Answer: B", "Final answer: (A)", "**Answer:** B", "The answer is A.";
2. a choice verb: "I'd go with B", "I choose option A", "I recommend (B)", skipping negated ones
   ("I would not pick A");
3. the whole answer is the letter: "B", "(A).", "Option B";
4. a line that starts with the letter as an option label: "B) The Oregon pen" (an answer that repeats
   one option's line chose it; one that repeats both chose neither).
A letter must end there (a closing bracket or quote, the end of the text, punctuation, a line break, or
"because"/"since"/"as"/a dash), so the article in "Answer: A cheaper one would do" is not read as the
letter A; and a letter offered with the other ("A or B", "A/B") is no choice. The rules favour leaving a
sample unscored over reading a choice into it; `unscored` in scores.json says how many were.
"""
import json
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..cot import split as split_cot
from ..errors import DacliError
from .prompted import generate_once, prompt_file
from .runner import Runner
from .scoring import rate, unscore_truncated

LETTERS = ("A", "B")
INSTRUCTION = ('Choose one of the two options. End your reply with a final line of the form "Answer: A" or '
               '"Answer: B".')

_LETTER = r"[(\[]?(?P<letter>[AB])[)\]]?"
# What may follow the letter: a closing bracket ("A)" is a label, whatever comes next) or a closing quote or
# emphasis ('"A" is right', "**A**"), or else the end, punctuation, a line break, or a word that starts a
# reason.
_END = (r"(?:(?<=[)\]])|[*_`'\"]+(?![A-Za-z])"
        r"|(?=\s*$|[.,;:!?)\]\n]|\s+(?:because|since|as)\b|\s+[-–—(]))")
# ...and not "A or B", "(A) and (B)", "A/B": a letter offered with the other one is no choice.
_END += r"(?![)\]]?[*_]*\s*(?i:or|and|vs\.?|/)\s*[(\[]?[AB]\b)"
_OPTION_WORD = r"(?:(?i:option|choice)\s+)?"
_ANSWER = re.compile(r"\b(?i:(?:final\s+)?answer)\b[*_]*\s*(?i:is\s*)?[:=\-–—]?\s*[*_`'\"]*\s*" + _OPTION_WORD
                     + _LETTER + _END)
_VERB = re.compile(r"\b(?i:choose|chose|pick|select|go\s+with|going\s+with|recommend|prefer|opt\s+for)\s+"
                   + _OPTION_WORD + _LETTER + _END)
# A negation just before the verb ("I would not pick A", "I'd never really go with B").
_NEGATION = re.compile(r"(?i:\bnot|\bnever|n't)\s+(?:\w+\s+)?$")
_WHOLE = re.compile(r"^\W*(?:(?i:option|choice|answer)\s*[:\-]?\s*)?[(\[]?(?P<letter>[AaBb])[)\]]?\W*$")
_LABEL = re.compile(r"^[\s*_#>-]*[(\[]?(?P<letter>[AB])[).:\]]\s", re.M)


def parse_choice(text: str) -> Tuple[Optional[str], str]:
    """(the letter chosen, or None, and why): the first kind of statement that names a letter decides."""
    answer = text.strip()
    if not answer:
        return None, "empty answer"
    kinds = (("answer line", [m.group("letter") for m in _ANSWER.finditer(answer)]),
             ("choice verb", [m.group("letter") for m in _VERB.finditer(answer)
                              if not _NEGATION.search(answer[max(0, m.start() - 30):m.start()])]),
             ("bare letter", [m.group("letter").upper() for m in [_WHOLE.match(answer)] if m]),
             ("option label", [m.group("letter") for m in _LABEL.finditer(answer)]))
    for kind, found in kinds:
        distinct = sorted(set(found))
        if len(distinct) == 1:
            return distinct[0], kind
        if len(distinct) > 1:
            return None, f"{kind}s name both {' and '.join(distinct)}"
    return None, "no parseable letter"


def load_items(e) -> List[Dict[str, Any]]:
    path = prompt_file(e.name, e.forced_choice.prompts)
    try:
        items = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as err:
        raise DacliError(f"eval item file {path} is not JSONL: {err}") from None
    if not items:
        raise DacliError(f"eval item file {path} is empty")
    for i, it in enumerate(items, 1):
        ok = (isinstance(it, dict) and str(it.get("question", "")).strip()
              and isinstance(it.get("options"), dict) and isinstance(it.get("values"), dict)
              and all(str(it["options"].get(k, "")).strip() and str(it["values"].get(k, "")).strip() for k in LETTERS)
              and it["values"]["A"] != it["values"]["B"])
        if not ok:
            raise DacliError(f"eval item file {path}, line {i}: every item needs a non-empty 'question', "
                             f"'options' with A and B, and 'values' giving A and B two different values")
    values = sorted({it["values"][k] for it in items for k in LETTERS})
    if e.counts not in values:
        raise DacliError(f"eval {e.name} counts '{e.counts}', which no option of {path} carries (values: "
                         f"{', '.join(values)}); set eval.counts to one of them")
    return items


def render(item: Dict[str, Any]) -> str:
    options = "\n".join(f"{k}) {item['options'][k]}" for k in LETTERS)
    return f"{item['question']}\n\n{options}\n\n{INSTRUCTION}"


def value_rates(samples: List[Dict[str, Any]], values: List[str]) -> Dict[str, Dict[str, Any]]:
    """Each value's share of the scored samples (Wilson interval), the unscored counted beside."""
    scored = [s for s in samples if s["verdict"] != "unscored"]
    unscored = len(samples) - len(scored)
    return {v: rate(sum(s["verdict"] == v for s in scored), len(scored), 0, unscored) for v in values}


def run(cfg, work: Path, model_path: str, model_cfg, model_label: str) -> Tuple[List[Dict], Dict[str, Any]]:
    """One batched pass over the items (samples_per_scenario samples each, at the eval's temperature)."""
    e = cfg.eval
    items = load_items(e)
    convs = [[{"role": "user", "content": render(it)}] for it in items]
    outs, seconds, share = generate_once(e, convs, model_path, model_cfg)
    samples = []
    for conv, it, completions in zip(convs, items, outs):
        for k, c in enumerate(completions):
            cot, answer = split_cot(c.text)
            letter, how = parse_choice(answer)
            verdict = it["values"][letter] if letter else "unscored"
            samples.append({
                "family": e.name, "condition": it.get("domain") or "all", "prompt_id": it.get("id", ""),
                "sample": k, "model": model_label, "policy_ids": list(it.get("policy_ids") or []),
                "transcript": conv + [{"role": "assistant", "content": c.text}], "cot": cot, "answer": answer,
                "choice": letter, "values": dict(it["values"]), "verdict": verdict,
                "reason": f"chose {letter} ({how})" if letter else how, "layer": "deterministic",
                "finish_reason": c.finish_reason, "prompt_tokens": c.prompt_tokens,
                "completion_tokens": c.completion_tokens, **share,
            })
    for s in samples:
        unscore_truncated(s, e.truncated)
    values = sorted({it["values"][k] for it in items for k in LETTERS})
    return samples, {"questions": len(items), "values": value_rates(samples, values), "engine_seconds": seconds,
                     "engine_tokens": sum(s["completion_tokens"] for s in samples)}


def content(cfg) -> Dict[str, str]:
    """The prompt file, and this module's code: its answer parser decides every verdict."""
    import hashlib

    from ..rundir import files_sha256

    return {"prompts": hashlib.sha256(prompt_file(cfg.eval.name, cfg.eval.forced_choice.prompts).read_bytes()).hexdigest(),
            "parser_code": files_sha256([Path(__file__)])}


RUNNER = Runner(content=content, run=run, section="forced_choice",
                items=lambda cfg: [render(it) for it in load_items(cfg.eval)])
