"""The README's main job, for real: the embedded SmolLM2-135M through every stage (several minutes)."""
import json

import pyarrow.parquet as pq
import pytest

from conftest import REPO, dacli, read_json


@pytest.mark.slow
def test_quickstart_recipe_end_to_end(tmp_path):
    out = dacli("run", "recipe=quickstart", f"run.root={tmp_path}", cwd=REPO, timeout=1200).stdout
    run = tmp_path / "quickstart-aft_cot-16ex"
    kept = pq.read_table(run / "data" / "aft" / "aft.parquet").to_pylist()
    assert kept and all(r["cot"] and r["response"] for r in kept)
    sft = read_json(run / "checkpoints" / "sft" / "manifest.json")
    # 16 examples (data.n_samples counts those the judge kept): the store may hold more from its last round
    assert sft["counts"]["examples"] == 16 <= len(kept) and sft["counts"]["steps"] > 0
    scores = read_json(run / "eval" / "am" / "scores.json")
    assert scores["model_path"] == str(run / "checkpoints" / "sft")
    assert scores["overall"]["n"] == 21 and len(scores["conditions"]) == 7
    samples = [json.loads(l) for l in (run / "eval" / "am" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 21 and all(s["deterministic"]["reason"] for s in samples)
    assert scores["overall"]["bounds"][0] == scores["overall"]["rate"] <= scores["overall"]["bounds"][1]
    baseline = read_json(run / "eval" / "am-baseline" / "scores.json")
    assert baseline["model"] == "base" and baseline["overall"]["n"] == 21
    report = (run / "report.md").read_text()
    assert "| aft_cot |" in report and "| baseline |" in report and f"({scores['overall']['k']}/21)" in report
    assert (run / "am_rate.png").is_file()
    assert "dacli run: quickstart-aft_cot-16ex" in out
    # the terminal ends with the rate, its interval and, with no grader, its bounds
    table = out[out.index("am_rate (harmful): k/n, rate, 95% interval"):]
    assert "bounds" in table and "overall" in table and "mean over" in table  # rich wraps to the terminal
