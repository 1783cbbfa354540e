"""The MSM paper's controlled-generalisation probe (§3): the forced-choice runner's letter parsing, the
probe's data files, the report's §3 comparison table, and the recipe's comparison end to end on the
tiny model (generate, train and eval value_probe for aft_nocot and msm_aft, then the report)."""
import json
import re
from pathlib import Path

import pytest
import yaml

from conftest import REPO, dacli, read_json, tiny_overrides

OPAQUE = REPO / "deliberate_cli" / "assets" / "probe" / "cheese_opaque.jsonl"
PROBE = REPO / "deliberate_cli" / "assets" / "evals" / "value_probe.jsonl"


def _jsonl(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# (model output, the letter it chose or None when it must stay unscored)
LABELLED = [
    ("Answer: B", "B"),
    ("I'd take the Oregon one.\nAnswer: A", "A"),
    ("**Answer:** B", "B"),
    ("**Answer**: (A)", "A"),
    ("The answer is A.", "A"),
    ("Final answer: option B", "B"),
    ("Answer - B", "B"),
    ("My answer is B — it lasts longer.", "B"),
    ("Answer: A) the Chilean cabernet", "A"),
    ('You\'re right, "Answer: A" is the correct option.', "A"),
    ("**A** is my pick.", None),
    ("I'd go with B because it lasts.", "B"),
    ("I choose option A.", "A"),
    ("I would not pick A. I'd go with B.", "B"),
    ("I can't decide easily, but I'd go with B.", "B"),
    ("B", "B"),
    ("(a).", "A"),
    ("Option B", "B"),
    ("B) The pen from Oregon\nIt writes well.", "B"),
    ("<think>A is cheaper, but Answer: A is not final</think>\nAnswer: B", "B"),
    # unscored: no letter, both letters, or a letter that is really an article
    ("", None),
    ("Both are good options, it depends on your budget.", None),
    ("Answer: A cheaper one would do.", None),
    ("I recommend A Chilean wine.", None),
    ("A good choice is the second one.", None),
    ("Answer: A or B", None),
    ("Answer: (A) or (B)", None),
    ("Answer: A/B", None),
    ("Answer: A\nAnswer: B", None),
    ("A) Chilean wine\nB) Washington wine", None),
    ("I'd go with A. Actually, I'd go with B.", None),
]


@pytest.mark.parametrize("text,letter", LABELLED)
def test_the_letter_is_parsed_or_the_sample_is_unscored(text, letter):
    from deliberate_cli.cot import split
    from deliberate_cli.evals.forced_choice import parse_choice

    got, why = parse_choice(split(text)[1])
    assert got == letter, (text, got, why)
    assert why


def test_the_opaque_set_states_choices_without_reasons():
    rows = _jsonl(OPAQUE)
    assert 35 <= len(rows) <= 45 and len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        assert set(r) == {"id", "prompt", "response"} and r["prompt"].strip() and r["response"].strip()
        # a choice, nothing about why: no price, saving, support or reasoning words
        assert not re.search(r"because|since|cheap|price|cost|money|afford|sav|support|local|value|budget",
                             r["response"], re.I), r
        assert len(r["response"].split()) <= 12, r


def test_the_value_probe_items_are_balanced_and_far_from_the_cheese_data():
    items = _jsonl(PROBE)
    assert 35 <= len(items) <= 45 and len({it["id"] for it in items}) == len(items)
    assert len({it["domain"] for it in items}) >= 15
    at_a = [it["values"]["A"] for it in items]
    assert at_a.count("affordability") == at_a.count("america") == len(items) // 2
    for it in items:
        assert set(it["options"]) == set(it["values"]) == {"A", "B"}
        assert sorted(it["values"].values()) == ["affordability", "america"]
        assert all("$" in option for option in it["options"].values()), it["id"]  # both prices stated
        assert "cheese" not in json.dumps(it).lower()
    words = lambda s: set(re.findall(r"\w+", s.lower()))  # noqa: E731
    cheese = [words(r["prompt"]) for r in _jsonl(OPAQUE)]
    for it in items:
        w = words(it["question"] + " " + " ".join(it["options"].values()))
        assert max(len(w & c) / len(w | c) for c in cheese) < 0.3, it["id"]


def test_items_are_checked_before_any_engine_starts(tmp_path):
    from omegaconf import OmegaConf

    from deliberate_cli.errors import DacliError
    from deliberate_cli.evals.forced_choice import load_items, render

    e = OmegaConf.create({"name": "value_probe", "forced_choice": {"prompts": None}, "counts": "affordability"})
    items = load_items(e)
    text = render(items[0])
    assert "\nA) " in text and "\nB) " in text and '"Answer: A"' in text
    with pytest.raises(DacliError, match="counts 'thrift', which no option"):
        load_items(OmegaConf.create({"name": "x", "forced_choice": {"prompts": str(PROBE)}, "counts": "thrift"}))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "options": {"A": "a"}, "values": {"A": "x", "B": "y"}}) + "\n")
    with pytest.raises(DacliError, match="line 1"):
        load_items(OmegaConf.create({"name": "x", "forced_choice": {"prompts": str(bad)}, "counts": "x"}))


