"""The launcher's structured config, stored as `hydra/launcher=dacli_ray`; conf/hydra/launcher/ray.yaml
builds on it and fills num_gpus from the job's `resources.gpus`."""
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class RayLauncherConf:
    _target_: str = "hydra_plugins.dacli_ray_launcher.ray_launcher.RayLauncher"
    # null: the Ray instance RAY_ADDRESS or this machine's last `ray start` names, else a new local one;
    # "auto": an existing cluster only; "HOST:6379": that cluster's head.
    address: Optional[str] = None
    # ray.init's resource declarations, for a local instance only (null: what Ray detects).
    init: Dict[str, Any] = field(default_factory=lambda: {"num_gpus": None, "num_cpus": None})
    # What each job's Ray task asks for; read per job, so `${...}` resolves against that job's config.
    num_gpus: float = 0
    num_cpus: float = 1
    # More options for the task (ray.remote's: memory, resources, accelerator_type, runtime_env, ...).
    options: Dict[str, Any] = field(default_factory=dict)
    # Refuse a job that no node of the cluster has enough GPUs for (else it would wait forever); turn
    # off on an autoscaling cluster whose GPU nodes start on demand.
    check_gpus: bool = True


ConfigStore.instance().store(group="hydra/launcher", name="dacli_ray", node=RayLauncherConf,
                             provider="dacli_ray_launcher")
