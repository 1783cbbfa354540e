"""What an eval runner is: one module (am, prompted, forced_choice, grader_check) that ends with
`RUNNER = Runner(...)`, plus its YAML under conf/eval/ naming it. evals/__init__.py runs every runner
the same way; adding a runner is a module, a line in its registry and a YAML file."""
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

Samples = List[Dict[str, Any]]


def batch_share(t0: float, t1: float, n: int) -> Dict[str, Any]:
    """A sample's time, for its row: the engine generates a whole batch at once, so `seconds` is the
    sample's share of its batch's wall time (t1 - t0 over its n samples), and `started_at` and
    `completed_at` (ISO, UTC) are the batch's own start and end."""
    def iso(t: float) -> str:
        return datetime.fromtimestamp(t, timezone.utc).isoformat()

    return {"seconds": round((t1 - t0) / max(n, 1), 4), "started_at": iso(t0), "completed_at": iso(t1)}


def _no_blocks(cfg, samples: Samples) -> Dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Runner:
    # What its samples depend on beyond the eval's config: hashes of the scenarios or prompt file it
    # renders and of the code that decides its verdicts (part of the eval's cache key).
    content: Callable[[Any], Dict[str, str]]
    # (samples, info) of a model, made in a work dir where it may leave shards a killed run resumes
    # from: run(cfg, work, model_path, model_cfg, label). Every sample carries a verdict, its reason,
    # the layer that decided, a condition and the policy ids it is about.
    run: Optional[Callable[..., Tuple[Samples, Dict[str, Any]]]] = None
    # Its own blocks in scores.json beside the shared rates (AM: the deterministic layer's own rate).
    score: Callable[[Any, Samples], Dict[str, Any]] = _no_blocks
    # A runner that evaluates no model (the grader check) builds its whole result itself: check(cfg, work).
    check: Optional[Callable[[Any, Path], Dict[str, Any]]] = None
    # What it adds to the end-of-command summary, from its finished eval dir: summary(eval_dir, console).
    summary: Optional[Callable[[Path, Any], None]] = None
    # Its own settings: the section eval.<section> of the config (config.py's schema of it), which is in
    # its evals' keys; the other runners' sections are not.
    section: Optional[str] = None
    # The texts it asks about, one per item, rendered without a model: what `dacli plan` counts samples
    # and prompt tokens from (each item is asked eval.samples_per_scenario times when a model is evaluated).
    items: Callable[[Any], List[str]] = lambda cfg: []

    @property
    def evaluates_model(self) -> bool:
        return self.check is None
