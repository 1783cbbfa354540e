"""One rank under `accelerate launch` (launch.py starts `python -m deliberate_cli.train.rank JOB`):
read the job the stage process wrote, fit, and from rank 0 hand the counts back in a file."""
import json
import sys
from pathlib import Path


def main(job_file: str) -> None:
    from ..processes import die_with_parent, group_dies_with_me

    # Before CUDA or a thread starts: the rank dies with the launcher, and, as torch's elastic launcher
    # starts it in a session of its own, whatever it starts (a judge engine) dies with it.
    die_with_parent()
    group_dies_with_me()
    from omegaconf import OmegaConf

    from ..config import Config
    from ..rundir import write_json
    from .fit import COUNTS, is_main, train_into

    job = json.loads(Path(job_file).read_text())
    cfg = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(job["config"]))
    tmp = Path(job["dir"])
    with open(job["rows"]) as f:
        rows = [json.loads(line) for line in f]
    counts = train_into(cfg, job["stage"], job["model_path"], rows, tmp, tuple(job["sizes"]), job["label"])
    if is_main():
        write_json(tmp / COUNTS, counts)


if __name__ == "__main__":
    main(sys.argv[1])
