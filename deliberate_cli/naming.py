"""Run and sweep-job directory names that never collide: `<model>-<method>-n<count>`, then every
override that changes what the run computes (a spec, a learning rate, a judge...), as given on the
command line or by a sweep. Overrides that do not change results (where things go, how fast they
run, which eval scores the run: an eval writes eval/<name>/ inside the run it scores) stay out, so
`dacli generate`, `dacli train` and `dacli eval am` with the run's overrides meet in one dir.
The report groups runs by the same overrides (report.py)."""
import hashlib
import re
from typing import Iterable, List, Sequence

from .config import is_runtime

# Keys (and key prefixes, ending in "." or "/") that never name a run beyond the runtime settings
# (config.RUNTIME_KEYS): the command, Hydra's launcher group, and the eval (an eval writes eval/<name>/
# inside the run it scores, and its own cache key holds its settings).
NOT_IN_NAME = ("command", "hydra/", "eval", "eval.")
MAX_LENGTH = 80


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _excluded(key: str, covered: Sequence[str]) -> bool:
    if key in covered or is_runtime(key):
        return True
    return any(key == k or (k.endswith((".", "/")) and key.startswith(k)) or key.startswith(k + ".")
               for k in NOT_IN_NAME)


def variant(overrides: Iterable[str], covered: Sequence[str] = ("model", "method", "data.n_samples")) -> List[str]:
    """The overrides (`key=value`) that name a run beyond what `covered` keys already say: config
    group choices first (spec=rules_only says most), then single keys, each sorted."""
    kept = [o.lstrip("+") for o in overrides if "=" in o and not _excluded(_key(o), covered)]
    return sorted(kept, key=lambda o: ("." in _key(o), o))


def suffix(items: List[str]) -> str:
    """`-key=value-key=value`, with characters a path should not hold replaced; a long one is cut and
    ends in a hash of the whole, so two variants never share a name."""
    if not items:
        return ""
    text = re.sub(r"[^A-Za-z0-9._=+,-]", "_", "-".join(items))
    if len(text) > MAX_LENGTH:
        text = text[:MAX_LENGTH - 9] + "~" + hashlib.sha256("-".join(items).encode()).hexdigest()[:8]
    return "-" + text


def resolver(*covered: str) -> str:
    """`${dacli_variant:model,method,data.n_samples}`: this job's name suffix (empty outside a Hydra job,
    e.g. when `dacli config` composes)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return ""
    return suffix(variant(HydraConfig.get().overrides.task, covered or ("model", "method", "data.n_samples")))