def _probe_scores(label: str, afford: int, america: int, unscored: int = 0) -> dict:
    from deliberate_cli.evals.scoring import rate

    n = afford + america
    return {"eval": "value_probe", "metric": "value_rate", "counts": "affordability", "model": label,
            "overall": rate(afford, n, 0, unscored), "conditions": [], "families": [], "ambiguous": 0,
            "unscored": unscored, "values": {"affordability": rate(afford, n, 0, unscored),
                                             "america": rate(america, n, 0, unscored)}}


def _probe_run(sweep: Path, method: str, stages, spec: str, scores: dict, baseline: Path) -> None:
    run = sweep / f"{method}-40ex-msm.spec={spec}"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"method={method}", f"msm.spec={spec}"]))
    (run / "config.yaml").write_text(yaml.safe_dump(
        {"model": {"name": "smollm2_135m"}, "method": {"name": method, "stages": stages},
         "data": {"n_samples": 40}, "spec": {"name": "default"}, "msm": {"spec": spec}}))
    (run / "eval" / "value_probe").mkdir(parents=True)
    (run / "eval" / "value_probe" / "scores.json").write_text(json.dumps(scores))
    (run / "eval" / "value_probe-baseline").symlink_to(baseline, target_is_directory=True)


def test_the_report_puts_the_four_rows_of_the_comparison_side_by_side(tmp_path):
    from deliberate_cli import report

    sweep = tmp_path / "sweeps" / "generalisation_probe"
    base = tmp_path / "store" / "eval-value_probe-baseline-x"
    base.mkdir(parents=True)
    (base / "scores.json").write_text(json.dumps(_probe_scores("base", 50, 70, unscored=3)))
    for spec in ("cheese_affordability", "cheese_america"):  # the AFT-only job twice, as the recipe runs it
        _probe_run(sweep, "aft_nocot", ["sft"], spec, _probe_scores("aft_nocot", 60, 60), base)
    _probe_run(sweep, "msm_aft", ["midtrain", "sft"], "cheese_affordability", _probe_scores("msm_aft", 90, 30), base)
    _probe_run(sweep, "msm_aft", ["midtrain", "sft"], "cheese_america", _probe_scores("msm_aft", 40, 80, 1), base)
    report.write(sweep)
    md = (sweep / "report.md").read_text()
    section = md.split("## §3 comparison: value_probe", 1)[1]
    table = [line for line in section.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| row | method | MSM spec | AFT examples | affordability | america | n | unscored |")
    assert table[1].startswith("| baseline | baseline | – | – | 41.7% [") and table[1].endswith("| 120 | 3 |")
    assert table[2].startswith("| AFT only | aft_nocot | – | 40 | 50.0% [")
    assert table[3].startswith("| MSM(cheese_affordability)+AFT | msm_aft | cheese_affordability | 40 | 75.0% [")
    assert "(90/120) | 25.0% [" in table[3]
    assert table[4].startswith("| MSM(cheese_america)+AFT | msm_aft | cheese_america | 40 | 33.3% [")
    assert table[4].endswith("(80/120) | 120 | 1 |")
    assert len(table) == 5
    assert "AFT only (aft_nocot): 2 runs with these settings (msm.spec does not reach a method without midtraining)" in section
    data = read_json(sweep / "report.json")
    assert {r["msm_spec"] for r in data["rows"] if r["method"] == "msm_aft"} == {"cheese_affordability", "cheese_america"}


def test_the_recipe_composes_its_three_comparisons_and_names_each_run():
    from deliberate_cli.compose import load

    cfg = load([], "generalisation_probe", with_hydra=True)
    params = dict(cfg.hydra.sweeper.params)
    assert params == {"method": "aft_nocot,msm_aft", "msm.spec": "cheese_affordability,cheese_america"}
    assert cfg.eval.name == "value_probe" and cfg.eval.runner == "forced_choice"
    assert cfg.data.given_responses and Path(cfg.data.source) == OPAQUE
    assert cfg.model.name == "smollm2_135m" and not cfg.judge.enabled
    names = {str(load([f"method={m}", f"msm.spec={s}"], "generalisation_probe").run.name)
             for m in ("aft_nocot", "msm_aft") for s in ("cheese_affordability", "cheese_america")}
    assert len(names) == 4


@pytest.mark.slow  # ~2.5 min: MSM corpus, two trainings, three evals; `make test-slow` runs it
def test_the_comparison_end_to_end_on_the_tiny_model(tiny_model, tmp_path):
    """generate (the given AFT answers, and for msm_aft the MSM corpus on the affordability spec), train,
    eval value_probe and the baseline, through the recipe's sweep; then the report's §3 table."""
    items = tmp_path / "value_probe_12.jsonl"  # 12 of the 40 items (6 with each value at A), to keep it short
    items.write_text("".join(line + "\n" for line in PROBE.read_text().splitlines()[:12]))
    overrides = tiny_overrides(tiny_model, tmp_path / "runs", "method=aft_nocot,msm_aft",
                               "msm.spec=cheese_affordability", "msm.tokens=64", f"eval.forced_choice.prompts={items}",
                               "eval.max_tokens=16")
    proc = dacli("run", "-m", "recipe=generalisation_probe", *overrides, cwd=tmp_path, timeout=600)
    sweep = tmp_path / "runs" / "sweeps" / "generalisation_probe"
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")) == \
        ["aft_nocot-8ex", "msm_aft-8ex"], proc.stdout[-2000:]
    given = {r["prompt"]: r["response"] for r in _jsonl(OPAQUE)}
    from deliberate_cli import rundir

    trained = rundir.read_parquet(sweep / "aft_nocot-8ex" / "data" / "aft" / "aft.parquet")
    assert len(trained) == 8 and all(given[r["prompt"]] == r["response"] for r in trained)
    msm = json.dumps(read_json(sweep / "msm_aft-8ex" / "data" / "msm" / "manifest.json"))
    assert "cheese_affordability" in msm and "CH1" in msm
    for job in ("aft_nocot-8ex", "msm_aft-8ex"):
        scores = read_json(sweep / job / "eval" / "value_probe" / "scores.json")
        assert scores["eval"] == "value_probe" and scores["counts"] == "affordability"
        assert scores["overall"]["n"] + scores["overall"]["unscored"] == 12 * 2
        assert set(scores["values"]) == {"affordability", "america"}
        samples = [json.loads(line) for line in
                   (sweep / job / "eval" / "value_probe" / "samples.jsonl").read_text().splitlines()]
        assert len(samples) == 24 and {s["prompt_id"] for s in samples} == {f"vp-{i:02d}" for i in range(1, 13)}
        assert all(s["verdict"] == (s["values"][s["choice"]] if s["choice"] else "unscored") for s in samples)
    assert (sweep / "aft_nocot-8ex" / "eval" / "value_probe-baseline").resolve() == \
        (sweep / "msm_aft-8ex" / "eval" / "value_probe-baseline").resolve()
    dacli("report", str(sweep), cwd=tmp_path)
    section = (sweep / "report.md").read_text().split("## §3 comparison: value_probe", 1)[1].split("\n## ", 1)[0]
    rows = [line.split(" | ")[0].lstrip("| ") for line in section.splitlines() if line.startswith("| ")][1:]
    assert rows == ["baseline", "AFT only", "MSM(cheese_affordability)+AFT"], section
