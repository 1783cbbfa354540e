"""`dacli report` on a sweep over two models: one table set and one plot panel per model, each with its
own baseline; a single model's report keeps its layout. Built from run dirs as a sweep leaves them
(config.yaml, .hydra/, eval/<name>/scores.json, the baseline's scores linked in)."""
import json
from pathlib import Path

import yaml

from conftest import dacli, read_json


def _scores(model_label: str, k: int, n: int) -> dict:
    rate = k / n
    return {"eval": "am", "metric": "am_rate", "counts": "harmful", "model": model_label,
            "overall": {"rate": rate, "ci_low": max(0.0, rate - 0.1), "ci_high": min(1.0, rate + 0.1), "k": k, "n": n,
                        "ambiguous": 0, "unscored": 0, "bounds": [rate, rate]},
            "mean_over_conditions": {"rate": rate, "conditions": 2, "bounds": [rate, rate]},
            "conditions": [{"condition": c, "rate": rate, "k": k, "n": n} for c in ("a", "b")],
            "families": [], "ambiguous": 0, "unscored": 0}


def _run(sweep: Path, model: str, method: str, n_samples: int, k: int, n: int, baseline: Path,
         stages=("sft",), examples=None) -> None:
    run = sweep / f"{model}-{method}-{n_samples}ex"
    (run / ".hydra").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(
        {"model": {"name": model}, "method": {"name": method, "stages": list(stages)},
         "data": {"n_samples": n_samples}}))
    if examples is not None:
        sft = run / "checkpoints" / "sft"
        sft.mkdir(parents=True)
        (sft / "manifest.json").write_text(json.dumps({"counts": {"alignment_examples": examples}}))
    (run / "eval" / "am").mkdir(parents=True)
    (run / "eval" / "am" / "scores.json").write_text(json.dumps(_scores(method, k, n)))
    (run / "eval" / "am-baseline").symlink_to(baseline, target_is_directory=True)


def _baseline(store: Path, model: str, k: int, n: int) -> Path:
    out = store / f"eval-am-baseline-{model}"
    out.mkdir(parents=True)
    (out / "scores.json").write_text(json.dumps(_scores("base", k, n)))
    return out


def _two_model_sweep(root: Path) -> Path:
    sweep, store = root / "sweeps" / "msm_paper", root / "store"
    base_a, base_b = _baseline(store, "qwen2_5_32b", 11, 20), _baseline(store, "qwen3_32b", 13, 20)
    for method, count, k_a, k_b in (("aft_cot", 1250, 3, 7), ("aft_cot", 2500, 2, 6), ("msm_aft", 1250, 1, 5)):
        _run(sweep, "qwen2_5_32b", method, count, k_a, 20, base_a)
        _run(sweep, "qwen3_32b", method, count, k_b, 20, base_b)
    return sweep


