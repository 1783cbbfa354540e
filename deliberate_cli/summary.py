"""The rich table each command ends with: what each stage did and where its artefacts went."""
from pathlib import Path
from typing import Any, Dict

from rich.console import Console
from rich.table import Table

console = Console()

_SHOWN = {
    "aft": ("prompts", "kept", "rejected", "reject_reasons", "judge_scores", "resumed_shards"),
    "msm": ("kept", "tokens", "near_duplicates_or_empty", "genres"),
    "midtrain": ("examples", "steps", "first_loss", "last_loss", "truncated"),
    "sft": ("examples", "steps", "first_loss", "last_loss", "max_length", "truncated", "resumed_from_step"),
    "eval": ("rate", "ci_low", "ci_high", "n"),
}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    return str(value)


def _short(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return path


def _row(table: Table, name: str, part: Dict[str, Any], seconds: Any) -> None:
    shown = _SHOWN.get(name, _SHOWN["eval"] if "rate" in part else ())
    details = "  ".join(f"{k}={_fmt(part[k])}" for k in shown if k in part)
    table.add_row(name, "cached" if part.get("cached") else "done", _fmt(seconds), details,
                  _short(part.get("dir") or part.get("path", "")))


def artefacts(cfg, results: Dict[str, Dict[str, Any]]) -> None:
    table = Table(title=f"dacli {cfg.command}: {cfg.run.name}", title_justify="left")
    for col in ("stage", "status", "seconds", "result", "output"):
        table.add_column(col, overflow="fold")
    for stage, res in results.items():
        seconds = res.get("seconds", "")
        parts = {k: v for k, v in res.items() if isinstance(v, dict) and ("dir" in v or "path" in v)}
        if parts:
            for name, part in parts.items():
                _row(table, name, part, seconds)
        else:
            _row(table, stage, res, seconds)
    console.print(table)
    console.print(f"run dir: [bold]{_short(cfg.run.dir)}[/]  (resolved config: config.yaml)", highlight=False)


def failed(run: Path, stage: str, code: int) -> None:
    console.print(f"[bold red]stage {stage} failed[/] (exit {code}); recorded in {run / 'FAILED.json'}",
                  highlight=False)
