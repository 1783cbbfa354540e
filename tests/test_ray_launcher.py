"""hydra/launcher=ray (hydra_plugins/dacli_ray_launcher): sweep jobs as Ray tasks, each on GPUs of its
own. On a CPU machine Ray is told it has 4 GPUs (logical ones: Ray only hands out their ids), and
two jobs asking for 2 each must run at the same time on disjoint devices. Skipped without Ray, an
optional extra (`pip install -c constraints/cpu.txt -e '.[ray]'`)."""
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import REPO

# The sweep job's task: what a job's process sees, and when it ran (2 s, so that two jobs overlap
# only if they really run at once).
_TASK = """
import json, os, time
from pathlib import Path
from hydra.core.hydra_config import HydraConfig

def task(cfg):
    start = time.time()
    time.sleep(2)
    out = Path(HydraConfig.get().runtime.output_dir)
    (out / "job.json").write_text(json.dumps({"pid": os.getpid(), "start": start, "end": time.time(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "gpus": cfg.resources.gpus,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}))
"""


def _sweep(tmp_path, overrides, prelude=""):
    (tmp_path / "job_task.py").write_text(_TASK)
    driver = (f"import os, sys; sys.argv = ['dacli']; {prelude}print(os.getpid(), flush=True); "
              "from job_task import task; from deliberate_cli.compose import launch; from deliberate_cli.errors "
              "import DacliError\ntry:\n    launch('config', " + repr(overrides) + ", True, task)\n"
              "except DacliError as e:\n    print('error:', e, file=sys.stderr); raise SystemExit(2)")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(REPO)])
    return subprocess.run([sys.executable, "-c", driver], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=180, check=False)


@pytest.mark.slow  # 10 s of a Ray instance; without Ray the launcher's one line is tested below
def test_two_2_gpu_jobs_run_at_once_on_disjoint_gpus_of_a_4_gpu_node(tmp_path):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install -c constraints/cpu.txt -e '.[ray]'")
    t0 = time.time()
    proc = _sweep(tmp_path, ["run.root=runs", "run.name=a,b", "hydra.sweep.subdir=${run.name}",
                             "hydra/launcher=ray", "hydra.launcher.init.num_gpus=4",
                             "hydra.launcher.init.num_cpus=4", "resources.gpus=2"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"sweep of two 2-s jobs through Ray: {time.time() - t0:.1f} s")
    main_pid = int(proc.stdout.split()[0])
    runs = sorted((tmp_path / "runs" / "sweeps").glob("*/*/job.json"))
    assert [p.parent.name for p in runs] == ["a", "b"]
    jobs = [json.loads(p.read_text()) for p in runs]
    assert all(j["pid"] != main_pid for j in jobs) and jobs[0]["pid"] != jobs[1]["pid"]
    assert max(j["start"] for j in jobs) < min(j["end"] for j in jobs), "the two jobs did not overlap"
    devices = [set(j["cuda_visible_devices"].split(",")) for j in jobs]
    assert all(len(d) == 2 for d in devices) and not devices[0] & devices[1]
    assert devices[0] | devices[1] == {"0", "1", "2", "3"}
    assert all(j["omp_num_threads"] is None for j in jobs)  # Ray's OMP_NUM_THREADS=1 is not passed on
    # resources.json, written in the job's process before its task ran, says the same.
    for run, job, got in zip(runs, jobs, devices):
        record = json.loads((run.parent / "resources.json").read_text())
        assert record["cuda_visible_devices"] == job["cuda_visible_devices"] and set(record["gpu_ids"]) == got
        assert record["num_gpus"] == 2 and record["pid"] == job["pid"]


@pytest.mark.slow  # 6 s of a Ray start
def test_a_job_asking_for_more_gpus_than_any_node_has_is_refused_in_one_line(tmp_path):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install -c constraints/cpu.txt -e '.[ray]'")
    proc = _sweep(tmp_path, ["run.root=runs", "hydra/launcher=ray", "hydra.launcher.init.num_gpus=1",
                             "hydra.launcher.init.num_cpus=2", "resources.gpus=2"])
    assert proc.returncode != 0
    assert "asks Ray for 2 GPUs" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-3000:]


def test_without_ray_the_launcher_says_how_to_install_it(tmp_path):
    proc = _sweep(tmp_path, ["run.root=runs", "hydra/launcher=ray"], prelude="sys.modules['ray'] = None; ")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "hydra/launcher=ray" in lines[0] and "-e '.[ray]'" in lines[0], proc.stderr
    assert not (tmp_path / "runs").exists()


def test_stage_manifests_record_the_gpus_the_stage_was_given(monkeypatch):
    from deliberate_cli import usage

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    monkeypatch.setattr(usage, "_thread", object())  # as inside a stage, without starting the sampler
    assert usage.peak()["cuda_visible_devices"] == "2,3"


@pytest.mark.slow  # 8 s; the launcher itself is tested above
def test_a_real_sweep_runs_its_stages_in_ray_jobs_and_reports_their_failures(tmp_path):
    """`dacli generate -m` through Ray, each job's stage in a child process: n=999 and 998 exceed the
    200 bundled prompts, so both jobs fail at once; their lines come back from the Ray workers."""
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install -c constraints/cpu.txt -e '.[ray]'")
    from conftest import dacli

    proc = dacli("generate", "-m", "data.n_samples=999,998", "run.root=runs", "hydra/launcher=ray",
                 "hydra.launcher.init.num_gpus=2", "hydra.launcher.init.num_cpus=2", cwd=tmp_path, check=False,
                 timeout=180)
    assert proc.returncode == 2 and "2 sweep job(s) failed" in proc.stderr, proc.stderr[-3000:]
    runs = sorted(p.parent for p in (tmp_path / "runs" / "sweeps").glob("*/*/FAILED.json"))
    assert [r.name for r in runs] == ["aft_cot-998ex", "aft_cot-999ex"]
    devices = [json.loads((r / "resources.json").read_text())["cuda_visible_devices"] for r in runs]
    assert sorted(devices) == ["0", "1"]