def test_two_models_get_a_table_each_with_their_own_baseline(tmp_path):
    from deliberate_cli import report

    sweep = _two_model_sweep(tmp_path / "runs")
    result = report.write(sweep)
    data = read_json(sweep / "report.json")
    rows = {(r["model"], r["method"], r["n_samples"]): r["rate"] for r in data["rows"] if r["method"] != "baseline"}
    assert rows == {("qwen2_5_32b", "aft_cot", 1250): 0.15, ("qwen2_5_32b", "aft_cot", 2500): 0.10,
                    ("qwen2_5_32b", "msm_aft", 1250): 0.05, ("qwen3_32b", "aft_cot", 1250): 0.35,
                    ("qwen3_32b", "aft_cot", 2500): 0.30, ("qwen3_32b", "msm_aft", 1250): 0.25}
    assert sorted((r["model"], r["rate"]) for r in data["rows"] if r["method"] == "baseline") == \
        [("qwen2_5_32b", 0.55), ("qwen3_32b", 0.65)]

    md = (sweep / "report.md").read_text()
    a, b = md.index("## model: qwen2_5_32b"), md.index("## model: qwen3_32b")
    assert a < b
    section_a, section_b = md[a:b], md[b:]
    assert "| method | 1250 examples | 2500 examples |" in section_a
    assert "| baseline | 55.0% [45.0, 65.0] (11/20) | 55.0% [45.0, 65.0] (11/20) |" in section_a
    assert "| aft_cot | 15.0% [5.0, 25.0] (3/20) | 10.0% [0.0, 20.0] (2/20) |" in section_a
    assert "| msm_aft | 5.0% [0.0, 15.0] (1/20) | – |" in section_a
    assert "| baseline | 65.0% [55.0, 75.0] (13/20) | 65.0% [55.0, 75.0] (13/20) |" in section_b
    assert "| aft_cot | 35.0% [25.0, 45.0] (7/20) | 30.0% [20.0, 40.0] (6/20) |" in section_b
    assert "| msm_aft | 25.0% [15.0, 35.0] (5/20) | – |" in section_b
    assert "### am_rate (am): mean over conditions" in section_a and "35.0%" not in section_a

    # one panel per model: twice as wide as a single model's plot
    import matplotlib.image

    assert result["plot"] and matplotlib.image.imread(sweep / "am_rate.png").shape[1] == 2 * 6 * 120


def test_one_model_keeps_the_single_table_layout(tmp_path):
    from deliberate_cli import report

    root = tmp_path / "runs"
    base = _baseline(root / "store", "qwen3_32b", 13, 20)
    sweep = root / "sweeps" / "qwen3_32b"
    _run(sweep, "qwen3_32b", "aft_cot", 1250, 7, 20, base)
    _run(sweep, "qwen3_32b", "msm_aft", 1250, 5, 20, base)
    report.write(sweep)
    md = (sweep / "report.md").read_text()
    assert "## model:" not in md
    assert md.startswith("# dacli report\n\n## am_rate (am) (rate, 95% Wilson interval, k/n)\n\n"
                         "| method | 1250 examples |\n")
    assert "| baseline | 65.0% [55.0, 75.0] (13/20) |\n| aft_cot | 35.0% [25.0, 45.0] (7/20) |\n" \
           "| msm_aft | 25.0% [15.0, 35.0] (5/20) |" in md
    assert "### am_rate (am): mean over conditions" in md
    import matplotlib.image

    assert matplotlib.image.imread(sweep / "am_rate.png").shape[1] == 6 * 120


def test_report_command_prints_both_models(tmp_path):
    sweep = _two_model_sweep(tmp_path / "runs")
    out = dacli("report", str(sweep), cwd=tmp_path).stdout
    assert "qwen2_5_32b" in out and "qwen3_32b" in out and "15.0%" in out and "35.0%" in out


def test_midtraining_alone_does_not_take_the_plot_off_the_examples_axis(tmp_path):
    """msm has no AFT examples: its runs are a level line, and the AFT methods keep the examples axis."""
    from deliberate_cli import report

    root = tmp_path / "runs"
    base = _baseline(root / "store", "qwen3_32b", 13, 20)
    sweep = root / "sweeps" / "qwen3_32b"
    for count, examples in ((1250, 1100), (2500, 2200)):
        _run(sweep, "qwen3_32b", "aft_cot", count, 7, 20, base, examples=examples)
        _run(sweep, "qwen3_32b", "msm", count, 2, 20, base, stages=("midtrain",))
    result = report.write(sweep)
    rows = read_json(sweep / "report.json")["rows"]
    assert report._x_axis(rows) == "examples"
    assert sorted((r["method"], r["n_samples"], r["stages"]) for r in rows if r["method"] == "msm") == \
        [("msm", 1250, ["midtrain"]), ("msm", 2500, ["midtrain"])]
    md = (sweep / "report.md").read_text()
    assert "| msm | 10.0% [0.0, 20.0] (2/20) | 10.0% [0.0, 20.0] (2/20) |" in md
    assert "| aft_cot | 35.0% [25.0, 45.0] (7/20), 1100 examples | 35.0% [25.0, 45.0] (7/20), 2200 examples |" in md
    assert result["plot"]
    # without the stages, msm's missing examples would have put every run on the prompts axis
    assert report._x_axis([{**r, "stages": None} for r in rows]) == "n_samples"


