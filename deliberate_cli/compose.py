"""From CLI words to Hydra: find conf/ and recipes/, check overrides, then run through `@hydra.main`.

Hydra's compose API has no multirun, so each command rebuilds argv and calls an `@hydra.main`
function; `-m`, sweeps and launchers then behave exactly as in any Hydra app. Overrides are first
composed once here so that a user's typo comes back as one line instead of Hydra's report.
"""
import copy
import functools
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, List, Optional

from .config import conf_dir, recipes_dir
from .errors import DacliError

_PKG = Path(__file__).resolve().parent


def _max(*values) -> int:
    return max(int(v) for v in values)


def _product(*values) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


# Resolvers conf/ uses: resources.gpus is the most GPUs any stage takes (${dacli_max:...}), the
# SLURM launcher's CPUs are resources.gpus x resources.cpus_per_gpu (${dacli_mul:...}), and run and
# sweep-job names end in the overrides that make them differ (${dacli_variant:...}, naming.py); a
# recipe names a data file shipped with dacli by its path under deliberate_cli/assets/ (${dacli_asset:...}).
def _variant(*covered) -> str:
    from .naming import resolver

    return resolver(*covered)


def _asset(relative: str) -> str:
    """`${dacli_asset:probe/cheese_opaque.jsonl}`: a file shipped in deliberate_cli/assets/, as an absolute
    path, so that a recipe can name a bundled data file wherever dacli is installed and run from."""
    return str(_PKG / "assets" / relative)


RESOLVERS = {"dacli_max": _max, "dacli_mul": _product, "dacli_variant": _variant, "dacli_asset": _asset}


def register_resolvers() -> None:
    """Needed wherever a config is composed and resolved: in this process, and in a launcher's worker,
    which imports this module to run the task. The run dir's config.yaml is written resolved, so the
    stage processes do not need them."""
    from omegaconf import OmegaConf

    for name, fn in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register_resolvers()


