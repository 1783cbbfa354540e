"""`dacli report <dir>`: the MSM paper's table (method × AFT samples → rate, 95% CI, n) and a plot.

Reads only run configs and scores.json files, so it works on a single run, a whole sweep, or a
sweep that is still running (runs without scores are listed as missing, failed runs with their error).
A sweep over several models, or over anything else that changes what a run computes (a spec, a
learning rate: the overrides that name its dir, naming.py), gets one set of tables and one plot panel
per model and variant, each with its model's baseline.
"""
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Tuple

from . import rundir
from .errors import DacliError


def _runs(root: Path) -> List[Path]:
    found = {p.parent for p in root.rglob("config.yaml") if (p.parent / ".hydra").is_dir() or p.parent == root}
    return sorted(r for r in found if not r.name.startswith(".") and "store" not in r.relative_to(root).parts)


def collect(root: Path) -> Dict[str, Any]:
    import yaml

    rows, missing, failed = [], [], []
    seen_baselines: set = set()
    for run in _runs(root):
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        sft = (rundir.read_manifest(run / "checkpoints" / "sft") or {}).get("counts", {})
        key = {"run": str(run.relative_to(root)) or ".", "model": cfg["model"]["name"], "variant": _variant(run),
               "method": cfg["method"]["name"], "n_samples": cfg["data"]["n_samples"],
               "stages": cfg["method"].get("stages"),
               # what the model actually trained on: the alignment examples that passed (and were selected)
               "examples": sft.get("alignment_examples", sft.get("examples"))}
        if (run / "FAILED.json").is_file():
            failed.append({**key, **json.loads((run / "FAILED.json").read_text())})
        scores = sorted(run.glob("eval/*/scores.json"))
        if not [p for p in scores if json.loads(p.read_text()).get("model") != "base"]:
            missing.append(key)
        for path in scores:
            s = json.loads(path.read_text())
            baseline = s.get("model") == "base"
            if baseline and str(path.resolve()) in seen_baselines:
                continue  # one baseline per sweep, linked from every run dir
            seen_baselines.add(str(path.resolve()))
            rows.append({**key, "method": "baseline" if baseline else key["method"], "eval": s["eval"],
                         "metric": s["metric"], **s["overall"], "ambiguous": s.get("ambiguous", 0),
                         "cot_citation": s.get("cot_citation"), "conditions": s.get("conditions", []),
                         "families": s.get("families", []), "mean_over_conditions": s.get("mean_over_conditions")})
    return {"rows": rows, "missing": missing, "failed": failed}


def _cell(r: Dict[str, Any]) -> str:
    cell = f"{100 * r['rate']:.1f}% [{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}] (n={r['n']})"
    if r.get("examples") and r["method"] != "baseline":
        cell += f", {r['examples']} examples"
    if r.get("ambiguous"):  # ambiguous samples left: the rate is a lower bound
        cell += f", bounds {100 * r['bounds'][0]:.1f}–{100 * r['bounds'][1]:.1f}%"
    return cell


def _mean(r: Dict[str, Any]) -> str:
    m = r.get("mean_over_conditions") or {}
    if not m.get("conditions"):
        return "–"
    cell = f"{100 * m['rate']:.1f}% ({m['conditions']} conditions)"
    return cell + (f", bounds {100 * m['bounds'][0]:.1f}–{100 * m['bounds'][1]:.1f}%" if m.get("bounds") and m["bounds"][0] != m["bounds"][1] else "")


def _table(rows: List[Dict[str, Any]], counts: List[int], cell) -> List[str]:
    table: Dict[str, Dict[int, str]] = defaultdict(dict)
    for r in rows:
        if r["method"] == "baseline":
            table["baseline"] = {c: cell(r) for c in counts}
        else:
            table[r["method"]][r["n_samples"]] = cell(r)
    return [f"| {m} | " + " | ".join(table[m].get(c, "–") for c in counts) + " |"
            for m in sorted(table, key=lambda m: (m != "baseline", m))] + [""]


