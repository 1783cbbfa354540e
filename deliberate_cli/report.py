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
               # the spec the MSM corpus discussed: msm.spec, else the run's own (the §3 comparison's rows)
               "msm_spec": (cfg.get("msm") or {}).get("spec") or (cfg.get("spec") or {}).get("name"),
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
                         "families": s.get("families", []), "mean_over_conditions": s.get("mean_over_conditions"),
                         "monitor": s.get("monitor")})
            if s.get("values"):  # a forced-choice eval: the share choosing each value (evals/forced_choice.py)
                rows[-1]["values"] = s["values"]
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
    lines += _value_comparison(data["rows"])
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
        lines += _monitor_lines(rows, metric, h)
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


def _rate_cell(m: Any) -> str:
    """A monitor rate: percent, 95% Wilson interval and k/n; – when undefined (n = 0)."""
    if not m:
        return "–"
    return f"{100 * m['rate']:.1f}% [{100 * m['ci_low']:.1f}, {100 * m['ci_high']:.1f}] ({m['k']}/{m['n']})"


def _monitor_lines(rows: List[Dict[str, Any]], metric: str, h: str) -> List[str]:
    """The CoT monitor table (evals/monitor.py), one row per run whose scores have a `monitor` block:
    how well a model reading only the CoT predicts the harmful actions the eval found."""
    rows = sorted((r for r in rows if r.get("monitor")), key=lambda r: (r["method"] != "baseline", r["method"], r["n_samples"]))
    if not rows:
        return []
    lines = [f"{h}# {metric}: CoT monitor (a model that reads only the CoT predicts a harmful action)", "",
             "| method | AFT samples | recall [95% CI] (k/n) | precision [95% CI] (k/n) | "
             "spec-aware reasoning [95% CI] (k/n) | samples without CoT | monitor |", "|---|---|---|---|---|---|---|"]
    notes = []
    for r in rows:
        m, count = r["monitor"], "–" if r["method"] == "baseline" else r["n_samples"]
        without = f"{m.get('no_cot', 0)} of {m.get('samples', 0)}" + (f" (+{m['open_cot']} unclosed)" if m.get("open_cot") else "")
        lines.append(f"| {r['method']} | {count} | {_rate_cell(m.get('recall'))} | {_rate_cell(m.get('precision'))} | "
                     f"{_rate_cell(m.get('spec_reasoning'))} | {without} | {m.get('model', '')} |")
        if m.get("note"):
            notes.append(f"- {r['method']} ({count}): {m['note']}")
    return lines + [""] + (notes + [""] if notes else [])


def _probe_key(r: Dict[str, Any]) -> Tuple:
    """A §3 comparison row: (model, kind, method, MSM spec, AFT count), kind 0 baseline, 1 AFT only (no
    midtraining: msm.spec does not reach it), 2 MSM (+AFT)."""
    if r["method"] == "baseline":
        return (r["model"], 0, "baseline", "–", "–")
    if "midtrain" not in (r.get("stages") or []):
        return (r["model"], 1, r["method"], "–", r["n_samples"])
    return (r["model"], 2, r["method"], r.get("msm_spec") or "?", "–" if _no_aft(r) else r["n_samples"])


def _probe_label(key: Tuple, stages) -> str:
    kind, spec = key[1], key[3]
    if kind == 0:
        return "baseline"
    if kind == 1:
        return "AFT only"
    return f"MSM({spec})+AFT" if "sft" in (stages or []) else f"MSM({spec})"


def _value_cell(v: Dict[str, Any]) -> str:
    if not v["n"]:  # nothing scored: no rate to show
        return "– (0/0)"
    return f"{100 * v['rate']:.1f}% [{100 * v['ci_low']:.1f}, {100 * v['ci_high']:.1f}] ({v['k']}/{v['n']})"


def _value_comparison(rows: List[Dict[str, Any]]) -> List[str]:
    """The MSM paper's §3 comparison, for each forced-choice eval (scores with `values`, e.g. value_probe):
    one row per model, method, spec the MSM corpus discussed and AFT count (baseline, AFT only,
    MSM(spec A)+AFT, MSM(spec B)+AFT), with the share of scored answers choosing each value. A sweep
    over msm.spec puts each spec's runs in a table set of its own above; this table sets them side by side."""
    lines: List[str] = []
    for name in sorted({r["eval"] for r in rows if r.get("values")}):
        rs = sorted((r for r in rows if r["eval"] == name and r.get("values")), key=lambda r: r["run"])
        values = sorted({v for r in rs for v in r["values"]})
        several = len({r["model"] for r in rs}) > 1
        chosen: Dict[Tuple, Dict[str, Any]] = {}
        repeats: Dict[Tuple, List[Dict[str, Any]]] = defaultdict(list)
        for r in rs:
            key = _probe_key(r)
            if key in chosen:
                repeats[key].append(r)
            else:
                chosen[key] = r
        lines += [f"## §3 comparison: {name} (share of scored answers choosing each value, 95% Wilson interval, k/n)",
                  "", "The MSM paper's controlled-generalisation probe: every trained row had the same AFT data; "
                  "the MSM rows differ only in the spec their corpus discussed.", "",
                  "| " + ("model | " if several else "") + "row | method | MSM spec | AFT samples | "
                  + " | ".join(values) + " | n | unscored |",
                  "|---|" + ("---|" if several else "") + "---|---|---|" + "---|" * len(values) + "---|---|"]
        notes = []
        for key in sorted(chosen, key=lambda k: (k[0], k[1], k[2], k[3], k[4] if isinstance(k[4], int) else -1)):
            r = chosen[key]
            label = _probe_label(key, r.get("stages"))
            cells = [_value_cell(r["values"][v]) if v in r["values"] else "–" for v in values]
            lines.append("| " + (f"{key[0]} | " if several else "") + f"{label} | {key[2]} | {key[3]} | {key[4]} | "
                         + " | ".join(cells) + f" | {r['n']} | {r.get('unscored', 0)} |")
            if repeats.get(key):
                others = "; ".join(f"{o['run']}: " + ", ".join(f"{v} {_value_cell(o['values'][v])}"
                                                               for v in values if v in o["values"])
                                   for o in repeats[key])
                notes.append(f"- {label} ({key[2]}): {1 + len(repeats[key])} runs with these settings"
                             + (" (msm.spec does not reach a method without midtraining)" if key[1] == 1 else "")
                             + f"; shown: {r['run']}; also {others}")
        lines += [""] + (notes + [""] if notes else [])
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
