"""Runs that differ in what they compute get different dirs; runs that differ only in where or how fast
they run, or in which eval scores them, share one (so generate, train and eval meet)."""
import pytest

from conftest import dacli
from deliberate_cli.naming import suffix, variant


def test_variant_keeps_what_changes_results_and_puts_groups_first():
    overrides = ["command=run", "run.root=/tmp/x", "eval=am", "eval.samples_per_scenario=3", "method=aft_cot",
                 "data.n_samples=8", "train.learning_rate=1e-4", "spec=rules_only", "generator.tensor_parallel_size=8",
                 "judge.threshold=7", "hydra/launcher=slurm", "data.generated.pool=80", "+msm.tokens=5"]
    assert variant(overrides) == ["spec=rules_only", "judge.threshold=7", "msm.tokens=5", "train.learning_rate=1e-4"]
    assert variant(["model=qwen3_32b", "method=msm"], covered=("method",)) == ["model=qwen3_32b"]
    assert suffix([]) == ""
    assert suffix(["spec=rules_only", "model.name_or_path=/a/b"]) == "-spec=rules_only-model.name_or_path=_a_b"
    long = suffix([f"train.k{i}=1" for i in range(30)])
    assert len(long) <= 81 and long != suffix([f"train.k{i}=1" for i in range(31)])  # cut, but still distinct


@pytest.mark.slow  # 33 s of generate, train and eval; the names themselves are checked above, at once
def test_a_spec_sweep_writes_two_runs_and_generate_then_eval_meet_in_one(tiny_model, tmp_path):
    base = [f"model.name_or_path={tiny_model}", "model.name=tiny", f"run.root={tmp_path / 'runs'}", "data.n_samples=4",
            "generator=transformers", "generator.cot_max_tokens=8", "generator.response_max_tokens=8",
            "generator.cot_budget=force", "judge=none", "judge.allow_truncated_response=true",
            "judge.check_expected_behavior=false", "judge.check_label_policy_ids=false", "method=aft_nocot",
            "train.epochs=1", "train.report_to=[]"]
    dacli("generate", "-m", *base, "spec=default,rules_only", cwd=tmp_path)
    jobs = sorted(p.name for p in (tmp_path / "runs" / "sweeps" / "tiny").iterdir() if p.is_dir())
    assert len(jobs) == 2 and "spec=default" in jobs[0] and "spec=rules_only" in jobs[1]

    # A single run: a spec override names it; the eval's own settings and a runtime knob do not, so
    # `dacli eval` finds what `dacli train` wrote.
    dacli("generate", *base, "spec=rules_only", "generator.batch_size=2", cwd=tmp_path)
    dacli("train", *base, "spec=rules_only", cwd=tmp_path)
    dacli("eval", "am", *base, "spec=rules_only", "eval.engine.backend=transformers", "eval.samples_per_scenario=1",
          "eval.max_tokens=4", "eval.am.conditions=[blackmail_explicit_replacement]", cwd=tmp_path)
    runs = [p for p in (tmp_path / "runs").iterdir() if p.name.startswith("tiny-aft_nocot-4ex")]
    assert len(runs) == 1 and "spec=rules_only" in runs[0].name
    assert (runs[0] / "checkpoints" / "sft" / "manifest.json").is_file()
    assert (runs[0] / "eval" / "am" / "scores.json").is_file()
