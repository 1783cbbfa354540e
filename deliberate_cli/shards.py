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

A shard is whole when written, but a disk, a copy or an editor can damage it afterwards; so each
shard's rows and sha256 are recorded beside it (`.<shard>.check`) and checked before a resume trusts
it. A shard that no longer matches is discarded with one line naming it, and with it every later
shard of its steps: a step's shards are a prefix that later ones may build on (the MSM idea rounds
avoid the ideas before them, the prompt pool drops near-duplicates of earlier prompts), so the step
goes on from the first damaged range. A shard written before shards carried a record is trusted when
it reads whole, and its record is written then.
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
        self._trusted: Dict[Path, Tuple[int, int]] = {}  # shards checked (or written) here: their (size, mtime)

    def path(self, step: str, start: int, stop: int) -> Path:
        return self.dir / f"{step}-{start:08d}-{stop:08d}.{self.fmt}"

    def write(self, path: Path, rows: Rows) -> None:
        """The shard, then its record: a kill between the two leaves a whole shard without one, which is
        checked as an old shard is."""
        (rundir.write_parquet if self.fmt == "parquet" else rundir.write_jsonl)(path, rows)
        rundir.write_json(_record_path(path), rundir.file_record(path, rows=len(rows)))
        self._trust(path)

    def load(self, path: Path) -> Rows:
        return rundir.read_parquet(path) if self.fmt == "parquet" else rundir.read_jsonl(path)

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
                self._drop(files[step])
            rundir.write_json(path, stamp)

    def ranges(self, *steps: str) -> Dict[Tuple[int, int], Dict[str, Path]]:
        """(start, stop) -> {step: path} for the shards of these steps present and whole, in order."""
        found: Dict[Tuple[int, int], Dict[str, Path]] = {}
        for path in self.dir.glob(f"*.{self.fmt}"):
            m = _NAME.match(path.name)
            if m and m.group(1) in steps:
                found.setdefault((int(m.group(2)), int(m.group(3))), {})[m.group(1)] = path
        return self._checked(dict(sorted(found.items())), steps)

    def _checked(self, found: Dict[Tuple[int, int], Dict[str, Path]], steps: Tuple[str, ...]
                 ) -> Dict[Tuple[int, int], Dict[str, Path]]:
        """`found` without its damaged shards, each discarded with one line. Where no twin of another
        step holds a damaged shard's range, every later shard goes too, and the steps go on from there."""
        for at, files in found.items():
            damaged = [(path, problem) for path in files.values() for problem in [self._problem(path)] if problem]
            if not damaged:
                continue
            for path, _ in damaged:
                self._drop(path)
            whole = {step: path for step, path in files.items() if path.exists()}
            if whole:
                found[at] = whole
                for path, problem in damaged:
                    _say(f"discarded {path}: {problem}; {next(iter(whole.values())).name} holds its items")
                continue
            later = [path for (start, _), fs in found.items() if start > at[0] for path in fs.values()]
            for path in later:
                self._drop(path)
            for i, (path, problem) in enumerate(damaged, 1):
                also = f" and the {len(later)} later shard(s) of {'/'.join(steps)}" if later and i == len(damaged) else ""
                _say(f"discarded {path}: {problem}; it{also} will be made again")
            return {r: fs for r, fs in found.items() if r[0] < at[0]}
        return found

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
                self._drop(files[source])

    def _problem(self, path: Path) -> Optional[str]:
        """What is wrong with a shard against its record ("1 of 2 rows"), or None when it matches."""
        st = path.stat()
        if self._trusted.get(path) == (st.st_size, st.st_mtime_ns):
            return None
        try:
            record = json.loads(_record_path(path).read_text())
        except (FileNotFoundError, UnicodeDecodeError, json.JSONDecodeError):
            record = None
        if isinstance(record, dict):
            problem = rundir.file_mismatch(path, record)
            if problem:
                return problem
        else:  # written before shards carried a record (or its record was lost): whole if it reads whole
            try:
                rows = len(self.load(path))
            except DacliError:
                return "not whole, and no record of it to compare with"
            rundir.write_json(_record_path(path), rundir.file_record(path, rows=rows))
        self._trust(path)
        return None

    def _trust(self, path: Path) -> None:
        st = path.stat()
        self._trusted[path] = (st.st_size, st.st_mtime_ns)

    def _drop(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        _record_path(path).unlink(missing_ok=True)
        self._trusted.pop(path, None)


def _record_path(shard: Path) -> Path:
    """Where a shard's record (rows, bytes, sha256) is kept: hidden beside it, so that `<step>-*` globs
    and listings show the shards alone."""
    return shard.with_name(f".{shard.name}.check")


def _say(line: str) -> None:
    from .progress import console

    console().print(line, highlight=False, markup=False, soft_wrap=True)
