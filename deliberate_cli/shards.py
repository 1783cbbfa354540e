"""Shard bookkeeping for every stage that works in pieces, in one place: generate's prompt requests,
samples, judgements, ideas and documents; an eval's generated and graded samples and its monitor's
answers.

A step's work is a sequence of items (prompts to sample, requests to send, samples to grade), done
in ranges. Each range is written as `<step>-<start>-<stop>.<format>` the moment it is done (through
a temp name and a rename, so a shard is whole or absent); a killed run finds the ranges it holds
and goes on from the first missing one, so no item is lost or done twice. A step that only
transforms another (judging the sampled shards, grading the generated ones) turns each of the
other's shards into one of its own. Shards are parquet, or JSON lines for records whose fields vary
from row to row (an eval's samples).
"""
import json
import re
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

from . import rundir
from .errors import DacliError

_NAME = re.compile(r"([a-z_]+)-(\d{8})-(\d{8})\.(parquet|jsonl)$")

Rows = List[Dict]


class Shards:
    def __init__(self, directory: Path, fmt: str = "parquet"):
        self.dir, self.fmt = Path(directory), fmt
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, step: str, start: int, stop: int) -> Path:
        return self.dir / f"{step}-{start:08d}-{stop:08d}.{self.fmt}"

    def write(self, path: Path, rows: Rows) -> None:
        (rundir.write_parquet if self.fmt == "parquet" else rundir.write_jsonl)(path, rows)

    def load(self, path: Path) -> Rows:
        if self.fmt == "parquet":
            return rundir.read_parquet(path)
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def stamped(self, step: str, stamp: Dict, name: str) -> None:
        """Keep a step's shards only if they were made with `stamp` (recorded in the file `name`): the
        graded shards of another grader, or another monitor's answers, are done again."""
        path = self.dir / name
        try:
            same = json.loads(path.read_text()) == json.loads(json.dumps(stamp, default=str))
        except (FileNotFoundError, json.JSONDecodeError):
            same = False
        if not same:
            for files in self.ranges(step).values():
                files[step].unlink()
            rundir.write_json(path, stamp)

    def ranges(self, *steps: str) -> Dict[Tuple[int, int], Dict[str, Path]]:
        """(start, stop) -> {step: path} for the shards of these steps present, in order."""
        found: Dict[Tuple[int, int], Dict[str, Path]] = {}
        for path in self.dir.glob(f"*.{self.fmt}"):
            m = _NAME.match(path.name)
            if m and m.group(1) in steps:
                found.setdefault((int(m.group(2)), int(m.group(3))), {})[m.group(1)] = path
        return dict(sorted(found.items()))

    def covered(self, *steps: str) -> int:
        """How many items, from the first, the shards of these steps cover without a gap."""
        end = 0
        for start, stop in self.ranges(*steps):
            if start != end:
                raise DacliError(f"{self.dir} has a gap in its {'/'.join(steps)} shards at item {end}; "
                                 f"delete that store entry to regenerate it")
            end = stop
        return end

    def read(self, *steps: str) -> Rows:
        """Every row of these steps' shards, in item order."""
        rows: Rows = []
        for files in self.ranges(*steps).values():
            for step in steps:
                if step in files:
                    rows += self.load(files[step])
                    break
        return rows

    def fill(self, step: str, size: Union[int, Callable[[int], int]], work: Callable[[int, int], Rows], *,
             total: Optional[int] = None, done: Optional[Callable[[Rows], bool]] = None,
             limit: Optional[int] = None, also: Tuple[str, ...] = ()) -> Rows:
        """Run `work(start, stop)` on each range of `size` items (or `size(start)` items) from the first one
        not covered, writing each as a shard, until `total` items are covered, or `done(rows so far)`
        holds, or the items covered reach `limit`. Shards of the `also` steps count as covered (a sampled shard that was judged since).
        Returns the step's rows, including those of earlier runs."""
        rows = self.read(step, *also)
        start = self.covered(step, *also)
        while (total is None or start < total) and (limit is None or start < limit) and not (done and done(rows)):
            step_size = size(start) if callable(size) else size
            stop = start + step_size if total is None else min(start + step_size, total)
            stop = stop if limit is None else min(stop, limit)
            got = work(start, stop)
            self.write(self.path(step, start, stop), got)
            rows += got
            start = stop
        return rows

    def transform(self, source: str, step: str, work: Callable[[Rows, int], Rows], keep_source: bool = False) -> None:
        """Turn every `source` shard without a `step` twin into one (`work(rows, start)`), then drop the
        source shard (a source shard left beside its twin by a kill too), unless `keep_source`: an eval
        keeps its generated samples, so that another grader grades them again without regenerating."""
        for (start, stop), files in self.ranges(source, step).items():
            if step not in files:
                self.write(self.path(step, start, stop), work(self.load(files[source]), start))
            if source in files and not keep_source:
                files[source].unlink()
