"""`dacli train` beyond the happy path: resume after SIGKILL, LoRA, and bad methods or data."""
import pyarrow.parquet as pq

from conftest import dacli, kill_after, read_json, tiny_overrides


def test_killed_training_resumes_from_its_last_checkpoint(tiny_model, tiny_store, tmp_path):
    args = tiny_overrides(tiny_model, tmp_path / "runs", "method=aft_nocot", "train.epochs=8", "train.batch_size=1",
                          "train.save_steps=10", "train.report_to=[]", f"run.store={tiny_store}")
    dacli("generate", *args, cwd=tmp_path)
    trainer_dir = tmp_path / "runs" / "tiny-aft_nocot-8ex" / "checkpoints" / "sft.partial" / "trainer"
    kill_after(["train", *args], tmp_path, trainer_dir, "checkpoint-*/trainer_state.json", count=1, settle=0.5)
    saved = sorted(int(p.name.split("-")[1]) for p in trainer_dir.glob("checkpoint-*"))
    assert saved, "a checkpoint should exist before the kill"

    dacli("train", *args, cwd=tmp_path)
    m = read_json(tmp_path / "runs" / "tiny-aft_nocot-8ex" / "checkpoints" / "sft" / "manifest.json")["counts"]
    kept = len(pq.read_table(tmp_path / "runs" / "tiny-aft_nocot-8ex" / "data" / "aft" / "aft.parquet"))
    assert m["resumed_from_step"] >= saved[0] > 0
    assert m["steps"] == kept * 8  # the resumed run finishes the schedule, it does not restart it
    assert not trainer_dir.exists()


def test_bad_methods_and_data_fail_cleanly(tiny_model, tmp_path):
    # (LoRA adapters on midtrain and sft: tests/test_pipeline.py's msm run)
    args = tiny_overrides(tiny_model, tmp_path / "runs", "method=msm_aft")
    proc = dacli("train", *args, "method.stages=[sft,distill]", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "unknown stage(s) distill; valid: midtrain, sft, rl" in proc.stderr

    # A CoT method on data whose CoTs are empty.
    args = tiny_overrides(tiny_model, tmp_path / "runs", "method=aft_cot")
    dacli("generate", *args, cwd=tmp_path)
    data = tmp_path / "runs" / "tiny-aft_cot-8ex" / "data" / "aft" / "aft.parquet"
    rows = pq.read_table(data).to_pylist()
    for r in rows:
        r["cot"] = ""
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(rows), data)
    proc = dacli("train", *args, "train.epochs=3", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "trains on CoTs but" in proc.stderr and "Traceback" not in proc.stderr


def test_instruction_tuning_mix_is_drawn_tagged_and_recorded(tiny_model, tiny_store, tmp_path):
    import json

    mix = tmp_path / "chat.jsonl"
    convs = [{"messages": [{"role": "user", "content": f"Name a fruit number {i}."},
                           {"role": "assistant", "content": f"Fruit {i}: apple."}]} for i in range(6)]
    convs.append({"messages": [{"role": "user", "content": "No answer yet."}]})  # not usable: no assistant turn
    mix.write_text("\n".join(json.dumps(c) for c in convs))
    args = tiny_overrides(tiny_model, tmp_path / "runs", "method=aft_nocot", "train.report_to=[]", f"run.store={tiny_store}")
    # no `dacli generate` in this run dir: train finds the AFT data in the store by their key and links them
    assert not (tmp_path / "runs" / "tiny-aft_nocot-8ex" / "data").exists()
    dacli("train", *args, f"data.mix.source={mix}", "data.mix.count=4", cwd=tmp_path)
    assert (tmp_path / "runs" / "tiny-aft_nocot-8ex" / "data" / "aft").resolve().parent == tiny_store
    sft = tmp_path / "runs" / "tiny-aft_nocot-8ex" / "checkpoints" / "sft"
    m = read_json(sft / "manifest.json")
    kept = len(pq.read_table(tmp_path / "runs" / "tiny-aft_nocot-8ex" / "data" / "aft" / "aft.parquet"))
    assert (m["counts"]["alignment_examples"], m["counts"]["mix_examples"], m["counts"]["examples"]) == (kept, 4, kept + 4)
    assert m["inputs"]["data"]["mix_records"] == "4" and m["config"]["mix"]["count"] == 4
    rows = [json.loads(l) for l in (sft / "train_data.jsonl").read_text().splitlines()]
    assert [r["source"] for r in rows].count("mix") == 4
    assert {r["completion"][0]["content"] for r in rows if r["source"] == "mix"} <= {f"Fruit {i}: apple." for i in range(6)}

    # more than the source holds, or a source without conversations: one line, exit 2
    proc = dacli("train", *args, f"data.mix.source={mix}", "data.mix.count=7", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "asks for 7 conversations but" in proc.stderr and "has 6" in proc.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "hello"}))
    proc = dacli("train", *args, f"data.mix.source={bad}", "data.mix.ratio=0.5", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "no 'messages' list" in proc.stderr and "Traceback" not in proc.stderr


def test_diverse_selection_balances_categories_and_keeps_prompt_order_otherwise():
    from deliberate_cli.train import select

    recs = [{"order": i, "category": c} for i, c in enumerate(["a"] * 6 + ["b"] * 3 + ["c"])]
    kept, note = select(recs, 6, "diverse")
    # the largest group shrinks first, the latest records first (ties: the latest overall)
    assert sorted(r["category"] for r in kept) == ["a", "a", "a", "b", "b", "c"] and note["selected"] == "diverse 6 of 10"
    assert [r["order"] for r in kept if r["category"] == "a"] == [0, 1, 2]
    first, _ = select(recs, 3, "first")
    assert [r["order"] for r in first] == [0, 1, 2]
    assert select(recs, 20, "diverse") == (recs, {})  # fewer than asked: all of them
