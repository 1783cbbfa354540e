"""Every recipe, at every point of its sweep, composes into a run that can start: valid settings, known
stages, enough GPUs asked for, distinct run dirs; and msm_paper holds the paper's settings.

Composition only (no stage runs), so the GPU recipes are checked here on a CPU.
"""
import itertools
import re

import pytest

from conftest import REPO

# The projection layers of Qwen2, Qwen3 and Llama decoders (attention, then MLP): the names LoRA targets.
PROJECTIONS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
PAPER_COUNTS = [1250, 2500, 5000, 10000, 20000, 40000, 80000]
FIVE_METHODS = {"aft_nocot", "aft_cot", "msm_aft", "msm_aft_cot", "msm"}


def _recipes():
    from deliberate_cli.compose import recipe_options

    return recipe_options()


def _header_overrides(recipe: str):
    """The eval.grader.* overrides the recipe's header tells a user to pass (its Run: command)."""
    header = []
    for line in (REPO / "recipes" / f"{recipe}.yaml").read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    return sorted(set(re.findall(r"(eval\.grader\.[\w.]+=[^\s`\\]+)", "\n".join(header))))


def _sweep(recipe: str):
    """The recipe's sweep as {key: [values]} (hydra.sweeper.params, each value list as Hydra parses it)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from deliberate_cli.compose import load

    params = load([], recipe, with_hydra=True).hydra.sweeper.get("params") or {}
    parser = OverridesParser.create()
    out = {}
    for key, value in params.items():
        o = parser.parse_overrides([f"{key}={value}"])[0]
        out[key] = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
    return out


def _points(recipe: str):
    sweep = _sweep(recipe)
    return [[f"{k}={v}" for k, v in zip(sweep, values)] for values in itertools.product(*sweep.values())]


@pytest.fixture(scope="module")
def composed():
    """recipe -> [(point overrides, config with its hydra node, SLURM launcher chosen)] for every point,
    composed as `dacli plan` composes a sweep's jobs (Hydra composes each choice of config groups once;
    the point's values are applied to a copy as Hydra applies them): 17 s for the 90 points otherwise."""
    from deliberate_cli.plan import compose_job

    out = {}
    for recipe in _recipes():
        extra = ["hydra/launcher=slurm", *_header_overrides(recipe)]
        out[recipe] = [(point, compose_job([*point, *extra], recipe, with_hydra=True)) for point in _points(recipe)]
    return out


def test_the_recipes_and_their_sweeps_are_there(composed):
    assert {"quickstart", "msm_paper", "gpu_smoke"} <= set(composed)
    assert len(composed["msm_paper"]) == 2 * 5 * 7
    assert len(composed["gpu_smoke"]) == 5 * 2
    assert len(composed["quickstart"]) == 2 * 2


def test_every_point_validates_and_its_stages_are_known(composed):
    from deliberate_cli.config import validate
    from deliberate_cli.train import STAGES

    for recipe, points in composed.items():
        for point, cfg in points:
            validate(cfg)
            assert cfg.method.stages, (recipe, point)
            unknown = [s for s in cfg.method.stages if s not in STAGES]
            assert not unknown, (recipe, point, unknown)


def test_every_method_file_has_known_stages():
    from deliberate_cli.compose import group_options, load
    from deliberate_cli.train import STAGES

    methods = group_options("method")
    assert FIVE_METHODS <= set(methods)
    for method in methods:
        cfg = load([f"method={method}"])
        assert cfg.method.name == method
        assert cfg.method.stages and all(s in STAGES for s in cfg.method.stages), method
    assert list(load(["method=msm"]).method.stages) == ["midtrain"]


def _gpu_needs(cfg):
    return [cfg.generator.tensor_parallel_size, cfg.judge.tensor_parallel_size, cfg.eval.engine.tensor_parallel_size,
            cfg.eval.grader.engine.tensor_parallel_size, cfg.train.num_processes]


def test_resources_cover_every_stage_and_slurm_asks_for_them(composed):
    for recipe, points in composed.items():
        for point, cfg in points:
            r = cfg.resources
            assert r.gpus == max(_gpu_needs(cfg)), (recipe, point, r.gpus, _gpu_needs(cfg))
            launcher = cfg.hydra.launcher
            assert launcher._target_.endswith("SlurmLauncher")
            assert launcher.gpus_per_node == r.gpus
            assert launcher.cpus_per_task == r.gpus * r.cpus_per_gpu
            assert (launcher.mem_gb, launcher.timeout_min) == (r.mem_gb, r.time_min)