def _variant(run: Path) -> str:
    """The overrides that set this run apart beyond model, method and count (naming.py), from the
    overrides Hydra recorded for it: what a sweep over a spec, a learning rate... varies."""
    import yaml

    from .naming import variant

    recorded = run / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(recorded.read_text()) if recorded.is_file() else []
    return " ".join(variant(overrides or []))


def _groups(rows: List[Dict[str, Any]]) -> List[Tuple[str, str]]:
    """(model, variant) of every trained run, in order; a group's baseline is its model's."""
    return sorted({(r["model"], r.get("variant", "")) for r in rows if r["method"] != "baseline"}
                  or {(r["model"], "") for r in rows})


def _in_group(rows: List[Dict[str, Any]], group: Tuple[str, str]) -> List[Dict[str, Any]]:
    model, variant = group
    return [r for r in rows if r["model"] == model and (r["method"] == "baseline" or r.get("variant", "") == variant)]


def _title(group: Tuple[str, str]) -> str:
    return f"model: {group[0]}" + (f", {group[1]}" if group[1] else "")


def markdown(data: Dict[str, Any]) -> str:
    """One set of tables per eval; when the runs hold several models (a sweep over model), one such set
    per model under its own heading, each with its own baseline."""
    lines = ["# dacli report", ""]
    groups = _groups(data["rows"])
    if len(groups) > 1:
        for group in groups:
            lines += [f"## {_title(group)}", ""] + _sections(_in_group(data["rows"], group), "###")
    else:
        lines += _sections(data["rows"], "##")
    if data["missing"]:
        lines += ["## Runs without scores yet", ""] + [f"- {m['run']}" for m in data["missing"]] + [""]
    if data["failed"]:
        lines += ["## Failed runs", ""] + [f"- {f['run']}: stage {f['stage']} exited {f['exit_code']}: "
                                           f"{f.get('error', '')}" for f in data["failed"]] + [""]
    return "\n".join(lines)


def _sections(rows_in: List[Dict[str, Any]], h: str) -> List[str]:
    """The tables of one model's rows: `h` is the heading level of each eval's table."""
    lines: List[str] = []
    by_eval: Dict[str, List[Dict]] = defaultdict(list)
    for r in rows_in:  # one table per eval: two AM evals (am, am_msm_paper) share the metric's name
        by_eval[f"{r['metric']} ({r['eval']})"].append(r)
    for metric, rows in sorted(by_eval.items()):
        counts = sorted({r["n_samples"] for r in rows if r["method"] != "baseline"})
        lines += [f"{h} {metric} (rate, 95% Wilson interval, n)", "",
                  "| method | " + " | ".join(f"{c} AFT samples" for c in counts) + " |",
                  "|---|" + "---|" * len(counts)]
        lines += _table(rows, counts, _cell)
        if any(len(r["conditions"]) > 1 for r in rows):
            lines += [f"{h}# {metric}: mean over conditions (the MSM paper's Fig. 4 number)", "",
                      "| method | " + " | ".join(f"{c} AFT samples" for c in counts) + " |", "|---|" + "---|" * len(counts)]
            lines += _table(rows, counts, _mean)
        families = sorted({f["family"] for r in rows for f in r["families"]})
        if len(families) > 1:
            lines += [f"{h}# {metric} per scenario family", "", "| method | AFT samples | " + " | ".join(families) + " |",
                      "|---|---|" + "---|" * len(families)]
            for r in sorted(rows, key=lambda r: (r["method"] != "baseline", r["method"], r["n_samples"])):
                got = {f["family"]: f"{100 * f['rate']:.1f}% (n={f['n']})" for f in r["families"]}
                lines.append(f"| {r['method']} | {'–' if r['method'] == 'baseline' else r['n_samples']} | "
                             + " | ".join(got.get(f, "–") for f in families) + " |")
            lines.append("")
    return lines


