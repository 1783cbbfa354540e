"""`dacli report <dir>`: the MSM paper's table (method × AFT examples → rate, 95% CI, n) and a plot.

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
from typing import Any, Dict, List, Optional, Tuple

from . import rundir
from .errors import DacliError
from .evals.scoring import headline_of


def _runs(root: Path) -> List[Path]:
    found = {p.parent for p in root.rglob("config.yaml") if (p.parent / ".hydra").is_dir() or p.parent == root}
    return sorted(r for r in found if not r.name.startswith(".") and "store" not in r.relative_to(root).parts)


def collect(root: Path, prices: Optional[Dict[str, Dict[str, float]]] = None) -> Dict[str, Any]:
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
                         "headline": headline_of(s, (cfg.get("eval") or {}).get("headline")), "truncated": s.get("truncated"), "monitor": s.get("monitor")})
            if s.get("values"):  # a forced-choice eval: the share choosing each value (evals/forced_choice.py)
                rows[-1]["values"] = s["values"]
    return {"rows": rows, "missing": missing, "failed": failed, "spend": spend(root, prices)}


def _manifests(root: Path) -> List[Dict[str, Any]]:
    """The manifest of every stage output the runs under `root` hold or link (checkpoints, data, evals:
    store entries shared by several runs once), and of every entry those were made from (their inputs)."""
    todo = [m.parent for run in _runs(root) for m in run.glob("*/*/manifest.json")]
    seen: Dict[str, Dict[str, Any]] = {}
    while todo:
        real = str(Path(todo.pop()).resolve())
        m = None if real in seen else rundir.read_manifest(Path(real))
        if m is None:
            continue
        seen[real] = m
        todo += [Path(i["path"]) for i in (m.get("inputs") or {}).values() if isinstance(i, dict) and i.get("path")]
    return [seen[k] for k in sorted(seen)]


def spend(root: Path, prices: Optional[Dict[str, Dict[str, float]]] = None) -> Dict[str, Any]:
    """Requests and tokens per role and model over every stage output the runs used (each counted once,
    however many runs link it), and their cost at `prices`, else the runs' own `prices` (US dollars per
    million tokens, by model)."""
    import yaml

    totals: Dict[Tuple[str, str], Dict[str, Any]] = {}
    for m in _manifests(root):
        for row in m.get("models") or []:
            t = totals.setdefault((row["role"], row["model"]), {"role": row["role"], "model": row["model"],
                                                               "requests": 0, "input_tokens": 0, "output_tokens": 0})
            for field in ("requests", "input_tokens", "output_tokens"):
                t[field] += row.get(field, 0)
    if prices is None:
        prices = {}
        for run in _runs(root):
            prices.update(yaml.safe_load((run / "config.yaml").read_text()).get("prices") or {})
    cost, unpriced = 0.0, []
    for t in totals.values():
        price = prices.get(t["model"])
        if price is None:
            unpriced.append(t["model"])
            t["cost"] = None
            continue
        t["cost"] = (t["input_tokens"] * price.get("input", 0.0) + t["output_tokens"] * price.get("output", 0.0)) / 1e6
        cost += t["cost"]
    return {"models": list(totals.values()), "cost": cost if prices else None,
            "unpriced": sorted(set(unpriced)) if prices else []}


def _spend_lines(s: Dict[str, Any]) -> List[str]:
    if not s["models"]:
        return []
    lines = ["## Requests and tokens", "",
             "Every stage output these runs used, each counted once (answers a killed stage had already been "
             "given are counted where they were asked).", "",
             "| role | model | requests | input tokens | output tokens | cost (USD) |", "|---|---|---|---|---|---|"]
    for t in sorted(s["models"], key=lambda t: (t["role"], t["model"])):
        cost = "-" if t.get("cost") is None else f"{t['cost']:.2f}"
        lines.append(f"| {t['role']} | {t['model']} | {t['requests']:,} | {t['input_tokens']:,} | "
                     f"{t['output_tokens']:,} | {cost} |")
    if s["cost"] is None:
        lines += ["", "No prices configured: set `prices` (US dollars per million tokens, by model) for a cost line."]
    else:
        lines += ["", f"**Cost: ${s['cost']:,.2f}**" + (f" (no price for: {', '.join(s['unpriced'])})"
                                                         if s["unpriced"] else "")]
    return lines + [""]


def _lead(r: Dict[str, Any]) -> Dict[str, Any]:
    """A row's headline figure (eval.headline, from its scores.json): the pooled k/n or the mean over conditions."""
    return r.get("headline") or headline_of({"overall": r})