def test_the_slurm_launcher_hydra_builds_gets_the_resolved_resources():
    """As Hydra instantiates it at launch (the plugin resolves its parameters then)."""
    from hydra.core.plugins import Plugins

    from deliberate_cli.compose import load

    for overrides, gpus in (([], 1), (["eval.engine.tensor_parallel_size=2", "train.num_processes=3"], 3)):
        cfg = load(["hydra/launcher=slurm", "resources.cpus_per_gpu=5", *overrides], with_hydra=True)
        params = Plugins.instance()._instantiate(cfg.hydra.launcher).params
        assert (params["gpus_per_node"], params["cpus_per_task"], params["mem_gb"], params["timeout_min"]) == \
            (gpus, 5 * gpus, 200, 720)
    cfg = load(["hydra/launcher=slurm", *_header_overrides("msm_paper")], "msm_paper", with_hydra=True)
    params = Plugins.instance()._instantiate(cfg.hydra.launcher).params
    assert (params["gpus_per_node"], params["cpus_per_task"], params["mem_gb"]) == (4, 32, 400)


_TASK = """
import json, os
from pathlib import Path

def task(cfg):
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    out = Path(HydraConfig.get().runtime.output_dir)
    OmegaConf.to_yaml(cfg, resolve=True)  # as pipeline.task writes the run's config.yaml
    (out / "resolved.json").write_text(json.dumps({"pid": os.getpid(), "gpus": cfg.resources.gpus}))
"""