def plot(data: Dict[str, Any], path: Path) -> bool:
    """AM rate against training examples per method, log-x, with 95% interval bands; of one AM eval
    (the paper's protocol when a run has it); one panel per model when the runs hold several."""
    rows = [r for r in data["rows"] if r["metric"] == "am_rate"]
    if not rows:
        return False
    evals = {r["eval"] for r in rows}
    chosen = "am_msm_paper" if "am_msm_paper" in evals else "am" if "am" in evals else sorted(evals)[0]
    rows = [r for r in rows if r["eval"] == chosen]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axis = _x_axis(rows)
    groups = _groups(rows)
    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4), squeeze=False, sharey=True)
    for ax, group in zip(axes[0], groups):
        _panel(ax, _in_group(rows, group), axis)
        if len(groups) > 1:
            ax.set_title(_title(group), fontsize=9)
    if len(groups) > 1:
        fig.suptitle(f"Agentic Misalignment rate, eval {chosen} (95% Wilson interval)")
    else:
        axes[0][0].set_title(f"Agentic Misalignment rate, eval {chosen} (95% Wilson interval)")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return True


def _no_aft(r: Dict[str, Any]) -> bool:
    """A run of a method without an SFT stage (msm: midtraining alone); its AFT count means nothing."""
    return r.get("stages") is not None and "sft" not in r["stages"]


def _x_axis(rows: List[Dict[str, Any]]) -> str:
    """x: the examples each model trained on, where every AFT run recorded them; else its prompts."""
    trained = [r for r in rows if r["method"] != "baseline" and not _no_aft(r)]
    return "examples" if trained and all(r.get("examples") for r in trained) else "n_samples"


def _panel(ax, rows: List[Dict[str, Any]], axis: str) -> None:
    """One model's curves: a line with its interval band per method, the baseline dashed, a method
    without AFT (msm) dotted at its rate (its runs share one checkpoint and one eval)."""
    by_method: Dict[str, List[Dict]] = defaultdict(list)
    for r in rows:
        by_method[r["method"]].append(r)
    for method, rs in sorted(by_method.items()):
        if method == "baseline":
            r = rs[0]
            ax.axhline(100 * r["rate"], color="grey", ls="--", label="baseline")
            continue
        if all(_no_aft(r) for r in rs):  # every run of it links the one eval of the shared checkpoint
            ax.axhline(100 * rs[0]["rate"], color="black", ls=":", label=f"{method} (no AFT)")
            continue
        rs.sort(key=lambda r: r["n_samples"])
        x = [r[axis] for r in rs]
        line, = ax.plot(x, [100 * r["rate"] for r in rs], marker="o", label=method)
        ax.fill_between(x, [100 * r["ci_low"] for r in rs], [100 * r["ci_high"] for r in rs],
                        color=line.get_color(), alpha=0.2)
    ax.set_xscale("log")
    counts = sorted({r[axis] for r in rows if r["method"] != "baseline" and not _no_aft(r)})
    if counts:
        ax.set_xticks(counts, [str(c) for c in counts])
    ax.minorticks_off()
    ax.set_xlabel("training examples (alignment)" if axis == "examples" else "AFT prompts")
    ax.set_ylabel("AM rate (%)")
    ax.set_ylim(0, 100)
    ax.legend()


def write(root: Path) -> Dict[str, Any]:
    from .rundir import write_json

    root = Path(root)
    if not root.is_dir():
        raise DacliError(f"not a directory: {root}")
    data = collect(root)
    if not data["rows"] and not data["missing"] and not data["failed"]:
        raise DacliError(f"no dacli runs under {root} (looked for */config.yaml with .hydra/)")
    md = root / "report.md"
    tmp = md.with_name(".report.md.tmp")
    tmp.write_text(markdown(data))
    os.replace(tmp, md)
    write_json(root / "report.json", data)
    plotted = plot(data, root / "am_rate.png")
    return {"path": str(md), "rows": len(data["rows"]), "missing": len(data["missing"]),
            "failed": len(data["failed"]), "plot": str(root / "am_rate.png") if plotted else None}


def print_table(root: Path) -> None:
    from rich.console import Console
    from rich.markdown import Markdown

    Console().print(Markdown((Path(root) / "report.md").read_text()))