def test_a_spec_sweep_gets_a_table_per_spec_each_with_the_models_baseline(tmp_path):
    from deliberate_cli import report

    sweep, store = tmp_path / "runs" / "sweeps" / "tiny", tmp_path / "runs" / "store"
    base = _baseline(store, "tiny", 10, 20)
    for spec, k in (("default", 4), ("rules_only", 9)):
        run = sweep / f"aft_cot-8ex-spec={spec}"
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(
            ["command=run", f"spec={spec}", "method=aft_cot", "data.n_samples=8", "run.root=/x"]))
        (run / "config.yaml").write_text(yaml.safe_dump(
            {"model": {"name": "tiny"}, "method": {"name": "aft_cot", "stages": ["sft"]}, "data": {"n_samples": 8}}))
        (run / "eval" / "am").mkdir(parents=True)
        (run / "eval" / "am" / "scores.json").write_text(json.dumps(_scores("aft_cot", k, 20)))
        (run / "eval" / "am-baseline").symlink_to(base, target_is_directory=True)
    report.write(sweep)
    md = (sweep / "report.md").read_text()
    default, rules = md.split("## model: tiny, spec=rules_only")
    assert "## model: tiny, spec=default" in default
    # each spec's own rate (no row overwrote the other), the baseline in both tables
    assert "| aft_cot | 20.0%" in default and "| aft_cot | 45.0%" in rules
    assert default.count("| baseline | 50.0%") >= 1 and rules.count("| baseline | 50.0%") >= 1


# --- the headline figure and the Fig. 4 form (report_fig4.png) ---

def _mean_led(sweep: Path, run: str, mean: float) -> None:
    """Make a run's scores lead with the mean over 27 conditions, `mean` (its pooled k/n stays)."""
    path = sweep / run / "eval" / "am" / "scores.json"
    s = json.loads(path.read_text())
    mean = round(mean, 6)
    s["headline"] = {"figure": "mean_over_conditions", "rate": mean, "ci_low": max(0.0, round(mean - 0.05, 6)),
                     "ci_high": round(mean + 0.05, 6),
                     "label": "mean over 27 conditions", "bounds": [mean, mean]}
    path.write_text(json.dumps(s))


def _paper_sweep(root: Path, counts_of=None) -> Path:
    """One model: baseline 13/20 (mean 0.70), aft_cot and msm_aft at 1250 and 2500, msm (no AFT) linked at
    both counts; every run leads with a mean over conditions that differs from its pooled rate."""
    counts_of = counts_of or {"aft_cot": (1250, 2500), "msm_aft": (1250, 2500), "msm": (1250, 2500)}
    base = _baseline(root / "store", "qwen2_5_32b", 13, 20)
    (base / "scores.json").write_text(json.dumps({**_scores("base", 13, 20), "headline": {
        "figure": "mean_over_conditions", "rate": 0.70, "ci_low": 0.66, "ci_high": 0.74,
        "label": "mean over 27 conditions", "bounds": [0.70, 0.70]}}))
    sweep = root / "sweeps" / "msm_paper"
    k = {"aft_cot": {1250: 10, 2500: 9}, "msm_aft": {1250: 5, 2500: 4}, "msm": {1250: 3, 2500: 3}}
    for method, counts in counts_of.items():
        for count in counts:
            _run(sweep, "qwen2_5_32b", method, count, k[method][count], 20, base,
                 stages=("midtrain",) if method == "msm" else ("sft",))
            _mean_led(sweep, f"qwen2_5_32b-{method}-{count}ex", k[method][count] / 20 - 0.1)
    return sweep


