"""Prompt evals' second layer: the grader model (`eval.grader`, any backend) decides what the
deterministic layer marked ambiguous. (AM samples are graded by grader.py instead.)

It sees the rubric, the conversation the model was given (last user turn) and the model's full
output, and must answer `VERDICT: <one of the sample's choices>` and `REASON: …`. A verdict it
cannot parse leaves the sample ambiguous, with that said in its reason. Every decided sample
records `layer: grader`, the grader's reason, and what the deterministic layer had said.
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
    m = re.search(r"VERDICT:\s*\**\s*(" + "|".join(map(re.escape, choices)) + r")\b", text, re.I)
    reason = re.search(r"REASON:\s*(.+)", text)
    return {"verdict": m.group(1).lower() if m else "", "reason": reason.group(1).strip() if reason else ""}


def resolve(cfg, samples: List[Dict[str, Any]], judge_label: str) -> Dict[str, Any]:
    """Ask the judge about every ambiguous sample; returns counts for scores.json."""
    from omegaconf import OmegaConf

    from .. import progress
    from ..backends import Sampling, open_backend

    j = cfg.eval.grader
    todo = [s for s in samples if s["verdict"] == "ambiguous"]
    if not todo or not j.enabled:
        return {"enabled": bool(j.enabled), "asked": 0}
    # The judge is its own model: none of the evaluated model's chat-template settings apply to it.
    backend = open_backend(j.engine, judge_label, OmegaConf.create({"max_model_len": j.max_model_len,
                                                                     "chat_template_kwargs": {}}))
    try:
        with progress.track("ambiguous samples graded", len(todo)) as advance:
            outs = backend.chat([_prompt(s) for s in todo], Sampling(j.max_tokens, 0.0, 1.0, 1, j.engine.seed))
            advance(len(outs))
    finally:
        backend.close()
    decided = 0
    for s, (out,) in zip(todo, outs):
        got = parse(out.text, s["choices"])
        s["deterministic"] = {"verdict": s["verdict"], "reason": s["reason"]}
        s["layer"] = "grader"
        s["judge_output"] = out.text
        if got["verdict"]:
            decided += 1
            s["verdict"], s["reason"] = got["verdict"], got["reason"] or "(the judge gave no reason)"
        else:
            s["reason"] = f"{s['reason']}; the judge's answer had no parsable VERDICT line"
    return {"enabled": True, "asked": len(todo), "decided": decided, "judge": judge_label}