def group_options(group: str) -> List[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


def msm_spec_config(cfg):
    """The spec config the MSM documents discuss: msm.spec (a spec under conf/spec/ by name, composed
    with its defaults, or a spec YAML file) or, when it is not set, the run's."""
    if not cfg.msm.spec:
        return cfg.spec
    from omegaconf import OmegaConf

    from .config import SpecConfig

    if cfg.msm.spec in group_options("spec"):
        return copy.deepcopy(_named_spec(cfg.msm.spec))
    path = Path(cfg.msm.spec).expanduser()
    if path.suffix not in (".yaml", ".yml") or not path.is_file():
        raise DacliError(f"msm.spec={cfg.msm.spec}: neither a spec in conf/spec ({', '.join(group_options('spec'))}) "
                         f"nor a spec YAML file")
    return OmegaConf.merge(OmegaConf.structured(SpecConfig), {"name": path.stem, "path": str(path)})


@functools.lru_cache(maxsize=None)
def _named_spec(name: str):
    """A spec under conf/spec/ composed with its defaults, once per process (dacli plan asks per job)."""
    return load([f"spec={name}"]).spec


def recipe_options() -> List[str]:
    return sorted(p.stem for p in recipes_dir().glob("*.yaml"))


def split_recipe(overrides: List[str]) -> tuple[Optional[str], List[str]]:
    """`recipe=NAME` picks the primary config (a whole experiment in recipes/); the rest are overrides."""
    recipe, rest = None, []
    for o in overrides:
        if o.startswith("recipe="):
            recipe = o.split("=", 1)[1]
        else:
            rest.append(o)
    if recipe is not None and recipe not in recipe_options():
        raise DacliError(f"unknown recipe '{recipe}'; valid: {', '.join(recipe_options())}")
    return recipe, rest


def _single_runs(overrides: List[str]) -> List[List[str]]:
    """One override list per sweep value (other sweeps at their first value): enough to check each value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    base = [o.input_line if not o.is_sweep_override() else f"{o.get_key_element()}={next(o.sweep_string_iterator())}"
            for o in parsed]
    runs = [base]
    for i, o in enumerate(parsed):
        if o.is_sweep_override():
            for value in list(o.sweep_string_iterator())[1:]:
                runs.append(base[:i] + [f"{o.get_key_element()}={value}"] + base[i + 1:])
    return runs


def load(overrides: List[str], recipe: Optional[str] = None, with_hydra: bool = False):
    """Compose one config as a run would see it; user mistakes raise DacliError with one line."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
    from hydra.types import RunMode

    from .config import register_schemas

    register_schemas()
    search_path = create_config_search_path(str(conf_dir()))
    search_path.append("command-line", f"file://{recipes_dir()}", anchor=SearchPathQuery(provider="main"))
    loader = ConfigLoaderImpl(config_search_path=search_path)
    try:
        cfg = loader.load_configuration(recipe or "config", overrides, run_mode=RunMode.RUN)
    except MissingConfigException as e:
        raise DacliError(_missing_message(e)) from None
    except (ConfigCompositionException, OverrideParseException) as e:
        raise DacliError(_composition_message(e)) from None
    if not with_hydra:
        from omegaconf import open_dict

        with open_dict(cfg):
            del cfg["hydra"]
    return cfg


def check(overrides: List[str], recipe: Optional[str]) -> None:
    try:
        runs = _single_runs(overrides)
    except Exception as e:  # the parser's own errors are multi-line and name no fix
        raise DacliError(f"cannot parse overrides {' '.join(overrides)}: {str(e).splitlines()[0]}") from None
    from .config import validate

    for run in runs:
        validate(load(run, recipe))


def _missing_message(e: Exception) -> str:
    text = str(e)
    if "Could not find '" in text:
        missing = text.split("Could not find '", 1)[1].split("'", 1)[0]
        group, _, option = missing.rpartition("/")
        if group:
            return f"unknown {group} '{option}'; valid: {', '.join(group_options(group))}"
    return text.splitlines()[0]


def _composition_message(e: Exception) -> str:
    first = str(e).splitlines()[0]
    cause = e.__cause__ or e.__context__
    if first.startswith("Could not override '"):
        key = first.split("'")[1]
        return f"unknown config key '{key}'; {_valid_keys(key)}"
    if cause is not None:
        detail = str(cause).splitlines()[0]
        return f"{first.rstrip('.')}: {detail}"
    return first


def _valid_keys(key: str) -> str:
    from omegaconf import DictConfig, OmegaConf

    parent, _, _ = key.rpartition(".")
    node = load([]) if not parent else OmegaConf.select(load([]), parent)
    if isinstance(node, DictConfig):
        return f"valid keys in {parent or 'the root'}: {', '.join(node.keys())}"
    return "see `dacli config` for the valid keys"


FAILURES_ENV = "DACLI_SWEEP_FAILURES"
# dacli's pid, for a sweep job to tell whether the process running it is a worker dacli started itself
# (joblib's): such a worker dies with dacli instead of finishing its job after dacli is killed.
DRIVER_ENV = "DACLI_DRIVER_PID"


def _sweep_values(key: str, overrides: List[str], recipe: Optional[str]) -> List[str]:
    """The values a multirun sweeps `key` over: from the command line, else from the recipe's sweeper."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for o in parser.parse_overrides(overrides):
        if o.get_key_element() == key:
            return list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
    params = (load(_single_runs(overrides)[0], recipe, with_hydra=True).hydra.sweeper.get("params") or {})
    if key in params:
        o = parser.parse_overrides([f"{key}={params[key]}"])[0]
        return list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
    return []


def _pool_for_sweep(overrides: List[str], recipe: Optional[str]) -> List[str]:
    """A sweep over data.n_samples on generated prompts writes the pool once, at its largest count, in
    the first job, instead of extending it job after job (one engine start instead of several)."""
    if any(o.split("=", 1)[0].lstrip("+") == "data.generated.pool" for o in overrides):
        return []
    if load(_single_runs(overrides)[0], recipe).data.source != "generated":
        return []
    counts = [int(v) for v in _sweep_values("data.n_samples", overrides, recipe)]
    return [f"data.generated.pool={max(counts)}"] if len(counts) > 1 else []


def _check_launcher(overrides: List[str], recipe: Optional[str]) -> None:
    """A launcher that cannot run here (SLURM without sbatch, Ray not installed): one line before the
    sweep starts, not Hydra's or submitit's traceback."""
    import shutil

    launcher = load(_single_runs(overrides)[0], recipe, with_hydra=True).hydra.launcher
    target = str(launcher.get("_target_", ""))
    if target.endswith("SlurmLauncher") and shutil.which("sbatch") is None:
        raise DacliError("hydra/launcher=slurm needs SLURM, and this machine has no `sbatch`: run on a SLURM "
                         "login node, or leave hydra/launcher out (one job after another) or use "
                         "hydra/launcher=local_parallel or hydra/launcher=ray here")
    if target.startswith("hydra_plugins.dacli_ray_launcher."):
        from hydra_plugins.dacli_ray_launcher._core import INSTALL, missing_ray

        if missing_ray():
            raise DacliError(f"hydra/launcher=ray needs Ray, which is not installed: {INSTALL}")


def launch(command: str, overrides: List[str], multirun: bool, task: Callable) -> None:
    """Run `task(cfg)` for one composed config, or for each point of a sweep with `multirun`."""
    import hydra

    from .config import register_schemas

    recipe, overrides = split_recipe(list(overrides))
    check(overrides, recipe)
    register_schemas()
    argv = [sys.argv[0]]
    if multirun:
        _check_launcher(overrides, recipe)
        argv.append("-m")
        overrides = overrides + _pool_for_sweep(overrides, recipe)
    if recipe:
        argv += ["--config-dir", str(recipes_dir()), "--config-name", recipe]
    argv += [f"command={command}", *overrides]

    @hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")
    def _main(cfg):
        if os.environ.get(DRIVER_ENV) == str(os.getppid()):
            from .processes import die_with_parent

            die_with_parent()
        return task(cfg)

    saved, sys.argv = sys.argv, argv
    # Sweep jobs that fail are recorded and skipped (pipeline.task); each also appends a line here, so
    # the sweep as a whole can end with a non-zero exit once every other job has run.
    with tempfile.NamedTemporaryFile("r", prefix="dacli-failures-", suffix=".txt") as failures:
        os.environ[FAILURES_ENV], os.environ[DRIVER_ENV] = failures.name, str(os.getpid())
        try:
            _main()
        finally:
            sys.argv = saved
            os.environ.pop(FAILURES_ENV, None)
            os.environ.pop(DRIVER_ENV, None)
        failed = [line for line in failures.read().splitlines() if line.strip()]
    if failed:
        raise DacliError(f"{len(failed)} sweep job(s) failed (the others ran; `dacli report` lists them): "
                         + "; ".join(failed))
