"""One interface for every engine (base.py): a batch of chat conversations in, completions out, used
by generate, the judge and the evals alike. Each implementation is its own module and imports its
engine (vLLM, torch, the OpenAI client) only when it is opened, so importing this package costs
nothing; `engine.backend` picks one from BACKENDS.
"""
from ..errors import DacliError
from .base import Backend, Completion, Conversation, Sampling, continues, overflow, prompt_lengths
from .hf_generate import TransformersBackend
from .http_client import OpenAIBackend
from .vllm_engine import VllmBackend

__all__ = ["Backend", "Completion", "Conversation", "Sampling", "continues", "overflow", "prompt_lengths",
           "BACKENDS", "open_backend"]

BACKENDS = {"vllm": VllmBackend, "transformers": TransformersBackend, "openai": OpenAIBackend}


def open_backend(engine, model_path: str, model_cfg) -> Backend:
    """The engine for a model; a LoRA checkpoint is served as an adapter or merged (models.servable)."""
    from ..models import servable

    if engine.backend not in BACKENDS:
        raise DacliError(f"unknown backend '{engine.backend}'; valid: {', '.join(BACKENDS)}")
    extra = {}
    if engine.backend != "openai":  # an endpoint serves whatever it serves
        model_path, adapter = servable(engine, model_path)
        extra = {"adapter": adapter} if adapter else {}
    return BACKENDS[engine.backend](model_path, engine, model_cfg.max_model_len, dict(model_cfg.chat_template_kwargs),
                                    **extra)
