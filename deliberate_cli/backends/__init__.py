"""One interface for every engine (base.py): a batch of chat conversations in, completions out, used
by generate, the judge and the evals alike. Each implementation is its own module and imports its
engine (vLLM, torch, the OpenAI client, inspect_ai) only when it is opened, so importing this package
costs nothing; `engine.model` (an Inspect model name) picks inspect_ai, else `engine.backend` picks
one from BACKENDS. Every engine opened here is metered: its requests and tokens go to the stage's
usage (usage.py), under the role it plays (generator, judge, eval, grader, monitor).
"""
from pathlib import Path
from typing import List, Optional

from .. import usage
from ..errors import DacliError
from .base import Backend, Completion, Conversation, Sampling, continues, overflow, prompt_lengths
from .hf_generate import TransformersBackend
from .http_client import OpenAIBackend
from .inspect_model import InspectBackend
from .vllm_engine import VllmBackend

__all__ = ["Backend", "Completion", "Conversation", "Sampling", "continues", "overflow", "prompt_lengths",
           "BACKENDS", "open_backend", "model_name"]

BACKENDS = {"vllm": VllmBackend, "transformers": TransformersBackend, "openai": OpenAIBackend,
            "inspect": InspectBackend}
# Backends that send requests to a server: what they answered is journaled (journal.py), and the model
# is named by the server, not located on disk.
REMOTE = ("openai", "inspect")


def kind(engine) -> str:
    return "inspect" if engine.get("model") else engine.backend


def model_name(engine, model_path: str) -> str:
    """The model as usage and manifests name it: the Inspect name, or the served name or path."""
    return engine.get("model") or (engine.served_model_name if kind(engine) == "openai" else None) or model_path


def open_backend(engine, model_path: str, model_cfg, role: str, journal: Optional[Path] = None) -> Backend:
    """The engine for a model; a LoRA checkpoint is served as an adapter or merged (models.servable).
    `journal`: a file that keeps a remote model's answers as they arrive (ignored by local engines)."""
    from ..models import servable

    chosen = kind(engine)
    if chosen not in BACKENDS:
        raise DacliError(f"unknown backend '{engine.backend}'; valid: {', '.join(BACKENDS)}")
    if chosen == "inspect" and not engine.get("model"):
        raise DacliError("backend=inspect needs a model named the way Inspect names it, e.g. "
                         "model=anthropic/claude-sonnet-4-6")
    extra = {}
    if chosen in REMOTE:  # an endpoint serves whatever it serves
        extra = {"journal": journal}
        if chosen == "inspect":
            model_path = engine.model
    else:
        model_path, adapter = servable(engine, model_path)
        extra = {"adapter": adapter} if adapter else {}
    opened = BACKENDS[chosen](model_path, engine, model_cfg.max_model_len, dict(model_cfg.chat_template_kwargs),
                              **extra)
    return Metered(opened, role, model_name(engine, model_path))


class Metered:
    """A backend whose requests and tokens are counted for the stage's manifest (usage.count). An answer
    read back from a journal is counted too: it was asked by a try that was killed before it wrote a
    manifest, or by the finished entry that this build replaces, so it is what this output cost."""

    def __init__(self, backend: Backend, role: str, model: str):
        self.backend, self.role, self.model = backend, role, model

    def chat(self, conversations: List[Conversation], sampling: Sampling, seed_offset: int = 0
             ) -> List[List[Completion]]:
        out = self.backend.chat(conversations, sampling, seed_offset)
        answered = [cs for cs in out if cs and cs[0].finish_reason != "overflow"]
        if getattr(self.backend, "request_per_sample", False):  # each sample its own request, prompt and all
            requests, prompts = sum(map(len, answered)), sum(c.prompt_tokens for cs in answered for c in cs)
        else:  # one request per conversation, its prompt counted once
            requests, prompts = len(answered), sum(cs[0].prompt_tokens for cs in answered)
        usage.count(self.role, self.model, requests=requests, input_tokens=prompts,
                    output_tokens=sum(c.completion_tokens for cs in answered for c in cs))
        return out

    def __getattr__(self, name):  # the backend's own attributes (tokenizer, max_model_len, ...)
        return getattr(self.backend, name)

    def close(self) -> None:
        self.backend.close()
