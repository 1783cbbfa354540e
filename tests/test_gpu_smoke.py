"""recipes/gpu_smoke.yaml end to end on a real GPU: `dacli run -m recipe=gpu_smoke` through the CLI
(vLLM generate and judge, LoRA training, adapter eval, report) for every method × count.

Needs a CUDA GPU, the `gpu` install and hub access for Qwen2.5-0.5B-Instruct; deselected by default
(`-m gpu` selects it) and skipped without CUDA. Run: `pytest -m gpu tests/test_gpu_smoke.py -s`.
The wall time is printed and kept as the test's `wall_seconds` property (`--junitxml` records it);
nothing asserts on it: the recipe's 15-minute target has not been measured yet. Each job must show that it
learned (_learned): its SFT loss falls, its adapters moved, its answers differ from the base model's.
"""
import json
import time

import pytest

from conftest import dacli, read_json


def _gpus() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _cuda() -> bool:
    return _gpus() > 0


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")
def test_gpu_smoke_runs_every_method_and_count(tmp_path, record_property):
    from deliberate_cli.compose import _sweep_values

    methods = _sweep_values("method", [], "gpu_smoke")
    counts = [int(n) for n in _sweep_values("data.n_samples", [], "gpu_smoke")]
    assert len(methods) == 5 and len(counts) >= 2

    root = tmp_path / "runs"
    started = time.time()
    proc = dacli("run", "-m", "recipe=gpu_smoke", f"run.root={root}", cwd=tmp_path, check=False, timeout=3 * 3600)
    wall = round(time.time() - started, 1)
    record_property("wall_seconds", wall)
    print(f"\ngpu_smoke: `dacli run -m recipe=gpu_smoke` took {wall} s ({wall / 60:.1f} min) "
          f"for {len(methods)} methods x {len(counts)} counts")
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"

    sweep = root / "sweeps" / "gpu_smoke"
    dacli("report", str(sweep), cwd=tmp_path)
    report = read_json(sweep / "report.json")
    assert not report["failed"] and not report["missing"], (report["failed"], report["missing"])
    am = {(r["method"], r["n_samples"]): r for r in report["rows"] if r["eval"] == "am"}
    for method in methods:
        for n in counts:
            row = am.get((method, n))
            assert row is not None, f"no AM row for {method} n={n}"
            assert row["n"] > 0 and 0.0 <= row["rate"] <= 1.0, row
    assert any(m == "baseline" for m, _ in am), "no baseline row"
    md = (sweep / "report.md").read_text()
    for method in methods:
        assert f"| {method} |" in md
    for run in sorted(p for p in sweep.iterdir() if (p / "config.yaml").is_file()):
        _learned(run)


@pytest.mark.gpu
@pytest.mark.skipif(_gpus() < 2, reason="needs two CUDA GPUs")
def test_fsdp_training_a_tensor_parallel_eval_and_a_local_grader(tmp_path, record_property):
    """With two GPUs, the paths the paper recipe takes on four: FSDP trains the LoRA adapter over two
    processes and saves one adapter that loads and serves; the eval serves it on its base with tensor
    parallel size 2; a local vLLM grader (the same 0.5B model) grades every AM sample."""
    root = tmp_path / "runs"
    started = time.time()
    proc = dacli("run", "recipe=gpu_smoke", "method=aft_cot", "data.n_samples=32", f"run.root={root}",
                 "run.name=multi", "train.num_processes=2", "train.accelerate_config=fsdp",
                 "eval.engine.tensor_parallel_size=2", "eval.engine.gpu_memory_utilization=0.4",
                 "eval.grader.enabled=true", "eval.grader.model=null", "eval.grader.engine.backend=vllm",
                 "eval.grader.engine.model_path=Qwen/Qwen2.5-0.5B-Instruct", "eval.grader.engine.enforce_eager=true",
                 "eval.grader.engine.gpu_memory_utilization=0.4", "eval.grader.max_model_len=8192",
                 cwd=tmp_path, check=False, timeout=3600)
    wall = round(time.time() - started, 1)
    record_property("wall_seconds", wall)
    print(f"\ngpu_smoke on 2 GPUs (FSDP, TP 2, local grader): {wall} s")
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    run = root / "multi"
    sft = read_json(run / "checkpoints" / "sft" / "manifest.json")
    assert int(sft["counts"]["processes"]) == 2 and (run / "checkpoints" / "sft" / "adapter_model.safetensors").is_file()
    scores = read_json(run / "eval" / "am" / "scores.json")
    samples = [json.loads(line) for line in (run / "eval" / "am" / "samples.jsonl").read_text().splitlines()]
    assert samples and all(s["layer"] == "grader" for s in samples)
    graded = [s for s in samples if s["grader"]["classifier_verdict"] != "unscored"]
    assert graded, "the local grader scored no sample"
    assert scores["grader"]["model"] and scores["overall"]["n"] > 0
    _learned(run)


def _learned(run) -> None:
    """What shows that a job's training learned something, not only that it ran: the SFT loss falls, the
    adapter's weights moved off their initial values (LoRA's B starts at zero), and the trained model's
    answers differ from the base model's on the same scenarios and seeds (on a GPU each request carries
    its own seed). Prints each stage's time, tokens/s and the training MFU."""
    import yaml
    from safetensors.torch import load_file

    config = yaml.safe_load((run / "config.yaml").read_text())
    params = float(config["model"]["params_b"]) * 1e9
    peak = float(config["throughput"]["peak_tflops"]) * 1e12
    for stage in config["method"]["stages"]:
        m = read_json(run / "checkpoints" / stage / "manifest.json")
        losses, c = m.get("loss_history") or [], m["counts"]
        gpus = max(1, int(c.get("processes") or 1))
        tps = c.get("tokens_per_second")
        mfu = (6 * params * tps / (peak * gpus)) if tps else None
        print(f"{run.name} {stage}: {m['timings']['seconds']} s, {tps} tokens/s, MFU "
              f"{'-' if mfu is None else f'{100 * mfu:.1f}%'} (6 FLOPs/token/parameter, {gpus} GPU(s))")
        if stage == "sft":
            assert len(losses) >= 2 and losses[-1] < losses[0], f"{run.name}: SFT loss did not fall: {losses}"
        lora_b = [w for k, w in load_file(str(run / "checkpoints" / stage / "adapter_model.safetensors")).items()
                  if "lora_B" in k]
        assert lora_b and any(float(w.abs().sum()) > 0 for w in lora_b), f"{run.name} {stage}: adapter untrained"
    trained = {(s["condition"], s["sample"]): s["response"] for s in map(json.loads,
               (run / "eval" / "am" / "samples.jsonl").read_text().splitlines())}
    base = {(s["condition"], s["sample"]): s["response"] for s in map(json.loads,
            (run / "eval" / "am-baseline" / "samples.jsonl").read_text().splitlines())}
    same = [k for k in trained if k in base and trained[k] == base[k]]
    assert len(same) < len(trained), f"{run.name}: every answer is the base model's"
