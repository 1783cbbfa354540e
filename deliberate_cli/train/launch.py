"""train.num_processes > 1: the stage starts its own `accelerate launch` (one process per GPU; DDP over
gloo on a machine without one) and shows rank 0's steps while the ranks train.

The stage process keeps everything that must happen once: the data, the cache check, the partial
dir, the manifest and the rename. The ranks only fit (rank.py), reading a job file it writes.
"""
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

from .. import progress
from ..config import accelerate_config
from ..errors import DacliError
from ..processes import die_with_parent
from . import fit


def command(cfg, job: Path) -> List[str]:
    t = cfg.train
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(t.num_processes),
           "--num_machines", "1", "--main_process_port", str(_free_port()), "--dynamo_backend", "no"]
    if t.accelerate_config:
        cmd += ["--config_file", str(accelerate_config(t.accelerate_config))]
    else:
        cmd += ["--multi_gpu", "--mixed_precision", "no"]  # the Trainer's own bf16 setting decides precision
    return cmd + ["-m", "deliberate_cli.train.rank", str(job)]


def fit_launched(cfg, stage: str, model_path: str, rows: List[Dict], tmp: Path, sizes, label: str) -> Dict[str, Any]:
    """fit.train_into on train.num_processes ranks; its counts, from rank 0."""
    from omegaconf import OmegaConf

    rows_file, job, config = tmp / "fit_rows.jsonl", tmp / "fit_job.json", tmp / "fit_config.yaml"
    with rows_file.open("w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    # the stage's own config, not the run dir's config.yaml, which another command on the run dir rewrites
    config.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    job.write_text(json.dumps({"config": str(config), "stage": stage, "dir": str(tmp),
                               "model_path": model_path, "rows": str(rows_file), "sizes": list(sizes), "label": label}))
    for stale in (fit.COUNTS, fit.PROGRESS):
        (tmp / stale).unlink(missing_ok=True)
    # The launcher dies with this process, and the ranks with the launcher: a killed stage leaves
    # nothing training.
    proc = subprocess.Popen(command(cfg, job), preexec_fn=die_with_parent)
    try:
        _show_steps(proc, tmp / fit.PROGRESS, label)
    except BaseException:
        proc.send_signal(signal.SIGTERM)
        proc.wait()
        raise
    counts_file = tmp / fit.COUNTS
    if proc.returncode != 0 or not counts_file.is_file():
        log = progress.log_path()
        raise DacliError(f"training on {cfg.train.num_processes} processes (accelerate launch) failed with exit code "
                         f"{proc.returncode}" + (f"; the ranks' output is in {log}" if log else ""))
    counts = json.loads(counts_file.read_text())
    for done in (rows_file, job, config, counts_file, tmp / fit.PROGRESS):
        done.unlink(missing_ok=True)
    return counts


def _show_steps(proc: subprocess.Popen, progress_file: Path, label: str) -> None:
    """Rank 0's steps as this stage's progress line, until the launcher exits."""
    import contextlib

    with contextlib.ExitStack() as stack:
        advance, done = None, 0
        while True:
            try:
                state = json.loads(progress_file.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                state = None
            if state:
                if advance is None:
                    advance = stack.enter_context(progress.track(label, total=state["max_steps"]))
                advance(state["step"] - done, **({"loss": state["loss"]} if state["loss"] else {}))
                done = state["step"]
            if proc.poll() is not None:
                break
            time.sleep(0.5)


def _free_port() -> int:
    """A port for the ranks' rendezvous: two sweep jobs on one machine must not share 29500."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


