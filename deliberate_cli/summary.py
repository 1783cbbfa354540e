"""The rich table each command ends with: what each stage did and where its artefacts went."""
from pathlib import Path
from typing import Any, Dict, Optional

from rich.console import Console
from rich.table import Table

console = Console()

_SHOWN = {
    "aft": ("prompts", "kept", "rejected", "reject_reasons", "judge_scores", "resumed_shards", "diversity_digest"),
    "prompts": ("pool", "requests", "stalled", "domains", "domains_fallback", "dropped", "expected_behavior"),
    "msm": ("kept", "tokens", "budget_reached", "domains", "subdomains", "doc_types", "ideas", "idea_rounds",
            "near_duplicate_rate"),
    "midtrain": ("examples", "steps", "first_loss", "last_loss", "truncated"),
    "sft": ("examples", "steps", "first_loss", "last_loss", "max_length", "truncated", "resumed_from_step"),
    "rl": ("prompts", "steps", "first_reward", "last_reward", "unscored_answers", "resumed_from_step"),
    "eval": ("rate", "ci_low", "ci_high", "n", "ambiguous", "unscored"),
}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    return str(value)


def shown_path(path) -> str:
    """A path relative to the working directory when under it: short enough to read in a table."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _row(table: Table, name: str, part: Dict[str, Any], seconds: Any) -> None:
    shown = _SHOWN.get(name, _SHOWN["eval"] if "rate" in part else ())
    details = "  ".join(f"{k}={_fmt(part[k])}" for k in shown if k in part)
    table.add_row(name, "cached" if part.get("cached") else "done", _fmt(seconds), details,
                  shown_path(part.get("dir") or part.get("path", "")))


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
    scored = {stage: res for stage, res in results.items() if stage in ("eval", "baseline") and res.get("dir")}
    if scored:
        rates_table(scored)
    if results.get("eval", {}).get("dir"):  # what the eval's runner adds (the grader check: its table)
        from .evals import runner_of

        runner = runner_of(cfg)
        if runner.summary is not None:
            runner.summary(Path(results["eval"]["dir"]), console)
    console.print(f"run dir: [bold]{shown_path(cfg.run.dir)}[/]  (resolved config: config.yaml)", highlight=False)


def _cell(r: Dict[str, Any]) -> str:
    """k/n, rate, 95% Wilson interval, the unscored samples (a grader gave no verdict) and the share cut
    off at eval.max_tokens (a condition's row)."""
    cell = f"{r['k']}/{r['n']}  {_interval(r)}"
    cell += f"  +{r['unscored']} unscored" if r.get("unscored") else ""
    return cell + (f"  {100 * r['truncated_share']:.0f}% cut off" if r.get("truncated") else "")


def _interval(r: Dict[str, Any]) -> str:
    return f"{100 * r['rate']:.1f}% [{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}]"


def _bounds(r: Dict[str, Any]) -> str:
    return f"[{100 * r['bounds'][0]:.1f}, {100 * r['bounds'][1]:.1f}]" if r and r.get("bounds") else "-"


def rates_table(results: Dict[str, Dict[str, Any]]) -> None:
    """The eval's rate per condition, per family and overall (k/n, 95% Wilson interval), one column per
    evaluated model (the trained checkpoint, and the untrained baseline when `dacli run` made one).
    Where no grader decided, the rate is the deterministic layer's and a lower bound while samples are
    ambiguous: a `bounds` column beside it gives [ambiguous as benign, ambiguous as harmful]. The
    headline row (eval.headline: the pooled k/n, or the mean over conditions with its own interval)
    is bold, the other figure beside it; a condition's cell says how many of its samples were cut off."""
    import json

    from .evals.scoring import headline_of, mean_over

    scores = {}
    for stage, res in results.items():
        path = Path(res["dir"]) / "scores.json"
        if path.is_file():
            scores[stage] = json.loads(path.read_text())
    if not scores:
        return
    first = next(iter(scores.values()))
    bounds = {stage: not sc.get("layers", {}).get("grader") for stage, sc in scores.items()}
    # the headline the run asked for (eval.headline, in the eval's result), else the one it was scored with
    lead = next((res["headline"] for res in results.values() if res.get("headline")), None) or headline_of(first)
    table = Table(title=f"{first['metric']} ({first['counts']}): k/n, rate, 95% interval; headline: {lead['label']}",
                  title_justify="left")
    table.add_column("condition", overflow="fold")
    for stage, sc in scores.items():
        table.add_column(f"{sc['model']}" + (" (baseline)" if stage == "baseline" else ""), justify="right")
        if bounds[stage]:
            table.add_column("bounds", justify="right")
    keys = []
    for group, key in (("conditions", "condition"), ("families", "family")):
        for sc in scores.values():
            keys += [(group, key, r[key]) for r in sc.get(group, []) if (group, key, r[key]) not in keys]
    if len({name for group, _, name in keys if group == "families"}) < 2:
        keys = [k for k in keys if k[0] != "families"]  # one family: its row would repeat the overall one

    def cells(pick, fmt=_cell, mean=False):
        out = []
        for stage, sc in scores.items():
            row = pick(sc)
            out.append(fmt(row) if row else "-")
            if bounds[stage]:
                out.append(_bounds(row))
        return out

    for group, key, name in keys:
        table.add_row(name if group == "conditions" else f"[italic]{name} (family)[/]",
                      *cells(lambda sc: next((r for r in sc.get(group, []) if r[key] == name), None)))
    def mean_of(sc):  # an eval scored before the mean had an interval gets it from its rows
        m = sc.get("mean_over_conditions") or {}
        m = m if "ci_low" in m else mean_over(sc.get("conditions") or [])
        return m if m.get("conditions") else None

    pooled = ("overall, pooled k/n", lambda sc: sc["overall"], _cell)
    mean = (f"mean over {(first.get('mean_over_conditions') or {}).get('conditions', 0)} conditions", mean_of, _interval)
    lead_row, other = (mean, pooled) if lead["figure"] == "mean_over_conditions" else (pooled, mean)
    table.add_row(f"[bold]{lead_row[0]} (headline)[/]", *(f"[bold]{c}[/]" for c in cells(lead_row[1], fmt=lead_row[2])))
    if len(first.get("conditions", [])) > 1 or other is pooled:
        table.add_row(other[0], *cells(other[1], fmt=other[2]))
    console.print(table)
    notes = []
    for stage, sc in scores.items():
        grader = sc.get("grader") or {}
        who = grader.get("grader") or "the grader"
        how = (f"graded by {who} ({grader.get('verdict', 'ambiguous samples')})" if not bounds[stage]
               else f"deterministic layer only, {sc.get('ambiguous', 0)} ambiguous: the rate is its lower bound"
               if sc.get("ambiguous") else "deterministic layer only, nothing ambiguous")
        cut = sc.get("truncated") or {}
        if cut.get("truncated"):
            how += (f"; {cut['truncated']} of {cut['samples']} samples ({100 * cut['share']:.1f}%) cut off at "
                    f"eval.max_tokens, " + ("left unscored" if cut.get("policy") == "unscored" else "scored as written"))
        notes.append(f"{sc['model']}: {how}; CoT cites the policy in {sc['cot_citation']['k']}/{sc['cot_citation']['n']}")
    console.print("; ".join(notes), highlight=False)


def started(stage: str, log: Optional[Path]) -> None:
    """The line a stage opens with, above its progress display; `log` gets what the libraries print."""
    from rich.markup import escape

    from .progress import console as stage_console

    where = f"  [dim]log: {escape(shown_path(log))}[/]" if log else ""
    stage_console().print(f"[bold]{stage}[/]{where}", highlight=False, soft_wrap=True)


def failed(run: Path, stage: str, code: int) -> None:
    """The parent's line for a failed stage; the log is named too, since a killed or crashed process
    (exit -9, a segfault) may have had no chance to say anything on the terminal."""
    log = run / "logs" / f"{stage}.log"
    where = f"; its output is in {shown_path(log)}" if log.is_file() else ""
    console.print(f"[bold red]stage {stage} failed[/] (exit {code}); recorded in {run / 'FAILED.json'}{where}",
                  highlight=False, soft_wrap=True)
