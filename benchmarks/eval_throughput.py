"""`dacli eval am` against a plain `LLM.chat` loop over the same engine and prompts, in one run.

Run: `.venv/bin/python benchmarks/eval_throughput.py [--max-tokens 256] [--model DIR] [--temperature 0.7 --k 2]`
Both sides send the AM scenarios of `eval=am` (27 conditions, or those matching --conditions) with k
samples each in one batched call, with the same sampling settings. By default they decode greedily
(k=1: vLLM refuses n > 1 without sampling, and dacli refuses it too), so both sides generate the same
tokens and the ratio compares equal work. With --temperature > 0 on CPU, vLLM seeds per engine, so the
sides' samples and their lengths differ: read the seconds ratio then too. The plain side times its
`LLM.chat` call; dacli's side is read from the eval manifest (engine_seconds: the engine calls, shard
by shard, and parsing and classifying every sample; not the engine's load). Target: dacli / plain >= 0.95 tokens/s. Default model:
the embedded SmolLM2-135M on vLLM CPU.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _table import print_ratio

REPO = Path(__file__).resolve().parent.parent


def plain_vllm(model, convs, k, max_tokens, temperature):
    from vllm import LLM, SamplingParams

    import torch

    from deliberate_cli.backends.vllm_engine import cpu_dtype

    # The dtype dacli's vLLM backend picks: on CPU, float32 unless the CPU has bf16 instructions.
    llm = LLM(model=model, max_model_len=4096, enforce_eager=True, gpu_memory_utilization=0.4, seed=0,
              dtype="auto" if torch.cuda.is_available() else cpu_dtype())
    # The same seeding as dacli's: per request on GPU, the engine's seed on CPU (see backends/vllm_engine.py).
    gpu = torch.cuda.is_available()
    params = [SamplingParams(n=k, temperature=temperature, top_p=1.0, max_tokens=max_tokens, seed=i if gpu else None)
              for i in range(len(convs))]
    t0 = time.perf_counter()
    outs = llm.chat(convs, params, use_tqdm=False)
    seconds = time.perf_counter() - t0
    return sum(len(o.token_ids) for out in outs for o in out.outputs), seconds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--model", default=None, help="HF dir (default: the embedded SmolLM2-135M)")
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--conditions", default="*", help="fnmatch patterns, comma-separated (default: all 27)")
    a = ap.parse_args()
    if a.temperature <= 0 and a.k > 1:
        ap.error("greedy decoding gives k identical samples: use --k 1 or a --temperature above 0")
    import fnmatch

    patterns = a.conditions.split(",")

    from deliberate_cli.compose import load
    from deliberate_cli.evals.am import load_family, scenarios
    from deliberate_cli.models import resolve

    cfg = load([])
    model = a.model or resolve(cfg.model)
    convs = [[{"role": "system", "content": s["system"]}, {"role": "user", "content": s["user"]}]
             for f in cfg.eval.am.families for s in scenarios(load_family(f))
             if any(fnmatch.fnmatch(s["condition"], p) for p in patterns)]
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    # The plain engine runs in a child so that its memory is gone before dacli's engine starts.
    out = subprocess.run([sys.executable, __file__, "--plain-child", model, str(a.k), str(a.max_tokens),
                          str(a.temperature)],
                         input=json.dumps(convs), capture_output=True, text=True, check=True).stdout
    plain_tokens, plain_s = json.loads(next(l for l in out.splitlines() if l.startswith("RESULT "))[7:])

    with tempfile.TemporaryDirectory() as root:
        overrides = [f"model.name_or_path={model}", f"run.root={root}", "eval.checkpoint=base",
                     f"eval.samples_per_scenario={a.k}", f"eval.am.conditions=[{','.join(repr(p) for p in patterns)}]", f"eval.max_tokens={a.max_tokens}", f"eval.temperature={a.temperature}",
                     "eval.engine.enforce_eager=true", "eval.engine.gpu_memory_utilization=0.4",
                     "eval.engine.cpu_kvcache_gb=2"]
        subprocess.run([sys.executable, "-m", "deliberate_cli", "eval", "am", *overrides], cwd=REPO, check=True,
                       capture_output=True)
        counts = json.loads(next(Path(root).rglob("eval/am/manifest.json")).read_text())["counts"]
    print_ratio(f"model={model} scenarios={len(convs)} k={a.k} max_tokens={a.max_tokens} temperature={a.temperature}",
                (plain_tokens, plain_s), (counts["generated_tokens"], counts["engine_seconds"]), seconds_ratio=True)

if __name__ == "__main__":
    if sys.argv[1:2] == ["--plain-child"]:
        print("RESULT " + json.dumps(plain_vllm(sys.argv[2], json.loads(sys.stdin.read()), int(sys.argv[3]),
                                                int(sys.argv[4]), float(sys.argv[5]))), flush=True)
    else:
        main()
