"""`dacli train` against a plain TRL SFTTrainer script: same model, data and settings, in one run.

Run: `.venv/bin/python benchmarks/train_throughput.py [--n 64] [--epochs 1] [--repeats 2] [--packing] [--model DIR]`
The data are the bundled prompts with a fixed CoT and answer each (the benchmark measures training,
not generation). The plain side is the shortest correct TRL script for the same job; dacli's side is
`dacli train method=aft_cot` in its own process, its time read from the manifest (train_seconds: the
`trainer.train()` call). The sides alternate `--repeats` times; `--packing` adds a dacli row with
packing on, the choice docs/configs.md discusses.
Target: dacli / plain >= 0.97 tokens/s. Default model: the embedded SmolLM2-135M, fp32 on CPU (bf16 on
a GPU, where the benchmark also prints dacli's MFU: 6 x parameters x tokens/s over the card's peak).
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COT = "Relevant policies: {ids}. The request is {cat}; the spec asks me to {exp} here, briefly and kindly."
RESPONSE = "Here is my answer to your request, following the policies above: " + "details " * 20


def rows_for(prompts):
    return [dict(p, cot=COT.format(ids=", ".join(p["label_policy_ids"]), cat=p["category"], exp=p["expected_behavior"]),
                 response=RESPONSE.strip()) for p in prompts]


def plain_trl(model, rows, epochs, batch_size, lr, out):
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    data = [{"prompt": [{"role": "user", "content": r["prompt"]}],
             "completion": [{"role": "assistant", "content": f"<think>\n{r['cot']}\n</think>\n\n{r['response']}"}]}
            for r in rows]
    tok = AutoTokenizer.from_pretrained(model)
    gpu = torch.cuda.is_available()  # on a GPU both sides train in bf16 (dacli's side: train.bf16=true)
    args = SFTConfig(output_dir=out, num_train_epochs=epochs, per_device_train_batch_size=batch_size, learning_rate=lr,
                     lr_scheduler_type="cosine", warmup_steps=0.05, logging_steps=1, save_strategy="no", bf16=gpu,
                     gradient_checkpointing=False, max_length=None, report_to=[], use_cpu=not gpu, seed=0,
                     model_init_kwargs={"dtype": torch.bfloat16 if gpu else torch.float32})
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(data), processing_class=tok)
    lengths = [len(x) for x in trainer.train_dataset["input_ids"]]
    t0 = time.perf_counter()
    trainer.train()
    return sum(lengths) * epochs, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--model", default=None)
    ap.add_argument("--repeats", type=int, default=2, help="alternating plain/dacli pairs")
    ap.add_argument("--packing", action="store_true", help="add a dacli row with packing on (docs/configs.md)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak, for MFU")
    a = ap.parse_args()

    from omegaconf import OmegaConf

    from deliberate_cli import rundir
    from deliberate_cli.compose import load
    from deliberate_cli.generate import aft
    from deliberate_cli.models import resolve
    from deliberate_cli.prompts import load_prompt_set, load_prompts

    import torch

    gpu = torch.cuda.is_available()
    cfg = load([f"data.n_samples={a.n}"])
    model = a.model or resolve(cfg.model)
    rows = rows_for(load_prompts(cfg.data))
    results = []

    def plain(label, root):
        # In its own process, like dacli's stage: neither side runs beside the other's leftover model.
        job = json.dumps({"model": model, "rows": rows, "epochs": a.epochs, "batch_size": a.batch_size,
                          "out": str(Path(root) / "".join(ch if ch.isalnum() else "_" for ch in label))})
        out = subprocess.run([sys.executable, __file__, "--plain-child"], input=job, capture_output=True, text=True,
                             check=True).stdout
        tokens, seconds = json.loads(next(l for l in out.splitlines() if l.startswith("RESULT "))[7:])
        results.append((label, tokens, seconds))

    def dacli(label, root, packing):
        run_root = Path(root) / "".join(ch if ch.isalnum() else "_" for ch in label)
        overrides = [f"data.n_samples={a.n}", f"model.name_or_path={model}", "model.name=bench", f"run.root={run_root}",
                     "method=aft_cot", f"train.epochs={a.epochs}", f"train.batch_size={a.batch_size}",
                     "train.learning_rate=1e-5", "train.report_to=[]", f"train.packing={packing}",
                     f"train.bf16={gpu}", "train.gradient_checkpointing=false"]
        # The benchmark's rows stand in for generated data: written as the AFT data's store entry, with
        # the manifest train checks, and linked from the run dir as generate links its data.
        bench_cfg = load(overrides)
        OmegaConf.update(bench_cfg, "run.dir", str(run_root / f"bench-aft_cot-n{a.n}"))
        entry = aft.entry(bench_cfg, load_prompt_set(bench_cfg.data)[1], len(rows))
        entry.materialise(lambda out: rundir.write_parquet(out / "aft.parquet", rows) or {"counts": {"prompts": len(rows)}},
                          link=(bench_cfg, "data/aft"))
        subprocess.run([sys.executable, "-m", "deliberate_cli", "train", *overrides], cwd=REPO, check=True,
                       capture_output=True)
        sft = run_root / f"bench-aft_cot-n{a.n}" / "checkpoints" / "sft"
        m = json.loads((sft / "manifest.json").read_text())["counts"]
        results.append((label, m["train_tokens"], m["train_seconds"]))

    with tempfile.TemporaryDirectory() as root:
        # Alternating sides, so that drift of the machine (heat, other load) falls on both alike.
        for i in range(a.repeats):
            plain(f"plain TRL #{i + 1}", root)
            dacli(f"dacli #{i + 1}", root, "false")
        if a.packing:
            dacli("dacli packing=true", root, "true")

    def rate(prefix):
        picked = [r for r in results if r[0].startswith(prefix)]
        return sum(t for _, t, _ in picked) / sum(sec for _, _, sec in picked)

    base = rate("plain TRL #")
    print(f"model={model} examples={a.n} epochs={a.epochs} batch={a.batch_size} repeats={a.repeats}")
    print(f"{'side':22} {'tokens':>8} {'seconds':>8} {'tok/s':>8} {'ratio':>6}")
    for name, tokens, seconds in results:
        print(f"{name:22} {tokens:8d} {seconds:8.1f} {tokens / seconds:8.1f} {tokens / seconds / base:6.3f}")
    print(f"ratio dacli/plain over all repeats: {rate('dacli #') / base:.3f} (target >= 0.97); "
          f"per-row ratios are against the plain mean, their spread is the noise floor")
    if gpu:
        print(mfu(model, rate("dacli #"), a.peak_tflops))


# Dense bf16 peak of one GPU, TFLOP/s, by the name torch reports (no sparsity).
PEAK_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.0, "A10G": 125.0}


def mfu(model: str, tokens_per_second: float, peak_tflops) -> str:
    """Model FLOPs utilisation of one GPU: 6 x parameters x tokens/s (forward and backward, attention
    left out) over the card's bf16 peak."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    with init_empty_weights():
        params = sum(p.numel() for p in AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model)).parameters())
    name = torch.cuda.get_device_name(0)
    peak = peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    if peak is None:
        return f"MFU: unknown bf16 peak for {name}; pass --peak-tflops"
    return (f"MFU on {name}: {100 * 6 * params * tokens_per_second / (peak * 1e12):.1f}% "
            f"({params / 1e6:.0f}M parameters, {tokens_per_second:.0f} tokens/s, peak {peak} TFLOP/s)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--plain-child"]:
        job = json.loads(sys.stdin.read())
        print("RESULT " + json.dumps(plain_trl(job["model"], job["rows"], job["epochs"], job["batch_size"], 1e-5,
                                               job["out"])), flush=True)
    else:
        main()
