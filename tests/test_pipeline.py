"""End to end on the tiny model, through the real CLI: files written, records counted, caching."""
import json

import pyarrow.parquet as pq

from conftest import dacli, read_json, tiny_overrides


def test_generate_train_eval_report_and_cache(tiny_model, tiny_store, tmp_path):
    args = tiny_overrides(tiny_model, tmp_path / "runs", "method=aft_cot", "train.learning_rate=1e-3", "train.epochs=4",
                          "train.batch_size=2", f"run.store={tiny_store}", "eval.samples_per_scenario=1")
    run = tmp_path / "runs" / "tiny-aft_cot-8ex"

    dacli("generate", *args, cwd=tmp_path)
    data = run / "data" / "aft"
    kept = pq.read_table(data / "aft.parquet").to_pylist()
    rejects = pq.read_table(data / "rejects.parquet").to_pylist()
    manifest = read_json(data / "manifest.json")
    assert manifest["counts"]["prompts"] == 8
    assert len(kept) + len(rejects) == manifest["counts"]["samples"] == 8
    assert manifest["counts"]["kept"] == len(kept) > 0
    assert manifest["versions"]["transformers"] and manifest["config_hash"]
    diversity = manifest["counts"]["diversity"]
    assert diversity["prompts"]["n"] == 8 and diversity["cots"]["n"] == len(kept) and 0 < diversity["cots"]["distinct_2"] <= 1
    assert sum(diversity["prompts"]["balance"]["counts"].values()) == 8
    for r in kept:
        assert r["cot"] and r["response"] and r["prompt"]
        assert "[HA1]" not in json.dumps(r)  # the spec never enters a training record
    assert not list(run.rglob("*.partial"))

    stamp = (data / "manifest.json").stat().st_mtime_ns
    out = dacli("generate", *args, cwd=tmp_path).stdout
    assert (data / "manifest.json").stat().st_mtime_ns == stamp and "cached" in out

    dacli("train", *args, cwd=tmp_path)
    sft = run / "checkpoints" / "sft"
    m = read_json(sft / "manifest.json")
    assert m["counts"]["examples"] == len(kept) and m["counts"]["steps"] >= 4
    assert m["counts"]["last_loss"] < m["counts"]["first_loss"]
    assert m["counts"]["truncated"] == 0 and m["counts"]["max_length"] >= m["counts"]["longest_example"]
    assert m["inputs"]["data"]["records_sha256"] and m["inputs"]["data"]["records"] == str(len(kept))
    assert list((sft / "tensorboard").rglob("events.out.tfevents*"))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(sft)
    assert AutoTokenizer.from_pretrained(sft).chat_template

    # A max_length that leaves a prompt no completion tokens is an error, and the checkpoint survives it.
    proc = dacli("train", *args, "train.max_length=8", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "lose every completion token at max_length=8" in proc.stderr
    assert read_json(sft / "manifest.json") == m

    dacli("eval", "am", *args, cwd=tmp_path)
    scores = read_json(run / "eval" / "am" / "scores.json")
    samples = [json.loads(l) for l in (run / "eval" / "am" / "samples.jsonl").read_text().splitlines()]
    # 3 families x 6 conditions + 9, a sample each; the inboxes longer than the tiny model's 2,048-token
    # context generate nothing and are unscored, never benign
    assert len(samples) == 3 * 6 + 9 == scores["overall"]["n"] + scores["unscored"]
    assert scores["unscored"] == scores["finish_reasons"].get("overflow", 0) and scores["overall"]["n"] > 0
    assert 0 <= scores["overall"]["ci_low"] <= scores["overall"]["rate"] <= scores["overall"]["ci_high"] <= 1
    assert {s["layer"] for s in samples} == {"deterministic"} and all(s["reason"] for s in samples)
    assert scores["model_path"] == str(sft)

    dacli("report", str(run), cwd=tmp_path)
    report = (run / "report.md").read_text()
    assert "| aft_cot |" in report and f"({scores['overall']['k']}/{scores['overall']['n']})" in report
    assert (run / "am_rate.png").stat().st_size > 1000


def test_run_msm_method_midtrains_then_sfts_with_lora_adapters(tiny_model, tmp_path):
    # (the eval runs on transformers: vLLM serving a checkpoint dacli wrote is test_lora's, marked slow;
    # test_backends runs vLLM by default)
    args = tiny_overrides(tiny_model, tmp_path / "runs", "method=msm_aft", "eval.baseline=false", "train.lora.enabled=true",
                          "train.lora.r=4", "train.learning_rate=1e-3", "train.midtrain_learning_rate=1e-3",
                          "train.report_to=[]", "eval.samples_per_scenario=1", "eval.am.conditions=[*_none_none]")
    out = dacli("run", *args, cwd=tmp_path).stdout
    run = tmp_path / "runs" / "tiny-msm_aft-8ex"
    docs = pq.read_table(run / "data" / "msm" / "msm_docs.parquet").to_pylist()
    assert docs and all(d["doc_type"] and d["idea"] and d["subdomain"] and d["domain"] for d in docs)
    corpus = read_json(run / "data" / "msm" / "manifest.json")["counts"]  # msm.tokens=150 (tiny_overrides)
    assert corpus["budget_reached"] and corpus["tokens"] == sum(d["tokens"] for d in docs) >= 150
    assert len({d["idea"] for d in docs}) == len(docs)  # the budget met with new ideas, never a repeated one
    mid = read_json(run / "checkpoints" / "midtrain" / "manifest.json")
    sft = read_json(run / "checkpoints" / "sft" / "manifest.json")
    assert mid["counts"]["examples"] == len(docs)
    mid_dir = (run / "checkpoints" / "midtrain").resolve()
    assert mid_dir.parent == (tmp_path / "runs" / "store").resolve()
    assert (run / "report.md").is_file() and (run / "eval" / "am" / "scores.json").is_file()
    assert "report" in out and "sft" in out

    # With LoRA each stage saves its adapter only; sft trains on the midtrained weights, merged once for it.
    from safetensors.torch import load_file

    from deliberate_cli.models import adapter_info

    sft_dir = run / "checkpoints" / "sft"
    for ckpt in (sft_dir, mid_dir):
        assert (ckpt / "adapter_model.safetensors").is_file() and not (ckpt / "config.json").exists()
    assert adapter_info(mid_dir)["base"] == str(tiny_model) and adapter_info(mid_dir)["r"] == 4
    assert sft["inputs"]["init"]["path"] == str(mid_dir) and sft["base_model"] == str(mid_dir / "merged")
    assert adapter_info(sft_dir)["base"] == str(mid_dir / "merged") and (mid_dir / "merged" / "config.json").is_file()
    lora_b = [t for n, t in load_file(sft_dir / "adapter_model.safetensors").items() if "lora_B" in n]
    assert lora_b and any(t.abs().sum() > 0 for t in lora_b) and sft["counts"]["lora"] is True  # trained: B starts at 0
    # the transformers engine cannot serve an adapter: the eval merged it once, beside it
    assert (sft_dir / "merged" / "config.json").is_file()

    # The other msm_* method re-uses the AFT data, the MSM corpus and the midtrained checkpoint: its
    # generate only links the store entries into its run dir, and its train midtrains nothing.
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs" / "store").glob("*/manifest.json")}
    gen = dacli("generate", *args, "method=msm_aft_cot", cwd=tmp_path).stdout
    assert gen.count("cached") == 2 and {p: p.stat().st_mtime_ns for p in stamps} == stamps
    dacli("train", *args, "method=msm_aft_cot", cwd=tmp_path)
    cot_run = tmp_path / "runs" / "tiny-msm_aft_cot-8ex"
    assert (cot_run / "checkpoints" / "midtrain").resolve() == mid_dir
    assert read_json(mid_dir / "manifest.json") == mid
    cot_sft = read_json(cot_run / "checkpoints" / "sft" / "manifest.json")
    assert cot_sft["base_model"] == str(mid_dir / "merged") and cot_sft["config"]["sft"]["cot"] is True


def test_user_errors_in_stages_are_one_line(tiny_model, tmp_path):
    args = tiny_overrides(tiny_model, tmp_path / "runs", "method=aft_nocot")
    proc = dacli("train", *args, cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "error: no generated data at" in proc.stderr and "Traceback" not in proc.stderr
    proc = dacli("eval", "am", *args, "eval.checkpoint=" + str(tmp_path), cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "is not a model directory" in proc.stderr and "Traceback" not in proc.stderr
    spec = tmp_path / "spec.yaml"
    spec.write_text("policies: [")
    proc = dacli("generate", *args, f"spec.path={spec}", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "not valid YAML" in proc.stderr
    assert not list((tmp_path / "runs").rglob("aft.parquet"))


def test_sweep_shares_data_and_baseline_reports_and_survives_a_failed_job(tiny_model, tmp_path):
    # Two methods × three counts, two jobs at a time; n=999 exceeds the 200 bundled prompts and fails.
    args = tiny_overrides(tiny_model, tmp_path / "runs", "method=aft_nocot,aft_cot", "data.n_samples=4,8,999",
                          "eval.samples_per_scenario=1", "eval.max_tokens=16", "eval.am.conditions=[*_none_none]",
                          "hydra/launcher=local_parallel")
    proc = dacli("run", "-m", *args, cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "2 sweep job(s) failed" in proc.stderr and "has only 200 prompts" in proc.stderr
    sweep = tmp_path / "runs" / "sweeps" / "tiny"
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs == sorted(f"{m}-{n}ex" for m in ("aft_nocot", "aft_cot") for n in (4, 8, 999))

    # One generated dataset for all four good jobs: every prompt generated exactly once.
    store = tmp_path / "runs" / "store"
    aft = [p for p in store.glob("aft-*") if p.is_dir()]
    assert len(aft) == 1
    history = read_json(aft[0] / "manifest.json")["history"]
    assert sum(h["to_prompt"] - h["from_prompt"] for h in history) == 8
    for m in ("aft_nocot", "aft_cot"):
        for n in (4, 8):
            assert (sweep / f"{m}-{n}ex" / "data" / "aft").resolve() == aft[0].resolve()
            sft = read_json(sweep / f"{m}-{n}ex" / "checkpoints" / "sft" / "manifest.json")
            assert sft["counts"]["examples"] == int(sft["inputs"]["data"]["records"]) == n  # examples, not prompts
    # One baseline eval of the untrained model, linked from every good job.
    baselines = [p for p in store.glob("eval-am-baseline-*") if p.is_dir()]
    assert len(baselines) == 1
    assert (sweep / "aft_cot-8ex" / "eval" / "am-baseline").resolve() == baselines[0].resolve()

    dacli("report", str(sweep), cwd=tmp_path)
    report = read_json(sweep / "report.json")
    am = {(r["method"], r["n_samples"]): r for r in report["rows"] if r["metric"] == "am_rate"}
    assert sorted(k for k in am if k[0] != "baseline") == sorted((m, n) for m in ("aft_nocot", "aft_cot") for n in (4, 8))
    assert sum(k[0] == "baseline" for k in am) == 1
    for (m, n), row in am.items():
        if m != "baseline":
            scores = read_json(sweep / f"{m}-{n}ex" / "eval" / "am" / "scores.json")["overall"]
            assert (row["k"], row["n"], row["rate"]) == (scores["k"], scores["n"], scores["rate"])
            assert row["n"] + row["unscored"] == 3  # the three families' control conditions x 1 sample
    assert sorted(f["run"] for f in report["failed"]) == ["aft_cot-999ex", "aft_nocot-999ex"]
    assert all("has only 200 prompts" in f["error"] for f in report["failed"])
    md = (sweep / "report.md").read_text()
    assert "| baseline |" in md and "| aft_cot |" in md and "## Failed runs" in md
    assert (sweep / "am_rate.png").stat().st_size > 1000

    # `dacli plan` of the same sweep, made without running anything, counts what the sweep computed
    from deliberate_cli.plan import make, totals

    planned = totals(make("run", args, multirun=True))
    good = [sweep / f"{m}-{n}ex" for m in ("aft_nocot", "aft_cot") for n in (4, 8)]
    evals = {(run / "eval" / name).resolve() for run in good for name in ("am", "am-baseline")}
    assert planned["jobs"] == 6 and planned["failing"] == 2  # n=999: more examples than the set has prompts
    assert planned["trainings"] == len({(run / "checkpoints" / "sft").resolve() for run in good}) == 4
    assert planned["datasets"]["aft"] == len(aft) == 1
    assert planned["evals"] == len(evals) == 5
    assert planned["eval_samples"] == sum(read_json(e / "manifest.json")["counts"]["samples"] for e in evals) == 15


def test_a_killed_cli_takes_its_stage_process_with_it(tiny_model, tiny_store, tmp_path):
    """SIGKILL of `dacli` alone (not its process group) must not leave the stage training on unseen."""
    import signal
    import subprocess
    import time

    import psutil

    from conftest import DACLI

    args = tiny_overrides(tiny_model, tmp_path / "runs", "method=aft_nocot", "train.epochs=200", "train.report_to=[]",
                          "train.batch_size=1", f"run.store={tiny_store}")
    dacli("generate", *args, cwd=tmp_path)
    proc = subprocess.Popen([*DACLI, "train", *args], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline, stage = time.time() + 120, []
    while time.time() < deadline and not stage:
        stage = [p for p in psutil.Process(proc.pid).children(recursive=True)
                 if "deliberate_cli.pipeline" in " ".join(p.cmdline())]
        time.sleep(0.2)
    assert stage, "the train stage should have started"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _, alive = psutil.wait_procs(stage, timeout=15)
    assert not alive, "the stage outlived the dacli that started it"
