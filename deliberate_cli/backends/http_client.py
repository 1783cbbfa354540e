"""An OpenAI-compatible HTTP endpoint (`vllm serve`, or any hosted API) through the `openai` package.

The key comes only from the environment variable named by `api_key_env` and is never written
anywhere. Requests run concurrently; the client retries connection failures a bounded number of
times, then the stage stops with one line naming the endpoint.
"""
import os
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional

from ..errors import DacliError
from .base import Completion, Conversation, Sampling, continues, overflow

_OVERFLOW_HINTS = ("context length", "maximum context", "too long", "max_model_len")


class OpenAIBackend:
    def __init__(self, model_path: str, engine, max_model_len: int, chat_template_kwargs: Optional[dict] = None):
        import openai

        if not engine.base_url:
            raise DacliError("backend=openai needs base_url, e.g. generator.base_url=http://127.0.0.1:8000/v1")
        self.openai = openai
        self.base_url = engine.base_url
        self.client = openai.OpenAI(base_url=engine.base_url, api_key=os.environ.get(engine.api_key_env) or "EMPTY",
                                    max_retries=engine.max_retries, timeout=engine.request_timeout)
        self.model = engine.served_model_name or model_path
        self.concurrency = engine.concurrency
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
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
        openai = self.openai
        try:
            r = self.client.chat.completions.create(
                model=self.model, messages=conv, n=s.n, max_tokens=s.max_tokens, temperature=s.temperature,
                top_p=s.top_p, seed=seed, stop=s.stop or None, extra_body=extra or None)
        except openai.BadRequestError as e:
            if any(h in str(e).lower() for h in _OVERFLOW_HINTS):
                return overflow(0, s.n)
            raise DacliError(f"{self.base_url} rejected a request: {str(e).splitlines()[0]}") from None
        except openai.APIConnectionError as e:
            raise DacliError(f"lost {self.base_url} (after retries): {e}") from None
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
