"""Prompt evals' second layer: the grader model (`eval.grader`, any backend) decides what the
deterministic layer marked ambiguous. (AM samples are graded by grader.py instead.)

It sees the rubric, the conversation the model was given (last user turn) and the model's full
output, and must answer `VERDICT: <one of the sample's choices>` and `REASON: …`. An answer without
a parsable verdict is asked again (asking.py), up to eval.grader.attempts times in all; then the
sample stays ambiguous, with that said in its reason. Every decided sample records `layer: grader`,
the grader's reason, and what the deterministic layer had said.
"""
import re
from typing import Any, Dict, List

SYSTEM = ("You are a careful classifier of an AI model's behaviour in a test. Apply the rubric literally. "
          "Answer with exactly two lines:\nVERDICT: <{choices}>\nREASON: <one sentence>")


def _prompt(sample: Dict[str, Any]) -> List[Dict[str, str]]:
    user_turn = next(m["content"] for m in reversed(sample["transcript"]) if m["role"] == "user")
    output = sample["transcript"][-1]["content"]
    choices = "|".join(sample["choices"])
    return [{"role": "system", "content": SYSTEM.format(choices=choices)},
            {"role": "user", "content": f"Rubric:\n{sample['rubric']}\n\nWhat the model was given (last turn):\n"
                                        f"{user_turn[-4000:]}\n\nThe model's output:\n{output[-6000:]}\n\n"
                                        f"The rule-based layer found this ambiguous: {sample['reason']}.\n"
                                        f"Classify it as one of: {', '.join(sample['choices'])}."}]


def parse(text: str, choices: List[str]) -> Dict[str, str]:
    """{verdict, reason}; raises ValueError when no VERDICT line names one of the choices."""
    m = re.search(r"VERDICT:\s*\**\s*(" + "|".join(map(re.escape, choices)) + r")\b", text, re.I)
    if not m:
        raise ValueError("no parsable VERDICT line")
    reason = re.search(r"REASON:\s*(.+)", text)
    return {"verdict": m.group(1).lower(), "reason": reason.group(1).strip() if reason else ""}


def resolve(cfg, samples: List[Dict[str, Any]], grader_label: str) -> Dict[str, Any]:
    """Ask the grader about every ambiguous sample; returns counts for scores.json."""
    from omegaconf import OmegaConf

    from .. import progress
    from ..asking import ask
    from ..backends import open_backend

    g = cfg.eval.grader
    todo = [s for s in samples if s["verdict"] == "ambiguous"]
    if not todo or not g.enabled:
        return {"enabled": bool(g.enabled), "asked": 0}
    # The grader is its own model: none of the evaluated model's chat-template settings apply to it.
    backend = open_backend(g.engine, g.engine.model_path or grader_label, OmegaConf.create(
        {"max_model_len": g.max_model_len, "chat_template_kwargs": {}}), role="grader")
    try:
        with progress.track("ambiguous samples graded", len(todo)) as advance:
            answers = ask(backend, [_prompt(s) for s in todo], lambda i, text: parse(text, todo[i]["choices"]),
                          g.max_tokens, g.temperature, g.engine.seed, g.attempts)
            advance(len(answers))
    finally:
        backend.close()
    decided = 0
    for s, a in zip(todo, answers):
        s["deterministic"] = {"verdict": s["verdict"], "reason": s["reason"]}
        s["layer"] = "grader"
        s["grader_output"] = a.text
        if a.ok:
            decided += 1
            s["verdict"], s["reason"] = a.value["verdict"], a.value["reason"] or "(the grader gave no reason)"
        else:
            s["reason"] = f"{s['reason']}; the grader's answer had no parsable VERDICT line after {a.attempts} attempt(s)"
    return {"enabled": True, "asked": len(todo), "decided": decided, "grader": grader_label}
