"""One way to ask a model for a verdict, for every model that scores: the judge (it filters generated
data), the graders (they score eval samples: AM's and the prompt evals') and the monitor (it reads
CoTs). Each sends its conversations through `ask` with its own parser; an answer the parser refuses
(ValueError) is asked again at a temperature of at least RETRY_TEMPERATURE (the same answer would
come back at 0), up to `attempts` times in all; an answer that cannot fit the model's context is not
asked again. Answers are persisted by the caller's shards (shards.py) as each shard is done.
"""
from dataclasses import dataclass
from typing import Any, Callable, List

from .backends import Backend, Conversation, Sampling

RETRY_TEMPERATURE = 0.7


@dataclass
class Answer:
    """What came back for one conversation: the parsed `value` (None when no usable answer came), the
    last answer's text, how many attempts it took, and why the last one was refused."""

    value: Any
    text: str
    attempts: int
    error: str = ""
    overflow: bool = False
    # What the attempts cost, all of them (a replayed answer's as when it was first asked).
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def ok(self) -> bool:
        return not self.error and not self.overflow


def ask(backend: Backend, convs: List[Conversation], parse: Callable[[int, str], Any], max_tokens: int,
        temperature: float, seed: int, attempts: int, seed_offset: int = 0, n: int = 1) -> List[Answer]:
    """`n` Answers per conversation, conversation by conversation (conversation i's are at i*n ... i*n+n-1);
    `parse(i, text)` reads an answer to conversation i or raises ValueError. The first attempt is seeded
    with `seed`, attempt a with seed + a - 1."""
    answers: List[Answer] = [Answer(None, "", 0, "not asked")] * (len(convs) * n)
    pending = list(range(len(answers)))
    for attempt in range(1, attempts + 1):
        if not pending:
            break
        if attempt == 1:  # n answers per conversation in one request
            outs = [c for cs in backend.chat(convs, Sampling(max_tokens, temperature, None, n, seed), seed_offset)
                    for c in cs]
        else:  # each refused answer again, at a temperature that can give another
            t = max(temperature, RETRY_TEMPERATURE)
            outs = [cs[0] for cs in backend.chat([convs[k // n] for k in pending], Sampling(max_tokens, t, None, 1, seed + attempt - 1),
                                                  seed_offset)]
        still = []
        for k, out in zip(pending, outs):
            spent = {"input_tokens": answers[k].input_tokens + (out.prompt_tokens if attempt > 1 or k % n == 0 else 0),
                     "output_tokens": answers[k].output_tokens + out.completion_tokens}
            if out.finish_reason == "overflow":  # asking again cannot help
                answers[k] = Answer(None, "", attempt, "the conversation does not fit the model's context", True)
                continue
            try:
                answers[k] = Answer(parse(k // n, out.text), out.text, attempt, **spent)
            except ValueError as e:
                still.append(k)
                answers[k] = Answer(None, out.text, attempt, str(e), **spent)
        pending = still
    return answers
