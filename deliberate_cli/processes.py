"""Processes that never outlive dacli: nothing a stage starts may keep generating, training or holding
GPU memory once the stage or dacli is gone, however either ends (SIGKILL included).

PR_SET_PDEATHSIG (`die_with_parent`) reaches only a process's own children, and the libraries start
grandchildren that set none: vLLM's engine core is the stage's child, but its workers are the engine
core's, so a killed stage left them running, re-parented to init. So a stage runs in a process group
of its own (`run_in_group`), which everything it starts stays in (vLLM, multiprocessing, accelerate's
launcher), and the group is ended as a whole:
- by dacli, once the stage has exited or dacli is interrupted (`_end_group`), before the next stage or
  sweep job starts, so that one finds the GPU free;
- by a watchdog the stage starts first thing (`group_dies_with_me`), when dacli cannot: a SIGKILLed
  dacli takes the stage with it (PR_SET_PDEATHSIG), and the stage's death wakes the watchdog, a
  process of its own that needs neither dacli nor the stage alive.
torch's elastic launcher starts each training rank in a session of its own; a rank does the same
(train/rank.py), so a rank's own children (a judge engine) die with it.
"""
import contextlib
import os
import signal
import subprocess
import sys
import time
from typing import List, Optional

_PR_SET_PDEATHSIG = 1


def _prctl(option: int, arg) -> bool:
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl(option, arg, 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux
        return False


def die_with_parent() -> None:
    """Run in a child before it starts: Linux sends it SIGKILL when its parent dies (prctl
    PR_SET_PDEATHSIG), so a killed dacli, stage or launcher leaves nothing running on in the background."""
    if not _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL):
        return
    if os.getppid() == 1:  # the parent died before the prctl
        os._exit(1)


def run_in_group(command: List[str]) -> int:
    """Run a stage and return its exit code. It leads a new session, so its process group holds
    whatever it starts, and a terminal's Ctrl-C reaches dacli alone, which then ends the stage; it dies
    with this process (`die_with_parent`); and whatever way the wait ends (the stage exits, SIGINT or
    SIGTERM raise here), the whole group is ended before this returns or raises."""
    proc = subprocess.Popen(command, start_new_session=True, preexec_fn=die_with_parent)
    try:
        return proc.wait()
    finally:
        _end_group(proc)


def _end_group(proc: subprocess.Popen, wait_s: float = 60.0) -> None:
    """SIGKILL the process group `proc` leads, reap `proc`, and wait (at most `wait_s`: a process
    that frees GPU memory can take seconds to go) until no process of the group is left but zombies."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + wait_s
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` is still running (a zombie holds no memory: it does not count)."""
    try:
        entries = list(os.scandir("/proc"))
    except OSError:  # not Linux: no waiting
        return False
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rpartition(")")[2].split()  # state, ppid, pgrp, ... after the (name)
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def group_dies_with_me() -> None:
    """Call first thing in a process that leads its own process group (a stage, a rank): start a
    watchdog that SIGKILLs the whole group as soon as this process dies, however it dies. Nothing
    happens in a process that does not lead its group (that group is its starter's), nor off Linux."""
    global _watchdog
    me = os.getpid()
    if os.getpgrp() != me or not sys.platform.startswith("linux"):
        return

    def arm() -> None:  # in the watchdog before its exec, which keeps the mask, SIG_IGN and a pending signal
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})  # held until sigwait takes it
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a signal to the group is for the others
            signal.signal(sig, signal.SIG_IGN)
        if not _prctl(_PR_SET_PDEATHSIG, signal.SIGUSR1):
            os._exit(0)
        if os.getppid() != me:  # `me` died before the prctl
            os.kill(os.getpid(), signal.SIGUSR1)

    # A program of its own (this file), not a fork: `ps` shows it as what it is, not as a second stage.
    _watchdog = subprocess.Popen([sys.executable, "-I", "-S", __file__, "watchdog"], preexec_fn=arm,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


_watchdog: Optional[subprocess.Popen] = None

if __name__ == "__main__":  # the watchdog: its parent, the process it watches, has died
    signal.sigwait({signal.SIGUSR1})
    os.killpg(0, signal.SIGKILL)  # the group, this watchdog last of all
