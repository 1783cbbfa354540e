"""`dacli generate` against a plain loop over the same engine, on the same prompts, in one run.

Run: `.venv/bin/python benchmarks/generate_throughput.py [--backend vllm|transformers] [--n 32]`
Both sides decode greedily with the same budgets and the same two calls per prompt (CoT after
`<think>\\n`, then the answer after `</think>`), so they generate the same tokens. The plain side
times its `LLM.chat` / `generate` calls; dacli's side is read from its manifest (engine_seconds:
the time of its generation shards, prompt rendering, length checks and record building included).
Target: dacli / plain >= 0.95 tokens/s. Default model: the embedded SmolLM2-135M.
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
COT_MAX, RESP_MAX, STOP = 128, 128, ["</think>", "\n\n"]


def plain_vllm(model, convs):
    from vllm import LLM, SamplingParams

    import torch

    from deliberate_cli.backends.vllm_engine import cpu_dtype

    # The dtype dacli's vLLM backend picks: on CPU, float32 unless the CPU has bf16 instructions.
    llm = LLM(model=model, max_model_len=4096, enforce_eager=True, gpu_memory_utilization=0.4, seed=0,
              dtype="auto" if torch.cuda.is_available() else cpu_dtype())
    t0 = time.perf_counter()
    cots = llm.chat([c + [{"role": "assistant", "content": "<think>\n"}] for c in convs],
                    SamplingParams(temperature=0, max_tokens=COT_MAX, stop=STOP), add_generation_prompt=False,
                    continue_final_message=True, use_tqdm=False)
    resp = llm.chat([c + [{"role": "assistant", "content": f"<think>\n{o.outputs[0].text.strip()}\n</think>\n\n"}]
                     for c, o in zip(convs, cots)], SamplingParams(temperature=0, max_tokens=RESP_MAX),
                    add_generation_prompt=False, continue_final_message=True, use_tqdm=False)
    seconds = time.perf_counter() - t0
    return sum(len(o.outputs[0].token_ids) for o in cots + resp), seconds


def plain_transformers(model, convs, batch_size=16):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model, padding_side="left")
    lm = AutoModelForCausalLM.from_pretrained(model).eval()

    def run(texts, max_new, stop):
        outs, n = [], 0
        for i in range(0, len(texts), batch_size):
            enc = tok(texts[i:i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.no_grad():
                gen = lm.generate(**enc, max_new_tokens=max_new, do_sample=False, stop_strings=stop or None,
                                  tokenizer=tok, pad_token_id=tok.pad_token_id)
            for row in gen[:, enc["input_ids"].shape[1]:]:
                ids = [t for t in row.tolist() if t != tok.pad_token_id]
                n += len(ids)
                text = tok.decode(ids, skip_special_tokens=True)
                for s in stop:
                    text = text.split(s)[0]
                outs.append(text)
        return outs, n

    t0 = time.perf_counter()
    texts = [tok.apply_chat_template(c + [{"role": "assistant", "content": "<think>\n"}], tokenize=False,
                                     continue_final_message=True) for c in convs]
    cots, n1 = run(texts, COT_MAX, STOP)
    texts = [tok.apply_chat_template(c + [{"role": "assistant", "content": f"<think>\n{t.strip()}\n</think>\n\n"}],
                                     tokenize=False, continue_final_message=True) for c, t in zip(convs, cots)]
    _, n2 = run(texts, RESP_MAX, [])
    return n1 + n2, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", choices=["vllm", "transformers"], default="vllm")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--model", default=None, help="HF dir (default: the embedded SmolLM2-135M)")
    a = ap.parse_args()

    from deliberate_cli.compose import load
    from deliberate_cli.models import resolve
    from deliberate_cli.prompts import load_prompts
    from deliberate_cli.spec import generator_system_prompt, load_spec

    cfg = load([f"data.n_samples={a.n}"])
    model = a.model or resolve(cfg.model)
    system = generator_system_prompt(load_spec(cfg.spec))
    convs = [[{"role": "system", "content": system}, {"role": "user", "content": p["prompt"]}]
             for p in load_prompts(cfg.data)]

    if a.backend == "vllm":
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        # The plain engine runs in a child so that its memory is gone before dacli's engine starts.
        out = subprocess.run([sys.executable, __file__, "--plain-vllm-child", model], input=json.dumps(convs),
                             capture_output=True, text=True, check=True).stdout
        plain_tokens, plain_s = json.loads(next(l for l in out.splitlines() if l.startswith("RESULT "))[7:])
    else:
        plain_tokens, plain_s = plain_transformers(model, convs)

    with tempfile.TemporaryDirectory() as root:
        # The quickstart recipe carries the same CoT stop ("</think>" or a blank line) as the plain side.
        overrides = ["recipe=quickstart", f"data.n_samples={a.n}", f"model.name_or_path={model}", f"run.root={root}",
                     "judge=none",
                     f"generator.backend={a.backend}", "generator.temperature=0", f"generator.cot_max_tokens={COT_MAX}",
                     f"generator.response_max_tokens={RESP_MAX}",
                     "generator.cot_budget=force", "generator.enforce_eager=true", "generator.gpu_memory_utilization=0.4",
                     "generator.cpu_kvcache_gb=2", "generator.batch_size=16", "model.max_model_len=4096",
                     "judge.check_expected_behavior=false",
                     "judge.check_label_policy_ids=false", "judge.allow_truncated_response=true"]
        subprocess.run([sys.executable, "-m", "deliberate_cli", "generate", *overrides], cwd=REPO, check=True,
                       capture_output=True)
        manifest = next(Path(root).glob("store/aft-*/manifest.json"))
        counts = json.loads(manifest.read_text())["history"][-1]
    print_ratio(f"backend={a.backend} prompts={a.n} model={model}", (plain_tokens, plain_s),
                (counts["generated_tokens"], counts["engine_seconds"]))

if __name__ == "__main__":
    if sys.argv[1:2] == ["--plain-vllm-child"]:
        print("RESULT " + json.dumps(plain_vllm(sys.argv[2], json.loads(sys.stdin.read()))), flush=True)
    else:
        main()
