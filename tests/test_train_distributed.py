"""train.num_processes=2: the train stage starts `accelerate launch` itself (DDP over gloo on this CPU
machine), writes the same checkpoint as one process would, and resumes after its launcher is killed."""
import signal
import subprocess
import time

import psutil
import pytest

from conftest import DACLI, dacli, read_json, tiny_overrides

RUN = "tiny-aft_nocot-8ex"


def _files(ckpt):
    return sorted(p.name for p in ckpt.iterdir())


def test_two_processes_write_one_checkpoint_like_one_process(tiny_model, tiny_store, tmp_path):
    store = f"run.store={tiny_store}"
    one = tiny_overrides(tiny_model, tmp_path / "one", "method=aft_nocot", "train.report_to=[]", "train.epochs=2", store)
    two = tiny_overrides(tiny_model, tmp_path / "two", "method=aft_nocot", "train.report_to=[]", "train.epochs=2",
                         "train.num_processes=2", store)
    dacli("generate", *one, cwd=tmp_path)
    dacli("train", *one, cwd=tmp_path)
    dacli("generate", *two, cwd=tmp_path)
    proc = dacli("train", *two, cwd=tmp_path)
    assert "sft steps: 2/2" in proc.stderr  # rank 0's steps, shown by the stage process

    single, ddp = tmp_path / "one" / RUN / "checkpoints" / "sft", tmp_path / "two" / RUN / "checkpoints" / "sft"
    assert _files(ddp) == _files(single)  # nothing of the launch left behind (job, rows, counts files)
    m1, m2 = read_json(single / "manifest.json"), read_json(ddp / "manifest.json")
    # 8 examples, 4 per device: one process takes 2 steps an epoch, two processes 1 (the global batch is 8).
    assert (m1["counts"]["processes"], m1["counts"]["steps"]) == (1, 4)
    assert (m2["counts"]["processes"], m2["counts"]["steps"]) == (2, 2)
    assert m2["counts"]["examples"] == 8 and m2["counts"]["tokens_per_second"] > 0
    assert m2["config"]["train"]["num_processes"] == 2 and "num_processes" not in m1["config"]["train"]
    # peak memory of the stage with its ranks (each loads torch and the model), no GPU here
    assert m2["usage"]["cpu_rss_gb"] > m1["usage"]["cpu_rss_gb"] > 0.1 and m2["usage"]["gpu_gb"] is None
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(ddp)  # a whole model, loadable


@pytest.mark.slow  # ~75 s or more: 240 steps on two ranks; `make test-slow` runs it
def test_killing_the_launcher_kills_its_ranks_and_a_rerun_resumes(tiny_model, tmp_path):
    args = tiny_overrides(tiny_model, tmp_path / "runs", "method=aft_nocot", "train.report_to=[]",
                          "train.epochs=30", "train.batch_size=1", "train.save_steps=5", "train.num_processes=2")
    dacli("generate", *args, cwd=tmp_path)
    trainer_dir = tmp_path / "runs" / RUN / "checkpoints" / "sft.partial" / "trainer"
    proc = subprocess.Popen([*DACLI, "train", *args], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list(trainer_dir.glob("checkpoint-*/trainer_state.json")):
        time.sleep(0.1)
    time.sleep(0.5)
    tree = psutil.Process(proc.pid).children(recursive=True)
    launcher = [p for p in tree if "accelerate.commands.launch" in " ".join(p.cmdline())]
    ranks = [p for p in tree if p not in launcher and "deliberate_cli.train.rank" in " ".join(p.cmdline())]
    assert len(launcher) == 1 and len(ranks) == 2
    launcher[0].send_signal(signal.SIGKILL)
    _, stderr = proc.communicate(timeout=120)
    _, alive = psutil.wait_procs(ranks, timeout=30)
    assert not alive, "the ranks outlived their launcher"
    assert proc.returncode == 2 and "error:" in stderr and "accelerate launch" in stderr and "Traceback" not in stderr
    saved = sorted(int(p.name.split("-")[1]) for p in trainer_dir.glob("checkpoint-*"))
    assert saved

    dacli("train", *args, cwd=tmp_path)
    m = read_json(tmp_path / "runs" / RUN / "checkpoints" / "sft" / "manifest.json")["counts"]
    assert m["resumed_from_step"] >= saved[0] > 0
    assert m["steps"] == 8 // 2 * 30  # the schedule is finished, not restarted
    assert not trainer_dir.exists()
    assert [p.parent.name for p in (tmp_path / "runs" / RUN / "checkpoints").rglob("manifest.json")] == ["sft"]