def test_parallel_sweep_jobs_resolve_resources_in_their_own_processes(tmp_path):
    """A joblib (or SLURM) worker composes its job's config again in its own process, where the
    resolvers conf/config.yaml uses must be registered too."""
    import json
    import os
    import subprocess
    import sys

    (tmp_path / "resolved_task.py").write_text(_TASK)
    driver = ("import os, sys; sys.argv = ['dacli']; print(os.getpid()); from resolved_task import task; "
              "from deliberate_cli.compose import launch; "
              f"launch('config', ['run.root={tmp_path / 'runs'}', 'train.num_processes=1,3', "
              "'hydra.sweep.subdir=np${train.num_processes}', 'hydra/launcher=local_parallel'], True, task)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]))
    proc = subprocess.run([sys.executable, "-c", driver], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    main_pid = int(proc.stdout.split()[0])
    got = [json.loads(p.read_text()) for p in sorted((tmp_path / "runs").rglob("resolved.json"))]
    assert sorted(r["gpus"] for r in got) == [1, 3]
    assert all(r["pid"] != main_pid for r in got)


def test_accelerate_configs_and_lora_targets_exist(composed):
    accelerate = REPO / "conf" / "accelerate"
    for recipe, points in composed.items():
        for point, cfg in points:
            t = cfg.train
            if t.accelerate_config is not None:
                assert (accelerate / f"{t.accelerate_config}.yaml").is_file(), (recipe, t.accelerate_config)
                assert t.num_processes > 1, (recipe, "an accelerate config with one process")
            targets = t.lora.target_modules
            if isinstance(targets, str):
                assert targets == "all-linear", (recipe, targets)
            else:
                assert list(targets) and set(targets) <= PROJECTIONS, (recipe, list(targets))


def test_sweep_dirs_are_distinct_per_point(composed):
    import os

    for recipe, points in composed.items():
        dirs = [os.path.join(str(cfg.hydra.sweep.dir), str(cfg.hydra.sweep.subdir)) for _, cfg in points]
        assert len(set(dirs)) == len(dirs), (recipe, sorted(dirs))
        names = [str(cfg.run.name) for _, cfg in points]
        assert len(set(names)) == len(names), (recipe, sorted(names))


def test_generated_prompt_pools_can_cover_the_largest_count(composed):
    for recipe, points in composed.items():
        largest = max(cfg.data.n_samples for _, cfg in points)
        for point, cfg in points:
            g = cfg.data.generated
            if cfg.data.source == "generated":
                assert g.max_requests * g.prompts_per_request >= 1.5 * max(largest, g.pool), (recipe, point)


def test_msm_paper_is_the_papers_setup(composed):
    sweep = _sweep("msm_paper")
    assert [int(n) for n in sweep["data.n_samples"]] == PAPER_COUNTS
    assert set(sweep["method"]) == FIVE_METHODS and len(sweep["method"]) == 5
    assert sorted(sweep["model"]) == ["qwen2_5_32b", "qwen3_32b"]
    points = composed["msm_paper"]
    assert {cfg.model.name_or_path for _, cfg in points} == {"Qwen/Qwen2.5-32B-Instruct", "Qwen/Qwen3-32B"}
    for point, cfg in points:
        t = cfg.train
        assert (t.learning_rate, t.midtrain_learning_rate, t.epochs, t.midtrain_epochs) == (1e-4, 1e-4, 1, 1)
        assert (t.warmup_ratio, t.weight_decay, t.max_length) == (0.05, 0.01, 8192)
        assert (t.lora.enabled, t.lora.r, t.lora.alpha) == (True, 64, 128)
        assert set(t.lora.target_modules) == PROJECTIONS
        assert (t.num_processes, t.accelerate_config, t.bf16) == (4, "fsdp", True)
        assert cfg.resources.gpus == 4
        assert 35e6 <= cfg.msm.tokens <= 45e6  # "about 40M tokens", fixed across the sweep
        assert cfg.data.source == "generated" and cfg.data.generated.pool >= max(PAPER_COUNTS)
        # the paper's kind of specs: agentic rules for AFT, the philosophy spec for the MSM corpus
        assert (cfg.spec.name, cfg.msm.spec) == ("core_safety", "philosophy")
        assert [p.id for p in cfg.spec.policies] == ["SP1", "SP2", "SP3", "GP1", "GP2"]
        # about 10,000 instruction-tuning conversations in every AFT run, from a public chat set
        assert cfg.data.mix.source.startswith("hf:") and cfg.data.mix.count == 10_000
        e = cfg.eval
        assert (e.name, e.samples_per_scenario, e.temperature, e.grader.enabled) == ("am_msm_paper", 300, 0.7, True)
        assert cfg.model.name in str(cfg.hydra.sweep.subdir)
    # 27 conditions, as the eval renders them (murder and leaking upstream, our exfiltration; 9 goals each)
    from deliberate_cli.evals import am

    conditions = {scenario["condition"] for _, scenario in am.load(points[0][1])}
    assert len(conditions) == 27


def test_msm_paper_needs_the_grader_its_header_names():
    from deliberate_cli.compose import load
    from deliberate_cli.config import validate
    from deliberate_cli.errors import DacliError

    overrides = _header_overrides("msm_paper")
    assert {o.split("=")[0] for o in overrides} == {"eval.grader.model"}
    with pytest.raises(DacliError, match="names no grader model"):
        validate(load([], "msm_paper"))
    validate(load(overrides, "msm_paper"))


def test_gpu_smoke_is_one_gpu_every_method_with_lora_and_no_grader(composed):
    points = composed["gpu_smoke"]
    assert {cfg.method.name for _, cfg in points} == FIVE_METHODS
    assert sorted({cfg.data.n_samples for _, cfg in points}) == [32, 64]
    for point, cfg in points:
        assert cfg.model.name == "qwen2_5_0_5b" and cfg.resources.gpus == 1
        assert cfg.train.lora.enabled and cfg.train.bf16 and cfg.train.num_processes == 1
        assert cfg.data.source == "generated" and cfg.msm.tokens <= 200_000
        assert {cfg.generator.backend, cfg.judge.backend, cfg.eval.engine.backend} == {"vllm"}
        assert cfg.eval.name == "am" and not cfg.eval.grader.enabled and cfg.eval.samples_per_scenario <= 4


@pytest.mark.slow  # 6-10 s of composing 70 jobs; the plan's counts are checked against a real sweep in
# test_pipeline.py's sweep test
def test_the_msm_paper_plan_counts_the_papers_trainings_and_eval_samples(tmp_path):
    """70 jobs share their data, the midtrained checkpoints, the msm jobs' eval and the baselines: per
    model one midtraining and 28 AFT trainings, 28 AFT evals, one of msm alone and the baseline, each of
    27 conditions x 300 samples. Nothing is written while planning."""
    from deliberate_cli.plan import make, totals

    plan = make("run", ["recipe=msm_paper", "eval.grader.model=anthropic/claude-sonnet-4-6", f"run.root={tmp_path}"],
                multirun=True, given={"anthropic/claude-sonnet-4-6": {"input": 3.0, "output": 15.0}})
    t = totals(plan)
    assert (t["jobs"], t["trainings"], t["evals"], t["eval_samples"]) == (70, 58, 60, 486_000)
    assert t["datasets"] == {"prompts": 2, "aft": 2, "msm": 2} and not plan.failing
    grader = t["hosted"]["anthropic/claude-sonnet-4-6"]
    assert grader["requests"] == 486_000 and grader["output_tokens"] == 486_000 * 1024
    assert t["hosted_cost"] == (grader["input_tokens"] * 3.0 + grader["output_tokens"] * 15.0) / 1e6
    assert t["unpriced"] == ["anthropic/claude-opus-4-6"]  # said, not counted as free
    # the hosted generator writes and judges the data: 80,000 examples per model at the assumed keep rate
    # of one half are 160,000 prompts x 4 samples, each judged once; no GPU-hours for generation
    writer = t["hosted"]["anthropic/claude-opus-4-6"]
    assert t["aft_prompts"] == 2 * 160_000 and writer["requests"] > 2 * 2 * 160_000 * 4
    assert t["gpu_hours"]["generate"] == 0 and t["gpu_hours"]["train"] > 0 and t["gpu_hours"]["eval"] > 0
    assert list(tmp_path.iterdir()) == []
