"""The CoT's documented delimiter format, shared by generation, training and evals.

Records keep the CoT (`cot`) and the answer (`response`) apart; this is the one place that says how
they are joined into text for models whose chat template has no thinking format of its own.
"""
import re
from typing import Tuple

OPEN, CLOSE = "<think>", "</think>"
_BLOCK = re.compile(r"<(think|SCRATCHPAD_REASONING)>(.*?)(?:</\1>|$)", re.S | re.I)


def opening() -> str:
    """The assistant prefix that starts a CoT."""
    return f"{OPEN}\n"


def joined(cot: str, response: str = "") -> str:
    """`<think>\\n{cot}\\n</think>\\n\\n{response}`: the CoT closed, then the answer."""
    return f"{OPEN}\n{cot}\n{CLOSE}\n\n{response}"


def split(text: str) -> Tuple[str, str]:
    """(CoT, the rest) from model output: reasoning in <think> or <SCRATCHPAD_REASONING> tags, wherever it sits."""
    cots = [m.group(2).strip() for m in _BLOCK.finditer(text)]
    return "\n\n".join(cots), _BLOCK.sub("", text).strip()
