"""transformers' batched `generate`: left-padded, batches sorted by length."""
from typing import List, Optional

from .base import Completion, Conversation, Sampling, continues, overflow


class TransformersBackend:
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

    def chat(self, conversations: List[Conversation], sampling: Sampling, seed_offset: int = 0
             ) -> List[List[Completion]]:
        from .. import progress

        if not conversations:
            return []
        cont = continues(conversations)
        texts = [self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=not cont,
                                                    continue_final_message=cont, **self.chat_template_kwargs)
                 for c in conversations]
        lengths = [len(self.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
        results: List[List[Completion]] = [overflow(n, sampling.n) for n in lengths]
        order = sorted((i for i, n in enumerate(lengths) if n < self.max_model_len), key=lambda i: lengths[i])
        with progress.track("transformers generate", len(order)) as advance:
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                budget = min(sampling.max_tokens, self.max_model_len - max(lengths[i] for i in idx))
                batch = self._batch([texts[i] for i in idx], sampling, budget, sampling.seed + seed_offset + idx[0])
                for i, completions in zip(idx, batch):
                    results[i] = completions
                advance(len(idx))
        return results

    def _batch(self, texts: List[str], sampling: Sampling, max_tokens: int, seed: int) -> List[List[Completion]]:
        torch = self.torch
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        prompt_len = enc["input_ids"].shape[1]
        torch.manual_seed(seed)
        sample = sampling.temperature > 0
        with torch.no_grad():
            out = self.model.generate(
                **enc, max_new_tokens=max_tokens, do_sample=sample, num_return_sequences=sampling.n,
                temperature=sampling.temperature if sample else None, top_p=(1.0 if sampling.top_p is None else sampling.top_p) if sample else None,
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
