"""Runs a command's stages for one composed config, each model-loading stage in its own process.

vLLM does not give memory back when its engine is deleted, and Hydra's basic launcher runs sweep
jobs one after another in one process; so the Hydra task only writes the resolved config to the run
dir and starts `python -m deliberate_cli.pipeline STAGE CONFIG` per stage, in a process group that
ends with it (processes.py). Stages talk only through the run dir. In a multirun a failed job is
recorded (FAILED.json) and the sweep goes on; an interrupted one (SIGINT, SIGTERM) stops the sweep.
"""
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Dict, Optional

from . import progress
from .errors import DacliError, Interrupted
from .processes import group_dies_with_me, run_in_group


def task(cfg) -> None:
    """The Hydra task: resolve the run dir, save the config, run each stage in a child process."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf, open_dict

    from . import report, summary
    from .stages import COMMANDS

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    with open_dict(cfg):
        cfg.run.dir = str(Path(hc.runtime.output_dir).resolve())
    run = Path(cfg.run.dir)
    config_path = run / "config.yaml"
    tmp = config_path.with_name(".config.yaml.tmp")
    tmp.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    os.replace(tmp, config_path)
    (run / "FAILED.json").unlink(missing_ok=True)

    results: Dict[str, Any] = {}
    for stage in (s.name for s in COMMANDS[cfg.command]):
        started = time.time()
        (run / ".summaries" / f"{stage}.error").unlink(missing_ok=True)
        summary.started(stage, _stage_log(run, stage))
        try:
            # Nothing the stage starts outlives it or this process (processes.py).
            code = run_in_group([sys.executable, "-m", "deliberate_cli.pipeline", stage, str(config_path)])
        except Interrupted as e:
            e.stage, e.run = stage, summary.shown_path(run)
            raise
        if code != 0:
            error_file = run / ".summaries" / f"{stage}.error"
            failure = {"stage": stage, "exit_code": code, "seconds": round(time.time() - started, 1),
                       "command": cfg.command,
                       "error": error_file.read_text().strip() if error_file.is_file() else f"exit code {code}"}
            from .rundir import write_json

            write_json(run / "FAILED.json", failure)
            summary.failed(run, stage, code)
            if multirun:
                from .compose import FAILURES_ENV

                if os.environ.get(FAILURES_ENV):
                    with open(os.environ[FAILURES_ENV], "a") as f:
                        f.write(f"{run.name}: {stage}: {failure['error']}\n")
                return
            raise SystemExit(code)
        results[stage] = json.loads((run / ".summaries" / f"{stage}.json").read_text())
        results[stage]["seconds"] = round(time.time() - started, 1)
    if cfg.command == "run":
        results["report"] = report.write(run)
    summary.artefacts(cfg, results)


def run_stage(stage: str, config_path: str) -> Dict[str, Any]:
    from omegaconf import OmegaConf

    from . import usage
    from .config import Config, validate
    from .rundir import write_json
    from .stages import STAGES

    usage.start()
    cfg = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(config_path))
    validate(cfg)
    result = STAGES[stage].run(cfg)
    write_json(Path(cfg.run.dir) / ".summaries" / f"{stage}.json", result)
    return result


def _child_env() -> None:
    for key, value in {"VLLM_LOGGING_LEVEL": "ERROR", "TOKENIZERS_PARALLELISM": "false",
                       "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}.items():
        os.environ.setdefault(key, value)


def _record_error(config_path: str, stage: str, message: str) -> None:
    """The one line a failed stage leaves for FAILED.json and the sweep report."""
    path = Path(config_path).parent / ".summaries" / f"{stage}.error"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(message + "\n")


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
    stage_name, config_file = sys.argv[1], sys.argv[2]
    _child_env()
    log = _stage_log(Path(config_file).parent, stage_name)
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
