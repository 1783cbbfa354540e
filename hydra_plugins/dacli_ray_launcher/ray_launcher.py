"""The Launcher class Hydra instantiates for `hydra/launcher=ray` (work in `_core.py`)."""
from typing import Any, Optional, Sequence

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


class RayLauncher(Launcher):
    def __init__(self, address: Optional[str] = None, init: Any = None, num_gpus: float = 0, num_cpus: float = 1,
                 options: Any = None, check_gpus: bool = True) -> None:
        def plain(node):
            return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node or {})

        self.address = address
        self.init = {k: v for k, v in plain(init).items() if v is not None}
        self.options = plain(options)
        self.check_gpus = check_gpus
        self.config: Optional[DictConfig] = None
        self.task_function: Optional[TaskFunction] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.task_function = task_function
        self.hydra_context = hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from . import _core

        return _core.launch(self, job_overrides, initial_job_idx)
