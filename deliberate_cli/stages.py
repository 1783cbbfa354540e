"""The stages, as objects, and the stages each command runs: one registry, read by the pipeline.

A stage is its name (its log file, its summary, FAILED.json) and the function that runs it in its own
process (pipeline.py starts one process per stage: vLLM keeps its memory until its process ends)."""
from dataclasses import dataclass
from typing import Any, Callable, Dict, List

from . import evals, generate, train


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[Any], Dict[str, Any]]


GENERATE = Stage("generate", generate.run)
TRAIN = Stage("train", train.run)
EVAL = Stage("eval", evals.run)
BASELINE = Stage("baseline", evals.run_baseline)  # the untrained model's eval, in the store

STAGES: Dict[str, Stage] = {s.name: s for s in (GENERATE, TRAIN, EVAL, BASELINE)}
COMMANDS: Dict[str, List[Stage]] = {"generate": [GENERATE], "train": [TRAIN], "eval": [EVAL],
                                    "run": [GENERATE, TRAIN, EVAL, BASELINE]}
