"""The CLI front door: fast help, one-line errors for user mistakes, composed configs."""
import subprocess
import sys

import pytest

from conftest import REPO, dacli

HEAVY = ("torch", "transformers", "trl", "datasets", "vllm")


def test_help_imports_no_heavy_package():
    code = ("import sys; from deliberate_cli.cli import app; from typer.testing import CliRunner; "
            "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
            "r = CliRunner().invoke(app, ['train', '--help']); assert r.exit_code == 0, r.output; "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_unknown_method_is_one_line_listing_valid_options(tmp_path):
    proc = dacli("train", "method=foo", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert lines == ["error: unknown method 'foo'; valid: aft_cot, aft_cot_rl, aft_nocot, msm, msm_aft, msm_aft_cot"]
    assert not (tmp_path / "runs").exists()


def test_misspelt_key_names_it_and_lists_valid_keys(tmp_path):
    proc = dacli("generate", "data.n_sample=5", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: unknown config key 'data.n_sample'; valid keys in data: name, source, hf_split, columns, n_samples, seed, max_prompts, select, candidates, mix, generated, decontam_threshold, given_responses"]


def test_bad_value_type_and_unknown_recipe_and_eval(tmp_path):
    for args, needle in [(("config", "data.n_samples=abc"), "data.n_samples=abc"),
                         (("run", "recipe=nope"), "unknown recipe 'nope'; valid:"),
                         (("eval", "nope"), "unknown eval 'nope'; valid: am")]:
        proc = dacli(*args, cwd=tmp_path, check=False)
        assert proc.returncode == 2, args
        assert len(proc.stderr.strip().splitlines()) == 1 and needle in proc.stderr, proc.stderr


def test_settings_that_compose_but_cannot_run_fail_before_any_stage(tmp_path):
    for args, needle in [
        (("eval", "am", "eval.temperature=0", "eval.samples_per_scenario=3"),
         "eval.temperature=0 decodes greedily, so the 3 samples of eval.samples_per_scenario would be identical"),
        (("generate", "generator.temperature=0.0", "generator.samples_per_prompt=2"), "generator.samples_per_prompt=1"),
        (("run", "-m", "eval.samples_per_scenario=2,0"), "eval.samples_per_scenario must be at least 1, got 0"),
        (("generate", "generator.cot_budget=maybe"), "generator.cot_budget must be reject or force"),
        (("config", "eval.temperature=0", "eval.samples_per_scenario=2"), "decodes greedily"),
        (("config", "train.learning_rate=-1"), "train.learning_rate must be above 0, got -1.0"),
        # this machine has no SLURM: one line, not submitit's traceback
        (("generate", "-m", "hydra/launcher=slurm", "data.n_samples=4"), "hydra/launcher=slurm needs SLURM"),
        (("train", "train.report_to=[tensorboard,wandbb]"), "unknown tracker 'wandbb'; valid: none, tensorboard, wandb")]:
        proc = dacli(*args, cwd=tmp_path, check=False)
        assert proc.returncode == 2, args
        assert len(proc.stderr.strip().splitlines()) == 1 and needle in proc.stderr, proc.stderr
    assert not (tmp_path / "runs").exists()


def test_a_tracker_that_is_not_installed_is_named_before_training(tmp_path):
    import importlib.util

    if importlib.util.find_spec("mlflow") is not None:
        pytest.skip("mlflow is installed here")
    proc = dacli("train", "train.report_to=[mlflow]", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: train.report_to names mlflow, which is not installed: `pip install mlflow`, or drop it from train.report_to"]


def test_config_composes_recipe_and_overrides(tmp_path):
    out = dacli("config", "recipe=quickstart", "method=msm_aft", cwd=REPO).stdout
    assert "name: msm_aft" in out and "- midtrain" in out
    assert "n_samples: 16" in out  # from the recipe
    out = dacli("config", "spec=rules_only", cwd=REPO).stdout
    assert "include_reasons: false" in out


def test_every_config_file_opens_with_a_comment():
    files = list((REPO / "conf").rglob("*.yaml")) + list((REPO / "recipes").glob("*.yaml"))
    assert len(files) > 15
    for f in files:
        assert f.read_text().startswith("#"), f


def test_sweep_launchers_compose_from_conf():
    """SLURM cannot run here: its launcher config is checked by composing it, as docs/sweeps.md says."""
    from hydra import compose, initialize_config_dir

    from deliberate_cli.compose import conf_dir
    from deliberate_cli.config import register_schemas

    register_schemas()
    with initialize_config_dir(str(conf_dir()), version_base=None):
        slurm = compose("config", ["hydra/launcher=slurm", "hydra.launcher.partition=gpu"], return_hydra_config=True)
        local = compose("config", ["hydra/launcher=local_parallel"], return_hydra_config=True)
    assert slurm.hydra.launcher._target_.endswith("SlurmLauncher")
    assert (slurm.hydra.launcher.partition, slurm.hydra.launcher.gpus_per_node) == ("gpu", 1)
    assert local.hydra.launcher._target_.endswith("JoblibLauncher") and local.hydra.launcher.n_jobs == 2


@pytest.mark.parametrize("override, message", [
    ("train.learning_rate=-1", "train.learning_rate must be above 0, got -1.0"),
    ("eval.max_tokens=0", "eval.max_tokens must be at least 1, got 0"),
    ("generator.shard_size=0", "generator.shard_size must be at least 1, got 0"),
    ("data.n_samples=-5", "data.n_samples must be at least 1, got -5"),
    # not "eval.temperature=0 decodes greedily" (the greedy check's message) for a temperature below 0
    ("eval.temperature=-1", "eval.temperature must be at least 0, got -1.0"),
    ("generator.top_p=0", "generator.top_p must be between 0 and 1 (not 0 itself), got 0.0"),
    ("train.lora.dropout=1.5", "train.lora.dropout must be between 0 and 1, got 1.5"),
    ("eval.grader.engine.concurrency=0", "eval.grader.engine.concurrency must be at least 1, got 0"),
    ("train.warmup_ratio=2", "train.warmup_ratio must be between 0 and 1, got 2.0"),
])
def test_a_number_out_of_its_range_is_one_line_naming_key_value_and_range(override, message):
    """Checked in-process as `dacli config` checks it (compose, then validate); the CLI's one line and
    exit code for the same check are tested above."""
    from deliberate_cli.compose import load
    from deliberate_cli.config import validate
    from deliberate_cli.errors import DacliError

    with pytest.raises(DacliError) as raised:
        validate(load([override, "eval.samples_per_scenario=4"]))
    assert str(raised.value) == message