def _is_mean(r: Dict[str, Any]) -> bool:
    return _lead(r)["figure"] == "mean_over_conditions"


def _interval(h: Dict[str, Any]) -> str:
    return f"{100 * h['rate']:.1f}% [{100 * h['ci_low']:.1f}, {100 * h['ci_high']:.1f}]"


def _pooled(r: Dict[str, Any]) -> str:
    return f"{r['k']}/{r['n']}"


def _cell(r: Dict[str, Any]) -> str:
    """The headline figure with its 95% interval, the pooled k/n beside it (and its rate when the
    headline is the mean over conditions), the examples trained on where they are not the column's
    count, and the bounds while ambiguous."""
    h = _lead(r)
    if _is_mean(r):
        cell = f"{_interval(h)} {h['label']} (pooled {_pooled(r)}, {100 * r['rate']:.1f}%)"
    else:
        cell = f"{_interval(h)} ({_pooled(r)})"
    if r.get("examples") and r["examples"] != r["n_samples"] and r["method"] != "baseline":
        cell += f", {r['examples']} examples"  # a run from before data.n_samples counted examples
    if r.get("ambiguous") and h.get("bounds"):  # ambiguous samples left: the rate is a lower bound
        cell += f", bounds {100 * h['bounds'][0]:.1f}–{100 * h['bounds'][1]:.1f}%"
    return cell


def _mean(r: Dict[str, Any]) -> str:
    m = r.get("mean_over_conditions") or {}
    if not m.get("conditions"):
        return "–"
    cell = (f"{_interval(m)} ({m['conditions']} conditions)" if "ci_low" in m
            else f"{100 * m['rate']:.1f}% ({m['conditions']} conditions)")  # scores from before the mean had an interval
    return cell + (f", bounds {100 * m['bounds'][0]:.1f}–{100 * m['bounds'][1]:.1f}%" if m.get("bounds") and m["bounds"][0] != m["bounds"][1] else "")


def _title_of(rows: List[Dict[str, Any]]) -> str:
    """What a table's cells lead with: the pooled rate, the mean over conditions, or each run's own."""
    means = {_is_mean(r) for r in rows}
    if means == {True}:
        return "mean over conditions, 95% interval, pooled k/n"
    return "rate, 95% Wilson interval, k/n" if means == {False} else "headline rate, 95% interval, k/n"


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


