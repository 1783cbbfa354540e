"""The interface every engine implements: a batch of chat conversations in, completions out.

A conversation whose last message is from the assistant is continued (its text is a prefix the
model must carry on from) instead of answered. A conversation too long for the model's context
comes back as one completion with finish_reason "overflow" instead of failing the batch.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Protocol

Conversation = List[Dict[str, str]]


@dataclass
class Sampling:
    max_tokens: int
    temperature: float = 0.0
    # None: not sent (an endpoint uses its own default; some hosted models refuse top_p beside temperature).
    top_p: Optional[float] = None
    n: int = 1
    seed: int = 0
    stop: List[str] = field(default_factory=list)


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    # "stop": the model ended (EOS) or hit a stop string (then `stop_reason` holds it); "length": cut off;
    # "overflow": the prompt alone does not fit the context (nothing was generated).
    finish_reason: str
    stop_reason: Optional[str] = None
    # Reasoning returned apart from the text (an OpenAI-compatible server's `reasoning` field).
    reasoning: Optional[str] = None
    # Given before and read back from the backend's journal (journal.py): no request was sent now.
    replayed: bool = False


class Backend(Protocol):
    def chat(self, conversations: List[Conversation], sampling: Sampling, seed_offset: int = 0
             ) -> List[List[Completion]]:
        """`sampling.n` completions per conversation, in order. Request i is seeded with
        sampling.seed + seed_offset + i, so a shard gives the same samples however it is batched
        (except vLLM on CPU and HF generate, which seed per engine / per batch: see their modules)."""

    def close(self) -> None: ...


def continues(conversations: List[Conversation]) -> bool:
    flags = {c[-1]["role"] == "assistant" for c in conversations}
    if len(flags) > 1:
        raise ValueError("a batch must either all continue an assistant prefix or all start a new turn")
    return flags.pop() if flags else False


def overflow(prompt_tokens: int, n: int) -> List[Completion]:
    return [Completion("", prompt_tokens, 0, "overflow") for _ in range(n)]


def prompt_lengths(tokenizer, conversations: List[Conversation], cont: bool, chat_kwargs: dict) -> List[int]:
    return [len(tokenizer.apply_chat_template(c, tokenize=True, add_generation_prompt=not cont,
                                              continue_final_message=cont, return_dict=False, **chat_kwargs))
            for c in conversations]


