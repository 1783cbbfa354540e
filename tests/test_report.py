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
    run = sweep / f"{model}-{method}-n{n_samples}"
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
    assert "| method | 1250 AFT samples | 2500 AFT samples |" in section_a
    assert "| baseline | 55.0% [45.0, 65.0] (n=20) | 55.0% [45.0, 65.0] (n=20) |" in section_a
    assert "| aft_cot | 15.0% [5.0, 25.0] (n=20) | 10.0% [0.0, 20.0] (n=20) |" in section_a
    assert "| msm_aft | 5.0% [0.0, 15.0] (n=20) | – |" in section_a
    assert "| baseline | 65.0% [55.0, 75.0] (n=20) | 65.0% [55.0, 75.0] (n=20) |" in section_b
    assert "| aft_cot | 35.0% [25.0, 45.0] (n=20) | 30.0% [20.0, 40.0] (n=20) |" in section_b
    assert "| msm_aft | 25.0% [15.0, 35.0] (n=20) | – |" in section_b
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
    assert md.startswith("# dacli report\n\n## am_rate (am) (rate, 95% Wilson interval, n)\n\n"
                         "| method | 1250 AFT samples |\n")
    assert "| baseline | 65.0% [55.0, 75.0] (n=20) |\n| aft_cot | 35.0% [25.0, 45.0] (n=20) |\n" \
           "| msm_aft | 25.0% [15.0, 35.0] (n=20) |" in md
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
    assert "| msm | 10.0% [0.0, 20.0] (n=20) | 10.0% [0.0, 20.0] (n=20) |" in md
    assert "| aft_cot | 35.0% [25.0, 45.0] (n=20), 1100 examples | 35.0% [25.0, 45.0] (n=20), 2200 examples |" in md
    assert result["plot"]
    # without the stages, msm's missing examples would have put every run on the prompts axis
    assert report._x_axis([{**r, "stages": None} for r in rows]) == "n_samples"


def test_a_spec_sweep_gets_a_table_per_spec_each_with_the_models_baseline(tmp_path):
    from deliberate_cli import report

    sweep, store = tmp_path / "runs" / "sweeps" / "tiny", tmp_path / "runs" / "store"
    base = _baseline(store, "tiny", 10, 20)
    for spec, k in (("default", 4), ("rules_only", 9)):
        run = sweep / f"aft_cot-n8-spec={spec}"
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