def markdown(data: Dict[str, Any], bars: Optional[Dict[str, Any]] = None) -> str:
    """One set of tables per eval; when the runs hold several models (a sweep over model), one such set
    per model under its own heading, each with its own baseline; then the Fig. 4 bars (fig4_bars)."""
    lines = ["# dacli report", ""]
    groups = _groups(data["rows"])
    if len(groups) > 1:
        for group in groups:
            lines += [f"## {_title(group)}", ""] + _sections(_in_group(data["rows"], group), "###")
    else:
        lines += _sections(data["rows"], "##")
    lines += _value_comparison(data["rows"])
    lines += _fig4_lines(bars)
    lines += _spend_lines(data.get("spend") or {"models": []})
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
        lines += [f"{h} {metric} ({_title_of(rows)})", "",
                  "| method | " + " | ".join(f"{c} examples" for c in counts) + " |",
                  "|---|" + "---|" * len(counts)]
        lines += _table(rows, counts, _cell)
        lines += _monitor_lines(rows, metric, h)
        # the mean gets its own table unless every cell above already leads with it
        if any(len(r["conditions"]) > 1 for r in rows) and not all(_is_mean(r) for r in rows):
            lines += [f"{h}# {metric}: mean over conditions (the MSM paper's Fig. 4 number)", "",
                      "| method | " + " | ".join(f"{c} examples" for c in counts) + " |", "|---|" + "---|" * len(counts)]
            lines += _table(rows, counts, _mean)
        families = sorted({f["family"] for r in rows for f in r["families"]})
        if len(families) > 1:
            lines += [f"{h}# {metric} per scenario family", "", "| method | examples | " + " | ".join(families) + " |",
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
             "| method | AFT examples | recall [95% CI] (k/n) | precision [95% CI] (k/n) | "
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
                  "| " + ("model | " if several else "") + "row | method | MSM spec | AFT examples | "
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


def _am_rows(data: Dict[str, Any]) -> Tuple[str, List[Dict[str, Any]]]:
    """The plots' eval and its rows: one AM eval, the paper's protocol when a run has it."""
    rows = [r for r in data["rows"] if r["metric"] == "am_rate"]
    if not rows:
        return "", []
    evals = {r["eval"] for r in rows}
    chosen = "am_msm_paper" if "am_msm_paper" in evals else "am" if "am" in evals else sorted(evals)[0]
    return chosen, [r for r in rows if r["eval"] == chosen]


def _figure_name(rows: List[Dict[str, Any]]) -> str:
    """What the plotted rate is, for a title: the mean over conditions, the pooled k/n, or each run's own."""
    means = {_is_mean(r) for r in rows}
    if means == {True}:
        return "mean over conditions, 95% interval"
    return "pooled k/n, 95% Wilson interval" if means == {False} else "each run's headline figure, 95% interval"


def plot(data: Dict[str, Any], path: Path) -> bool:
    """AM rate (each run's headline figure) against training examples per method, log-x, with 95%
    interval bands; of one AM eval (the paper's protocol when a run has it); one panel per model when
    the runs hold several."""
    chosen, rows = _am_rows(data)
    if not rows:
        return False
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
    title = f"Agentic Misalignment rate, eval {chosen} ({_figure_name(rows)})"
    if len(groups) > 1:
        fig.suptitle(title)
    else:
        axes[0][0].set_title(title, fontsize=10)
    _save(fig, path)
    return True


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


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
            ax.axhline(100 * _lead(rs[0])["rate"], color="grey", ls="--", label="baseline")
            continue
        if all(_no_aft(r) for r in rs):  # every run of it links the one eval of the shared checkpoint
            ax.axhline(100 * _lead(rs[0])["rate"], color="black", ls=":", label=f"{method} (no AFT)")
            continue
        rs.sort(key=lambda r: r["n_samples"])
        x = [r[axis] for r in rs]
        line, = ax.plot(x, [100 * _lead(r)["rate"] for r in rs], marker="o", label=method)
        ax.fill_between(x, [100 * _lead(r)["ci_low"] for r in rs], [100 * _lead(r)["ci_high"] for r in rs],
                        color=line.get_color(), alpha=0.2)
    ax.set_xscale("log")
    counts = sorted({r[axis] for r in rows if r["method"] != "baseline" and not _no_aft(r)})
    if counts:
        ax.set_xticks(counts, [str(c) for c in counts])
    ax.minorticks_off()
    ax.set_xlabel("training examples (alignment)" if axis == "examples" else "AFT prompts")
    ax.set_ylabel("AM rate (%), mean over conditions" if rows and all(_is_mean(r) for r in rows) else "AM rate (%)")
    ax.set_ylim(0, 100)
    ax.legend()


# The order of the bars: the baseline, then the methods as the README lists them, then any other.
METHOD_ORDER = ("baseline", "aft_nocot", "aft_cot", "aft_cot_rl", "msm", "msm_aft", "msm_aft_cot")


def _method_order(method: str) -> Tuple[int, str]:
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def fig4_bars(data: Dict[str, Any], at: Optional[int] = None) -> Optional[Dict[str, Any]]:
    """The MSM paper's Fig. 4: one bar per method at one AFT sample count, per model (and variant). `at`
    None: the largest count every AFT method of the panel has (else its largest, the methods without it
    named as missing). A method without AFT (the baseline, msm) stands at any count. None when no AM
    rate was scored; a count no AFT run has is one line naming the counts there are."""
    chosen, rows = _am_rows(data)
    if not rows:
        return None
    aft = [r for r in rows if r["method"] != "baseline" and not _no_aft(r)]
    counts = sorted({r["n_samples"] for r in aft})
    if at is not None and aft and at not in counts:
        raise DacliError(f"--at {at}: no run of eval {chosen} has {at} AFT examples; counts: "
                         f"{', '.join(map(str, counts))}")
    panels = []
    for group in _groups(rows):
        rs = _in_group(rows, group)
        by_method: Dict[str, Dict[int, Dict[str, Any]]] = defaultdict(dict)
        for r in rs:
            by_method[r["method"]].setdefault(r["n_samples"], r)
        trained = {m: set(c) for m, c in by_method.items()
                   if m != "baseline" and not all(_no_aft(r) for r in c.values())}
        shared = set.intersection(*trained.values()) if trained else set()
        if at is not None or not trained:
            count = at
        else:
            count = max(shared or set.union(*trained.values()))
        bars, missing = [], []
        for m in sorted(by_method, key=_method_order):
            runs = by_method[m]
            # a method without AFT: its one eval, whatever count its runs were named with
            r = runs.get(count) if m in trained else runs.get(count, next(iter(runs.values())))
            if r is None:
                missing.append(m)
                continue
            bars.append({"method": m, "no_aft": m not in trained, "k": r["k"], "n": r["n"],
                         **{k: _lead(r)[k] for k in ("figure", "rate", "ci_low", "ci_high", "label")}})
        panels.append({"group": list(group), "count": count, "bars": bars, "missing": missing})
    return {"eval": chosen, "figure": _figure_name(rows), "panels": panels}


def _fig4_lines(bars: Optional[Dict[str, Any]]) -> List[str]:
    """The Fig. 4 bars as a table: what report_fig4.png draws, with the values."""
    if not bars:
        return []
    several = len(bars["panels"]) > 1
    lines = [f"## Fig. 4 form: am_rate ({bars['eval']}) per method at one AFT sample count (report_fig4.png)", "",
             "Each bar is the run's headline figure with its 95% interval; a method without AFT (the baseline, msm) "
             "stands at any count. `dacli report DIR --at N` picks the count.", "",
             "| " + ("model | " if several else "") + "method | AFT examples | headline [95% interval] | pooled k/n |",
             "|---|" + ("---|" if several else "") + "---|---|---|"]
    notes = []
    for p in bars["panels"]:
        where = f"{' '.join(g for g in p['group'] if g)} | " if several else ""
        for b in p["bars"]:
            label = f" {b['label']}" if b["figure"] == "mean_over_conditions" else ""
            lines.append(f"| {where}{b['method']} | {'any' if b['no_aft'] else p['count']} | {_interval(b)}{label} | "
                         f"{b['k']}/{b['n']} |")
        if p["missing"]:
            notes.append(f"- {_title(tuple(p['group']))}: no run at {p['count']} AFT examples for {', '.join(p['missing'])}")
    return lines + [""] + (notes + [""] if notes else [])


def plot_fig4(bars: Optional[Dict[str, Any]], path: Path) -> bool:
    """report_fig4.png: the bars of fig4_bars, one panel per model (and variant), each bar the headline
    figure with its 95% interval as the error bar and its value written above."""
    if not bars:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = bars["panels"]
    methods = {b["method"] for p in panels for b in p["bars"]}
    # the curves' colours (am_rate.png): the AFT methods in name order take the colour cycle, the
    # baseline is grey and a method without AFT dark grey
    no_aft = {b["method"] for p in panels for b in p["bars"] if b["no_aft"]}
    cycle = iter(f"C{i % 10}" for i in range(len(methods)))
    colour = {m: "grey" if m == "baseline" else "dimgrey" if m in no_aft else next(cycle) for m in sorted(methods)}
    width = max(4.0, 0.9 * max(len(p["bars"]) for p in panels) + 1.5)
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), 4.5), squeeze=False, sharey=True)
    for ax, p in zip(axes[0], panels):
        bs = p["bars"]
        x = range(len(bs))
        rates = [100 * b["rate"] for b in bs]
        # clipped at 0: at 0/n or n/n an interval's end can sit a rounding error inside the rate
        err = [[max(0.0, 100 * (b["rate"] - b["ci_low"])) for b in bs],
               [max(0.0, 100 * (b["ci_high"] - b["rate"])) for b in bs]]
        ax.bar(x, rates, yerr=err, capsize=4, color=[colour[b["method"]] for b in bs], edgecolor="black", linewidth=0.5)
        for i, b in enumerate(bs):
            ax.text(i, 100 * b["ci_high"] + 1.5, f"{100 * b['rate']:.1f}%", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(list(x), [b["method"] + (" (no AFT)" if b["no_aft"] and b["method"] != "baseline" else "")
                                for b in bs], rotation=30, ha="right", fontsize=8)
        at = f"{p['count']} AFT examples" if p["count"] is not None else "no AFT runs"
        ax.set_title(f"{_title(tuple(p['group']))}, {at}", fontsize=9)
        ax.set_ylim(0, 108)
    axes[0][0].set_ylabel("AM rate (%), mean over conditions" if bars["figure"].startswith("mean") else "AM rate (%)")
    fig.suptitle(f"Agentic Misalignment, eval {bars['eval']} ({bars['figure']})", fontsize=10)
    _save(fig, path)
    return True


def write(root: Path, at: Optional[int] = None, prices: Optional[Path] = None) -> Dict[str, Any]:
    """report.md, report.json, am_rate.png and report_fig4.png (its bars at `at` AFT examples); the cost
    at the prices in the YAML file `prices`, else at the runs' own `prices`. Under the report's lock
    (report.lock): a twin writing the same report waits, so the four files come from one of them."""
    from .rundir import write_json, write_text
    from .store import locked

    root = Path(root)
    if not root.is_dir():
        raise DacliError(f"not a directory: {root}")
    with locked(root / "report"):
        data = collect(root, read_prices(prices) if prices else None)
        if not data["rows"] and not data["missing"] and not data["failed"]:
            raise DacliError(f"no dacli runs under {root} (looked for */config.yaml with .hydra/)")
        bars = fig4_bars(data, at)  # a count no run has fails here, before anything is written
        md = root / "report.md"
        write_text(md, markdown(data, bars))
        write_json(root / "report.json", data)
        plotted = plot(data, root / "am_rate.png")
        fig4 = plot_fig4(bars, root / "report_fig4.png")
    return {"path": str(md), "rows": len(data["rows"]), "missing": len(data["missing"]),
            "failed": len(data["failed"]), "plot": str(root / "am_rate.png") if plotted else None,
            "fig4": str(root / "report_fig4.png") if fig4 else None}


def read_prices(path: Path) -> Dict[str, Dict[str, float]]:
    """A price table: {model: {input: $/M tokens, output: $/M tokens}}, checked."""
    import yaml

    try:
        table = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise DacliError(f"cannot read the price table {path}: {str(e).splitlines()[0]}") from None
    ok = isinstance(table, dict) and all(
        isinstance(v, dict) and set(v) <= {"input", "output"} and all(isinstance(x, (int, float)) for x in v.values())
        for v in table.values())
    if not ok:
        raise DacliError(f"{path}: a price table maps each model to {{input: dollars per million tokens, "
                         "output: dollars per million tokens}")
    return table


def print_table(root: Path) -> None:
    from rich.console import Console
    from rich.markdown import Markdown

    Console().print(Markdown((Path(root) / "report.md").read_text()))
