"""Runs a command's stages for one composed config, each model-loading stage in its own process.

vLLM does not give memory back when its engine is deleted, and Hydra's basic launcher runs sweep
jobs one after another in one process; so the Hydra task only writes the resolved config to the run
dir and starts `python -m deliberate_cli.pipeline STAGE CONFIG RUN_DIR` per stage, in a process group
that ends with it (processes.py). Stages talk only through the run dir. In a multirun a failed job is
recorded (FAILED.json) and the sweep goes on; an interrupted one (SIGINT, SIGTERM) stops the sweep.

Another command may work on the same run dir at the same time (a twin of this one, another eval): what
it computes is behind its outputs' locks (store.Entry), and the run dir's config.yaml, FAILED.json and
.summaries/<stage>.json are records any of them may rewrite whole. So a command hands its stages their
config, and reads back their results and errors, through a dir of its own (.summaries/command-*/,
removed when it ends), never through those shared records.
"""
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Dict, Optional

from . import progress
from .errors import DacliError, Interrupted
from .processes import group_dies_with_me, run_in_group
from .rundir import write_json, write_text


def task(cfg) -> None:
    """The Hydra task: resolve the run dir, save the config, run each stage in a child process."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf, open_dict

    from . import report, summary

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    with open_dict(cfg):
        cfg.run.dir = str(Path(hc.runtime.output_dir).resolve())
    run = Path(cfg.run.dir)
    resolved = OmegaConf.to_yaml(cfg, resolve=True)
    write_text(run / "config.yaml", resolved)
    (run / "FAILED.json").unlink(missing_ok=True)
    (run / ".summaries").mkdir(parents=True, exist_ok=True)
    own = Path(tempfile.mkdtemp(prefix="command-", dir=run / ".summaries"))
    try:
        write_text(own / "config.yaml", resolved)
        results = _run_stages(cfg, run, own, multirun)
    finally:
        shutil.rmtree(own, ignore_errors=True)
    if results is None:  # a sweep job that failed: recorded, and the sweep goes on
        return
    if cfg.command == "run":
        results["report"] = report.write(run)
    summary.artefacts(cfg, results)


def _run_stages(cfg, run: Path, own: Path, multirun: bool) -> Optional[Dict[str, Any]]:
    """Each of the command's stages in a child process, which reads its config from, and leaves its
    result or its error in, this command's own dir `own`; the results, or None for a failed sweep job."""
    from . import summary
    from .stages import COMMANDS

    results: Dict[str, Any] = {}
    for stage in (s.name for s in COMMANDS[cfg.command]):
        started = time.time()
        summary.started(stage, _stage_log(run, stage))
        try:
            # Nothing the stage starts outlives it or this process (processes.py).
            code = run_in_group([sys.executable, "-m", "deliberate_cli.pipeline", stage, str(own / "config.yaml"),
                                 str(run)])
        except Interrupted as e:
            e.stage, e.run = stage, summary.shown_path(run)
            raise
        if code != 0:
            error_file = own / f"{stage}.error"
            failure = {"stage": stage, "exit_code": code, "seconds": round(time.time() - started, 1),
                       "command": cfg.command,
                       "error": error_file.read_text().strip() if error_file.is_file() else f"exit code {code}"}
            write_json(run / "FAILED.json", failure)
            summary.failed(run, stage, code)
            if multirun:
                from .compose import FAILURES_ENV

                if os.environ.get(FAILURES_ENV):
                    with open(os.environ[FAILURES_ENV], "a") as f:
                        f.write(f"{run.name}: {stage}: {failure['error']}\n")
                return None
            raise SystemExit(code)
        results[stage] = json.loads((own / f"{stage}.json").read_text())
        results[stage]["seconds"] = round(time.time() - started, 1)
        write_json(run / ".summaries" / f"{stage}.json", results[stage])  # the run dir's record of it
    return results


def run_stage(stage: str, config_path: str) -> Dict[str, Any]:
    """The stage, on the config at `config_path`; its result is left beside that config, in the
    command's own dir, for the command that started it."""
    from omegaconf import OmegaConf

    from . import usage
    from .config import Config, validate
    from .stages import STAGES

    usage.start()
    cfg = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(config_path))
    validate(cfg)
    result = STAGES[stage].run(cfg)
    write_json(Path(config_path).parent / f"{stage}.json", result)
    return result


def _child_env() -> None:
    for key, value in {"VLLM_LOGGING_LEVEL": "ERROR", "TOKENIZERS_PARALLELISM": "false",
                       "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}.items():
        os.environ.setdefault(key, value)


def _record_error(config_path: str, stage: str, message: str) -> None:
    """The one line a failed stage leaves, beside its config, for FAILED.json and the sweep report."""
    write_text(Path(config_path).parent / f"{stage}.error", message + "\n")


def _stage_log(run: Path, stage: str) -> Optional[Path]:
    """Where a stage's output goes unless -v: everything the libraries print, C-level output included,
    so that the terminal shows only the stage's progress and its errors."""
    return None if os.environ.get(progress.VERBOSE_ENV) == "1" else run / "logs" / f"{stage}.log"


def _tell(head: str, message: str) -> None:
    """A stage's last word: on the terminal after its progress display, and in its log."""
    from rich.text import Text

    progress.finish()
    progress.console().print(Text.assemble((head, "bold red"), " ", message), soft_wrap=True)
    if progress.log_path() is not None:
        print(f"{head} {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    group_dies_with_me()  # before anything is started: vLLM's engine and workers die with this process
    stage_name, config_file, run_dir = sys.argv[1:4]
    _child_env()
    log = _stage_log(Path(run_dir), stage_name)
    if log is not None:  # before anything heavy is imported: what libraries print on import goes there too
        progress.redirect(log)
    try:
        run_stage(stage_name, config_file)
    except DacliError as e:
        _record_error(config_file, stage_name, str(e))
        _tell("error:", str(e))
        raise SystemExit(2)
    except Exception as e:  # a bug, not a user mistake: keep the traceback, but say what it was in the report
        crash = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        _record_error(config_file, stage_name, crash)
        if log is None:
            raise
        from .summary import shown_path

        traceback.print_exc()  # into the log
        _tell(f"stage {stage_name} crashed:", f"{crash} (traceback in {shown_path(log)})")
        raise SystemExit(1)
    finally:
        progress.finish()
