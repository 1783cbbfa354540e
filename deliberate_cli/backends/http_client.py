"""An OpenAI-compatible HTTP endpoint (`vllm serve`, or any hosted API) through the `openai` package.

This path stays beside the Inspect one (inspect_model.py) for `vllm serve`: it sends vLLM's own
request fields (continue_final_message for the generator's CoT-then-response split, chat_template_kwargs,
a seed per request) and reads its `reasoning` field, which Inspect's generic provider does not pass.

The key comes only from the environment variable named by `api_key_env` and is never written
anywhere. Requests run concurrently. A failing request (429, 5xx, timeouts, dropped connections) is
retried by the openai client (`max_retries` times, honouring Retry-After), then again here, waiting
what the server's Retry-After asks or else exponentially longer (up to 2 minutes), until it has been
retried for `retry_budget` seconds; then the stage stops with one line (errors.GaveUp). Only the
sampling settings that are set are sent. Answers are recorded as they arrive (journal.py).
"""
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional

from ..errors import DacliError, GaveUp
from .base import Completion, Conversation, Sampling, continues, overflow
from .journal import open_journal

_MAX_WAIT = 120.0

_OVERFLOW_HINTS = ("context length", "maximum context", "too long", "max_model_len")


class OpenAIBackend:
    def __init__(self, model_path: str, engine, max_model_len: int, chat_template_kwargs: Optional[dict] = None,
                 journal=None):
        import openai

        if not engine.base_url:
            raise DacliError("backend=openai needs base_url, e.g. generator.base_url=http://127.0.0.1:8000/v1")
        self.openai = openai
        self.base_url = engine.base_url
        self.client = openai.OpenAI(base_url=engine.base_url, api_key=os.environ.get(engine.api_key_env) or "EMPTY",
                                    max_retries=engine.max_retries, timeout=engine.request_timeout)
        self.model = engine.served_model_name or model_path
        self.concurrency = engine.concurrency
        self.budget = engine.retry_budget
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.journal = open_journal(journal)
        try:
            self.client.models.list()
        except openai.APIConnectionError as e:
            raise DacliError(f"cannot reach {self.base_url} (after {engine.max_retries} retries): {e}") from None
        except openai.AuthenticationError:
            raise DacliError(f"{self.base_url} refused the key in ${engine.api_key_env}") from None

    def chat(self, conversations: List[Conversation], sampling: Sampling, seed_offset: int = 0
             ) -> List[List[Completion]]:
        if not conversations:
            return []
        cont = continues(conversations)
        extra = {"continue_final_message": True, "add_generation_prompt": False} if cont else {}
        if self.chat_template_kwargs:
            extra["chat_template_kwargs"] = self.chat_template_kwargs

        def one(i: int) -> List[Completion]:
            return self._request(conversations[i], sampling, sampling.seed + seed_offset + i, extra)

        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(one, range(len(conversations))))

    def _request(self, conv: Conversation, s: Sampling, seed: int, extra: dict) -> List[Completion]:
        key = self.journal.key(self.model, conv, s, seed, extra) if self.journal is not None else None
        if key and (done := self.journal.recall(key)) is not None:
            return done
        settings = {"model": self.model, "messages": conv, "n": s.n, "max_tokens": s.max_tokens,
                    "temperature": s.temperature, "seed": seed}
        if s.top_p is not None:
            settings["top_p"] = s.top_p
        if s.stop:
            settings["stop"] = list(s.stop)
        if extra:
            settings["extra_body"] = extra
        try:
            r = self._create(settings)
        except self.openai.BadRequestError as e:
            if any(h in str(e).lower() for h in _OVERFLOW_HINTS):
                return overflow(0, s.n)
            raise DacliError(f"{self.base_url} rejected a request: {str(e).splitlines()[0]}") from None
        done = self._completions(r)
        if key:
            self.journal.record(key, done)
        return done

    def _create(self, settings: dict):
        """One request, retried through rate limits and server errors for up to retry_budget seconds."""
        openai = self.openai
        start, tries = time.monotonic(), 0
        while True:
            try:
                return self.client.chat.completions.create(**settings)
            except (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError) as e:
                tries += 1
                wait = _retry_after(e) or min(_MAX_WAIT, 2.0 ** tries) * random.uniform(0.5, 1.0)
                spent = time.monotonic() - start
                if spent + wait > self.budget:
                    raise GaveUp(f"{self.base_url}: still failing after retrying for {spent:.0f} s "
                                 f"(engine.retry_budget={self.budget:.0f}): {type(e).__name__}: "
                                 f"{str(e).splitlines()[0][:200]}") from None
                time.sleep(wait)

    def _completions(self, r) -> List[Completion]:
        usage = r.usage
        per_choice = (usage.completion_tokens // max(1, len(r.choices))) if usage else 0
        out = []
        for choice in sorted(r.choices, key=lambda c: c.index):
            msg = choice.message
            extra_fields = msg.model_extra or {}
            reasoning = extra_fields.get("reasoning") or extra_fields.get("reasoning_content")
            stop_reason = (choice.model_extra or {}).get("stop_reason")
            out.append(Completion(msg.content or "", usage.prompt_tokens if usage else 0, per_choice,
                                  choice.finish_reason or "stop", stop_reason if isinstance(stop_reason, str) else None,
                                  reasoning))
        return out

    def close(self) -> None:
        self.client.close()
        if self.journal is not None:
            self.journal.close()


def _retry_after(e) -> Optional[float]:
    """The wait a 429 or 503 asks for (Retry-After in seconds; retry-after-ms), capped at _MAX_WAIT."""
    headers = getattr(getattr(e, "response", None), "headers", None) or {}
    try:
        if headers.get("retry-after-ms"):
            return min(_MAX_WAIT, float(headers["retry-after-ms"]) / 1000)
        if headers.get("retry-after"):
            return min(_MAX_WAIT, float(headers["retry-after"]))
    except ValueError:  # an HTTP date: back off exponentially instead
        return None
    return None