def test_the_first_table_leads_with_the_mean_and_its_interval_the_pooled_k_n_beside(tmp_path):
    from deliberate_cli import report

    sweep = _paper_sweep(tmp_path / "runs")
    report.write(sweep)
    md = (sweep / "report.md").read_text()
    assert "## am_rate (am) (mean over conditions, 95% interval, pooled k/n)" in md
    assert ("| baseline | 70.0% [66.0, 74.0] mean over 27 conditions (pooled 13/20, 65.0%) | "
            "70.0% [66.0, 74.0] mean over 27 conditions (pooled 13/20, 65.0%) |") in md
    assert ("| aft_cot | 40.0% [35.0, 45.0] mean over 27 conditions (pooled 10/20, 50.0%) | "
            "35.0% [30.0, 40.0] mean over 27 conditions (pooled 9/20, 45.0%) |") in md
    # every cell already leads with the mean: no second table repeating it
    assert "mean over conditions (the MSM paper's Fig. 4 number)" not in md


def test_the_curves_plot_the_headline_figure(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deliberate_cli import report

    sweep = _paper_sweep(tmp_path / "runs")
    rows = report.collect(sweep)["rows"]
    fig, ax = plt.subplots()
    report._panel(ax, rows, "n_samples")
    lines = {line.get_label(): list(line.get_ydata()) for line in ax.get_lines()}
    plt.close(fig)
    assert [round(y, 6) for y in lines["aft_cot"]] == [40.0, 35.0]  # the means, not the pooled 50%, 45%
    assert [round(y, 6) for y in lines["baseline"]] == [70.0, 70.0]
    assert "AM rate (%), mean over conditions" == ax.get_ylabel()


def test_fig4_draws_a_bar_per_method_at_the_largest_shared_count(tmp_path):
    import matplotlib.image

    from deliberate_cli import report

    sweep = _paper_sweep(tmp_path / "runs")
    result = report.write(sweep)
    assert result["fig4"] == str(sweep / "report_fig4.png")
    height, width = matplotlib.image.imread(sweep / "report_fig4.png").shape[:2]
    assert height == int(4.5 * 120) and width > 400
    md = (sweep / "report.md").read_text()
    assert "## Fig. 4 form: am_rate (am) per method at one AFT sample count (report_fig4.png)" in md
    assert ("| method | AFT examples | headline [95% interval] | pooled k/n |\n|---|---|---|---|\n"
            "| baseline | any | 70.0% [66.0, 74.0] mean over 27 conditions | 13/20 |\n"
            "| aft_cot | 2500 | 35.0% [30.0, 40.0] mean over 27 conditions | 9/20 |\n"
            "| msm | any | 5.0% [0.0, 10.0] mean over 27 conditions | 3/20 |\n"
            "| msm_aft | 2500 | 10.0% [5.0, 15.0] mean over 27 conditions | 4/20 |\n") in md


def test_fig4_at_a_chosen_count_and_a_count_no_run_has(tmp_path):
    from deliberate_cli import report

    sweep = _paper_sweep(tmp_path / "runs")
    report.write(sweep, at=1250)
    md = (sweep / "report.md").read_text()
    assert "| aft_cot | 1250 | 40.0% [35.0, 45.0] mean over 27 conditions | 10/20 |" in md
    assert "| msm_aft | 1250 | 15.0% [10.0, 20.0] mean over 27 conditions | 5/20 |" in md
    proc = dacli("report", str(sweep), "--at", "999", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "error: --at 999: no run of eval am has 999 AFT examples; counts: 1250, 2500"


def test_fig4_defaults_to_the_largest_count_every_aft_method_has(tmp_path):
    from deliberate_cli import report

    sweep = _paper_sweep(tmp_path / "runs", {"aft_cot": (1250, 2500), "msm_aft": (1250,), "msm": (2500,)})
    bars = report.fig4_bars(report.collect(sweep))
    (panel,) = bars["panels"]
    assert panel["count"] == 1250 and panel["missing"] == []
    # msm has no AFT: it stands at 1250 though its run was named for 2500
    assert [(b["method"], b["k"]) for b in panel["bars"]] == [("baseline", 13), ("aft_cot", 10), ("msm", 3),
                                                               ("msm_aft", 5)]
    at_2500 = report.fig4_bars(report.collect(sweep), at=2500)["panels"][0]
    assert at_2500["missing"] == ["msm_aft"] and [b["method"] for b in at_2500["bars"]] == ["baseline", "aft_cot", "msm"]


def test_requests_and_tokens_are_totalled_once_per_output_and_priced(tmp_path):
    """The baseline's eval is linked from both runs and the AFT data is an input of one run's checkpoint:
    each output's manifest counts once, an output it was made from (its inputs) counts too, and the
    runs' price table turns tokens into dollars; a model without a price is named."""
    from deliberate_cli import report

    root = tmp_path / "runs"
    sweep, store = root / "sweep", root / "store"
    baseline = _baseline(store, "qwen3_32b", 5, 20)
    grader = {"role": "grader", "model": "anthropic/claude-sonnet-4-6", "requests": 20,
              "input_tokens": 2_000_000, "output_tokens": 100_000}
    (baseline / "manifest.json").write_text(json.dumps({"models": [grader]}))
    data = store / "aft-1234"
    data.mkdir(parents=True)
    (data / "manifest.json").write_text(json.dumps({"models": [
        {"role": "generator", "model": "local-writer", "requests": 8, "input_tokens": 800, "output_tokens": 80}]}))
    for method in ("aft_cot", "msm_aft"):
        _run(sweep, "qwen3_32b", method, 1250, 2, 20, baseline)
        run = sweep / f"qwen3_32b-{method}-1250ex"
        (run / "eval" / "am" / "manifest.json").write_text(json.dumps({"models": [grader]}))
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        cfg["prices"] = {"anthropic/claude-sonnet-4-6": {"input": 3.0, "output": 15.0}}
        (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    sft = sweep / "qwen3_32b-aft_cot-1250ex" / "checkpoints" / "sft"
    sft.mkdir(parents=True)
    (sft / "manifest.json").write_text(json.dumps({"inputs": {"data": {"path": str(data)}}}))
    report.write(sweep)
    spent = {(t["role"], t["model"]): t for t in read_json(sweep / "report.json")["spend"]["models"]}
    # three evals (two runs', one baseline shared by both), each 20 requests
    assert spent[("grader", "anthropic/claude-sonnet-4-6")]["requests"] == 60
    assert spent[("generator", "local-writer")]["requests"] == 8
    cost = 3 * (2.0 * 3.0 + 0.1 * 15.0)
    assert abs(read_json(sweep / "report.json")["spend"]["cost"] - cost) < 1e-9
    md = (sweep / "report.md").read_text()
    assert f"**Cost: ${cost:,.2f}** (no price for: local-writer)" in md and "| grader | anthropic/claude-sonnet-4-6 | 60 |" in md


def test_a_price_table_file_prices_the_report_and_a_bad_one_is_one_line(tmp_path):
    sweep = _two_model_sweep(tmp_path / "runs")
    baseline = next((tmp_path / "runs" / "store").iterdir())
    (baseline / "manifest.json").write_text(json.dumps({"models": [
        {"role": "grader", "model": "openai/gpt-4.1", "requests": 4, "input_tokens": 1_000_000, "output_tokens": 0}]}))
    (tmp_path / "prices.yaml").write_text("openai/gpt-4.1: {input: 2.0, output: 8.0}\n")
    dacli("report", str(sweep), "--prices", str(tmp_path / "prices.yaml"), cwd=tmp_path)
    assert "**Cost: $2.00**" in (sweep / "report.md").read_text()
    (tmp_path / "bad.yaml").write_text("openai/gpt-4.1: 2.0\n")
    proc = dacli("report", str(sweep), "--prices", str(tmp_path / "bad.yaml"), cwd=tmp_path, check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "price table" in proc.stderr
