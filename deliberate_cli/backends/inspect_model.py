"""Any model Inspect can name (`anthropic/claude-sonnet-4-6`, `openai/gpt-4.1`, `google/gemini-2.5-pro`,
`openai-api/<service>/<model>`, `vllm/<model>`) through inspect_ai's model API: its providers, their
retries and rate-limit handling, connection limits and batch APIs, rather than our own.

How a failing request is retried: the provider's client first retries by itself (the openai and
anthropic SDKs honour Retry-After; `engine.max_retries` sets how often when the provider takes it as a
client argument, else `model_args`), then Inspect backs off exponentially (from 3 s up to 30 min, with
jitter) until the request has been retried for `engine.retry_budget` seconds; then the stage stops
with one line (errors.GaveUp) and its rerun goes on where it stopped: every answer is recorded in the
backend's journal (journal.py) as it arrives.

Only the sampling settings that are set are sent: top_p only when given (several hosted models refuse
temperature beside top_p). A request for n samples is sent as n requests (not every provider takes
num_choices), seeded seed, seed+1, ...
"""
import asyncio
import math
import threading
from typing import List, Optional

from ..errors import DacliError, GaveUp
from .base import Completion, Conversation, Sampling, continues, overflow
from .journal import open_journal

_FINISH = {"stop": "stop", "max_tokens": "length", "model_length": "length", "content_filter": "stop",
           "tool_calls": "stop", "unknown": "stop"}


class InspectBackend:
    request_per_sample = True  # n samples are n requests (usage counts each prompt)

    def __init__(self, model_name: str, engine, max_model_len: int, chat_template_kwargs: Optional[dict] = None,
                 journal=None):
        from inspect_ai.model import GenerateConfig, get_model

        self.name = model_name
        args = dict(engine.model_args or {})
        if "/" not in model_name:
            raise DacliError(f"model '{model_name}' is not an Inspect model name: provider/model, e.g. "
                             "anthropic/claude-sonnet-4-6, openai/gpt-4.1, openai-api/<service>/<model>")
        if _takes_max_retries(model_name):
            args.setdefault("max_retries", engine.max_retries)
        config = GenerateConfig(max_connections=engine.concurrency, max_retries=None,
                                timeout=math.ceil(engine.retry_budget), attempt_timeout=math.ceil(engine.request_timeout),
                                batch=engine.batch)
        try:
            self.model = get_model(model_name, config=config, base_url=engine.base_url, memoize=False, **args)
        except Exception as e:  # an unknown provider, a missing key or package: Inspect says which
            raise DacliError(f"cannot open {model_name}: {_first_line(e)}") from None
        self.budget = engine.retry_budget
        self.journal = open_journal(journal)
        # One event loop for the backend's life: the provider's HTTP client belongs to the loop it was
        # first used on.
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="dacli-inspect", daemon=True)
        self.thread.start()

    def chat(self, conversations: List[Conversation], sampling: Sampling, seed_offset: int = 0
             ) -> List[List[Completion]]:
        if not conversations:
            return []
        if continues(conversations):
            raise DacliError(f"{self.name}: an Inspect model cannot be asked to continue an assistant prefix "
                             "(the generator's CoT-then-response split); use a local engine or backend=openai "
                             "on `vllm serve`")

        async def all_of():
            return await asyncio.gather(*[
                asyncio.gather(*[self._one(conv, sampling, sampling.seed + seed_offset + i + j)
                                 for j in range(sampling.n)])
                for i, conv in enumerate(conversations)])

        rows = asyncio.run_coroutine_threadsafe(all_of(), self.loop).result()
        return [[c for cs in row for c in cs] for row in rows]

    async def _one(self, conv: Conversation, s: Sampling, seed: int) -> List[Completion]:
        from inspect_ai.model import ChatMessageAssistant, ChatMessageSystem, ChatMessageUser, GenerateConfig

        one = Sampling(s.max_tokens, s.temperature, s.top_p, 1, s.seed, s.stop)
        key = self.journal.key(self.name, conv, one, seed) if self.journal is not None else None
        if key and (done := self.journal.recall(key)) is not None:
            return done
        kinds = {"system": ChatMessageSystem, "user": ChatMessageUser, "assistant": ChatMessageAssistant}
        messages = [kinds[m["role"]](content=m["content"]) for m in conv]
        settings = {"max_tokens": s.max_tokens, "temperature": s.temperature, "seed": seed}
        if s.top_p is not None:
            settings["top_p"] = s.top_p
        if s.stop:
            settings["stop_seqs"] = list(s.stop)
        try:
            out = await self.model.generate(messages, config=GenerateConfig(**settings))
        except Exception as e:
            raise _gave_up_or_refused(self.name, self.budget, e) from None
        if out.error:
            raise DacliError(f"{self.name} answered with an error: {_first_line(out.error)}")
        usage = out.usage
        text = out.completion or ""
        if out.stop_reason == "model_length" and not text and not (usage and usage.output_tokens):
            done = overflow(usage.input_tokens if usage else 0, 1)
        else:
            reasoning = "\n".join(c.reasoning for c in (out.message.content if isinstance(out.message.content, list)
                                                        else []) if getattr(c, "type", "") == "reasoning")
            done = [Completion(text, usage.input_tokens if usage else 0, usage.output_tokens if usage else 0,
                               _FINISH.get(out.stop_reason, "stop"), None, reasoning or None)]
        if key:
            self.journal.record(key, done)
        return done

    def close(self) -> None:
        async def aclose():
            closer = getattr(self.model, "aclose", None)
            if closer is not None:
                await closer()

        try:
            asyncio.run_coroutine_threadsafe(aclose(), self.loop).result(timeout=30)
        except Exception:  # closing a client that failed to open: nothing to release
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self.journal is not None:
            self.journal.close()


# Providers whose Inspect client passes its model_args to the openai or anthropic SDK client (both take
# max_retries and honour Retry-After); others take their own model_args.
_SDK_RETRIES = ("openai", "openai-api", "anthropic")


def _takes_max_retries(model_name: str) -> bool:
    return model_name.split("/")[0] in _SDK_RETRIES


def _first_line(e) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]


def _gave_up_or_refused(name: str, budget: float, e: Exception) -> DacliError:
    """What Inspect raises after its retries: a retryable failure (rate limits, 5xx, timeouts, dropped
    connections) outlasting the budget, or a request the provider refuses outright (400, a bad key)."""
    attempt = getattr(e, "last_attempt", None)  # tenacity's RetryError: say what the last attempt met
    if attempt is not None and attempt.exception() is not None:
        e = attempt.exception()
    kind = type(e).__name__
    retryable = any(w in kind for w in ("RateLimit", "InternalServer", "Timeout", "Connection", "Overloaded",
                                         "ServiceUnavailable", "RetryError"))
    if retryable:
        return GaveUp(f"{name}: still failing after retrying for {budget:.0f} s (engine.retry_budget): "
                      f"{kind}: {_first_line(e)}")
    return DacliError(f"{name} refused a request: {_first_line(e)}")

