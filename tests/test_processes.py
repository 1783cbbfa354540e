"""Nothing outlives dacli: a real `dacli eval` through vLLM's CPU build on the tiny model, stopped once
vLLM's engine core and its worker (the stage's grandchild, which PR_SET_PDEATHSIG alone does not reach)
exist, must leave no process behind, whether dacli gets SIGKILL, SIGTERM or SIGINT."""
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from conftest import DACLI, tiny_overrides


def _eval_with_engine_up(tiny_model: Path, tmp_path: Path):
    """Start `dacli eval am` on vLLM; return it, with its descendants, once vLLM's engine core has
    started its worker (a process of its own on CPU too)."""
    args = tiny_overrides(tiny_model, tmp_path / "runs", "eval.checkpoint=base", "eval.engine.backend=vllm",
                          "eval.engine.cpu_kvcache_gb=1", "eval.samples_per_scenario=1")
    with (tmp_path / "out.txt").open("w") as out, (tmp_path / "err.txt").open("w") as err:
        proc = subprocess.Popen([*DACLI, "eval", "am", *args], cwd=tmp_path, stdout=out, stderr=err, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        tree = psutil.Process(proc.pid).children(recursive=True)
        engines = {p.pid for p in tree if _name(p).startswith("VLLM::EngineCor")}  # comm: 15 characters
        if any(_parent(p) in engines for p in tree):
            return proc, tree
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"vLLM's engine never started its worker (exit {proc.poll()}):\n"
                         + (tmp_path / "err.txt").read_text())


def _name(p: psutil.Process) -> str:
    try:
        return p.name()
    except psutil.Error:
        return ""


def _parent(p: psutil.Process) -> int:
    try:
        return p.ppid()
    except psutil.Error:
        return 0


def _left(tree, cwd: Path):
    """The processes still running (zombies hold nothing) among `tree` and any that runs in `cwd`,
    where dacli and everything under it started: a process started after `tree` was listed too."""
    def running(p):
        try:
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def in_cwd(p):
        try:
            return Path(p.cwd()) == cwd
        except psutil.Error:
            return False

    left = {p.pid: p for p in tree if running(p)}
    left.update({p.pid: p for p in psutil.process_iter() if in_cwd(p) and running(p)})
    return list(left.values())


def _killed_leftovers(tree, cwd: Path):
    """(pid, name) of each process still left, killed first: a failing test must not leave vLLM running."""
    left = _left(tree, cwd)
    for p in left:
        try:
            p.kill()
        except psutil.Error:
            pass
    return [(p.pid, _name(p)) for p in left]


def test_a_killed_dacli_leaves_no_vllm_process(tiny_model, tmp_path):
    """SIGKILL of `dacli` alone, not its process group: vLLM's engine core and worker go too."""
    proc, tree = _eval_with_engine_up(tiny_model, tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 15
    while _left(tree, tmp_path) and time.time() < deadline:
        time.sleep(0.2)
    left = _killed_leftovers(tree, tmp_path)
    assert not left, f"processes outlived the dacli that started them: {left}"


@pytest.mark.slow  # ~20-35 s each here (a vLLM engine start each); the SIGKILL test above is the default suite's
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_and_sigint_stop_everything_with_one_line(sig, tiny_model, tmp_path):
    proc, tree = _eval_with_engine_up(tiny_model, tmp_path)
    proc.send_signal(sig)
    assert proc.wait(timeout=120) == 128 + sig
    left = _killed_leftovers(tree, tmp_path)  # dacli exits only once every process it started is gone: no waiting
    assert not left, f"processes outlived the dacli that started them: {left}"
    err = (tmp_path / "err.txt").read_text()
    said = [line for line in err.splitlines() if "interrupted" in line]
    assert said == [err.splitlines()[-1]], err
    assert said[0].startswith(f"interrupted ({sig.name}): dacli eval, stage eval, run dir runs/tiny-")
    assert "rerunning the same command resumes" in said[0]
    assert "Traceback" not in err + (tmp_path / "out.txt").read_text()
