"""Each sweep job as one Ray task asking for the job's GPUs (`num_gpus`): Ray places it on a node with
that many free GPUs and sets CUDA_VISIBLE_DEVICES to the ones it reserved, so jobs run side by side on
disjoint devices and wait for each other only when the GPUs run out. The task runs Hydra's `run_job`
as any launcher's worker does; dacli's task then starts the job's stages as child processes, which
inherit the job's CUDA_VISIBLE_DEVICES. Before the stages start, the job's run dir gets resources.json:
the GPUs Ray gave it (`ray.get_gpu_ids()`, CUDA_VISIBLE_DEVICES), the node, and when it started."""
import logging
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.errors import CompactHydraException
from omegaconf import OmegaConf, open_dict

log = logging.getLogger(__name__)

INSTALL = "pip install -c constraints/cpu.txt -e '.[ray]' (or pip install ray)"
# deliberate_cli.compose.FAILURES_ENV: the file a failed sweep job appends its line to. It lives on the
# driver's machine, so a job writes to a file of its own and the driver appends what it wrote.
FAILURES_ENV = "DACLI_SWEEP_FAILURES"
LOG_FLUSH_S = 1.0


class LauncherError(CompactHydraException):
    """Printed by Hydra as its message alone, without a traceback."""


def missing_ray() -> bool:
    """Without importing it (slow, and RAY_DEDUP_LOGS must be set before)."""
    import importlib.util

    try:
        return importlib.util.find_spec("ray") is None
    except ValueError:  # sys.modules["ray"] is None: imports of it are blocked
        return True


def _number(value: Any) -> float:
    value = float(value or 0)
    return int(value) if value.is_integer() else value


def _most_gpus_on_a_node() -> float:
    import ray

    return max((n["Resources"].get("GPU", 0) for n in ray.nodes() if n.get("Alive")), default=0)


def launch(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
    if missing_ray():
        raise LauncherError(f"hydra/launcher=ray needs Ray, which is not installed: {INSTALL}")
    # Jobs print the same progress lines; Ray would fold them into one "[repeated 2x across cluster]".
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    import ray

    setup_globals()
    assert launcher.config is not None and launcher.hydra_context is not None and launcher.task_function is not None
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=launcher.address, **launcher.init)
    driver = {"cwd": os.getcwd(), "env": {k: v for k, v in os.environ.items() if k.startswith("DACLI_")},
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    # max_calls=1: a fresh worker process per job (no Hydra singletons, logging or GPU state left over
    # from the job before). max_retries=0: a job whose worker dies is a failed job, not run again.
    remote = ray.remote(max_calls=1)(sweep_job)
    refs: List[Any] = []
    try:
        most = _most_gpus_on_a_node() if launcher.check_gpus else None
        log.info(f"Ray launcher is launching {len(job_overrides)} jobs on {ray.cluster_resources().get('GPU', 0):g} "
                 f"GPUs, sweep output dir: {sweep_dir}")
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            sweep_config = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
                sweep_config.hydra.job.num = idx
            # Read per job: `${resources.gpus}` resolves against this job's config, not the sweep's base.
            gpus = _number(OmegaConf.select(sweep_config, "hydra.launcher.num_gpus"))
            cpus = _number(OmegaConf.select(sweep_config, "hydra.launcher.num_cpus"))
            if most is not None and gpus > most:
                raise LauncherError(
                    f"sweep job #{idx} asks Ray for {gpus} GPUs (hydra.launcher.num_gpus, from resources.gpus) but "
                    f"no node of the Ray cluster has more than {most:g}: declare a local instance's GPUs with "
                    f"hydra.launcher.init.num_gpus=N, run the job without GPUs with hydra.launcher.num_gpus=0, or "
                    f"on an autoscaling cluster set hydra.launcher.check_gpus=false")
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))} ({gpus} GPUs, {cpus} CPUs)")
            options = {"num_gpus": gpus, "num_cpus": cpus, "max_retries": 0, **launcher.options}
            refs.append(remote.options(**options).remote(launcher.hydra_context, sweep_config, launcher.task_function,
                                                         Singleton.get_state(), driver))
        results = []
        for ref in refs:
            ret, failures = ray.get(ref)
            if failures and os.environ.get(FAILURES_ENV):
                with open(os.environ[FAILURES_ENV], "a") as f:
                    f.write(failures)
            results.append(ret)
        return results
    except BaseException:
        for ref in refs:  # a Ctrl-C or an error here must not leave jobs running on the cluster
            try:
                ray.cancel(ref, force=True)
            except Exception:
                pass
        raise
    finally:
        if started_here:
            time.sleep(LOG_FLUSH_S)  # Ray forwards the workers' output to this terminal every few 100 ms
            ray.shutdown()


def sweep_job(hydra_context, sweep_config, task_function, singleton_state: Dict[str, Any],
             driver: Dict[str, Any]) -> Tuple[JobReturn, str]:
    """In the Ray worker: the job's process, which sees only the GPUs Ray reserved for it."""
    import ray

    from deliberate_cli.compose import register_resolvers
    from deliberate_cli.rundir import write_json

    register_resolvers()  # dacli's resolvers, which the job's config uses
    if os.path.isdir(driver["cwd"]):  # relative run dirs and run.store mean the same as on the driver
        os.chdir(driver["cwd"])
    os.environ.update(driver["env"])
    # Ray sets OMP_NUM_THREADS to the task's num_cpus (1); the stages should use the threads they
    # would use without Ray.
    if driver["omp_num_threads"] is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = driver["omp_num_threads"]
    failures = tempfile.NamedTemporaryFile("r", prefix="dacli-failures-", suffix=".txt")
    if driver["env"].get(FAILURES_ENV):
        os.environ[FAILURES_ENV] = failures.name

    def recorded(cfg):
        context = ray.get_runtime_context()
        record = {"launcher": "ray", "gpu_ids": [str(i) for i in ray.get_gpu_ids()],
                  "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                  "num_gpus": context.get_assigned_resources().get("GPU", 0), "node": socket.gethostname(),
                  "node_id": context.get_node_id(), "pid": os.getpid(), "started": time.time()}
        write_json(Path(HydraConfig.get().runtime.output_dir) / "resources.json", record)  # whole or absent
        return task_function(cfg)

    setup_globals()
    Singleton.set_state(singleton_state)
    HydraConfig.instance().set_config(sweep_config)
    with failures:
        ret = run_job(hydra_context=hydra_context, config=sweep_config, task_function=recorded,
                      job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
        return ret, failures.read()
