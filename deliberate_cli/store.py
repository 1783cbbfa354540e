"""A stage's output as one object: `Entry(path, stage, key, inputs).materialise(build)`.

Every stage output goes through it: the prompt pool, the AFT data, the MSM corpus, each train stage,
each eval and the baseline. The entry owns the routine that would otherwise be written by hand in
every stage:

1. the lock (a `.lock` file beside the entry; a process that has to wait says who holds it);
2. the freshness check: the manifest's hash of the declared key and its upstream inputs match
   (an extendable entry must also cover what is asked, `covers(manifest)`);
3. the partial dir `<path>.partial/` and its resume stamp: a killed build's partial dir is kept when
   its stamp matches (what the partial work depends on, by default the key and inputs), so the stage
   resumes from its shards, and cleared otherwise;
4. the manifest, written last, then the atomic rename of the partial dir into place;
5. the link from the run dir into the store (`<run>/<name>` -> the entry).

An extendable entry (the prompt pool, the AFT data: a larger count adds to them and a smaller one
reads a prefix) is built in place instead: its files are each replaced atomically and its manifest,
written last, says how much of it is whole.

The manifest records the rows, size and sha256 of the entry's data files (parquet, JSON lines, JSON;
not model weights), and they are checked before the entry is trusted. An entry whose manifest is not
valid JSON, or whose files no longer match it, is rebuilt from its shards when it has them (an
extendable entry keeps its shards in place, an eval keeps its own), with one line naming the file;
otherwise it is refused with that line. Manifests written before they carried the record are
trusted as they are.

What a key holds is each stage's declaration, next to the code that uses those settings, always
through `config.declared`, which strips the runtime settings (config.RUNTIME_KEYS).
"""
import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

from . import rundir, usage
from .errors import DacliError

Manifest = Dict[str, Any]
RESUME = "RESUME.json"


@dataclass
class Built:
    """What `materialise` hands back: the entry's dir, its manifest, and whether it was there already."""

    dir: Path
    manifest: Manifest
    cached: bool


@dataclass
class Entry:
    path: Path
    stage: str
    # The declared inputs: config fields (runtime settings stripped), content hashes, code versions.
    key: Dict[str, Any]
    # Upstream entries this one was made from ({name: rundir.input_ref(path)}).
    inputs: Dict[str, Dict[str, str]] = field(default_factory=dict)
    # What partial work depends on; None: the key and the inputs.
    resume: Optional[Dict[str, Any]] = None
    # Extendable entries: whether what is there covers what is asked (built in place when not).
    covers: Optional[Callable[[Manifest], bool]] = None
    # Keep the shards once the entry is in place, and hand them to a rebuild with the same resume stamp:
    # an eval whose grader or monitor changes regrades its generated samples instead of generating them
    # again (they are hard links, so the new entry costs no second copy of them).
    keep_shards: bool = False

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    @property
    def key_hash(self) -> str:
        return rundir.config_hash(self.key)

    def found(self) -> Optional[Manifest]:
        """The manifest of what is there now (whole or not, fresh or not)."""
        return rundir.read_manifest(self.path)

    def fresh(self) -> Optional[Manifest]:
        m = self.found()
        if not m or m.get("config_hash") != self.key_hash or m.get("inputs", {}) != _plain(self.inputs):
            return None
        if self.covers is not None and not self.covers(m):
            return None
        return m

    def materialise(self, build: Callable[[Path], Dict[str, Any]], link: Optional[tuple] = None) -> Built:
        """Under the entry's lock: the fresh entry as it is, or `build(work_dir)` run to make it. `build`
        returns the manifest's `counts` and any other manifest fields ({"counts": {...}, "generator": ...}).
        `link=(cfg, "data/aft")` links the run dir to the entry either way."""
        with locked(self.path):
            self._check()
            m = self.fresh()
            if m is not None:
                if not self.keep_shards:
                    _tidy(self.path)  # a kill after the rename can leave the resume stamp and shards behind
                built = Built(self.path, m, cached=True)
            else:
                built = Built(self.path, self._build(build), cached=False)
        if link is not None:
            cfg, name = link
            link_into(Path(cfg.run.dir), name, self.path)
        return built

    def _check(self) -> None:
        """A damaged entry (its manifest not valid JSON, or a file that no longer matches it) is made
        unfinished, so that the build goes on from its shards, or refused when it has none."""
        problem = self._damage()
        if problem is None:
            return
        resumable = self.covers is not None or (
            self.keep_shards and (self.path / RESUME).is_file() and (self.path / "shards").is_dir())
        if not resumable:
            raise DacliError(f"{problem}; delete {self.path} to build it again")
        from .progress import console

        console().print(f"{problem}: rebuilding {self.path} from its shards", highlight=False, markup=False,
                        soft_wrap=True)
        (self.path / rundir.MANIFEST).unlink()

    def _damage(self) -> Optional[str]:
        """What is wrong with the entry there now, naming the file, or None: whole, absent, or made with
        other settings (which the build replaces anyway)."""
        path = self.path / rundir.MANIFEST
        try:
            m = json.loads(path.read_text())
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (UnicodeDecodeError, json.JSONDecodeError):
            return f"{path} is damaged (not valid JSON)"
        if not isinstance(m, dict):
            return f"{path} is damaged (not a manifest)"
        if m.get("config_hash") != self.key_hash or m.get("inputs", {}) != _plain(self.inputs):
            return None
        for name, record in (m.get("files") or {}).items():
            wrong = rundir.file_mismatch(self.path / name, record)
            if wrong:
                return f"{self.path / name} does not match {path} ({wrong})"
        return None

    def _build(self, build: Callable[[Path], Dict[str, Any]]) -> Manifest:
        started = time.time()
        if self.covers is not None:  # extended in place: the manifest, written last, says what is whole
            m = self.found()
            if m and m.get("config_hash") != self.key_hash:
                raise DacliError(f"{self.path} holds data for another config; remove it")
            self.path.mkdir(parents=True, exist_ok=True)
            with usage.frame() as models:
                fields = build(self.path)
            manifest = self._manifest(fields, started, models, self.path)
            rundir.write_json(self.path / rundir.MANIFEST, manifest)
            return manifest
        stamp = self.resume if self.resume is not None else {"config_hash": self.key_hash, "inputs": self.inputs}
        partial = self.path.with_name(self.path.name + ".partial")
        if partial.exists() and _read(partial / RESUME) != _plain(stamp):
            shutil.rmtree(partial)  # left by a build with other settings: nothing in it can be reused
        if (self.keep_shards and not partial.exists() and (self.path / "shards").is_dir()
                and _read(self.path / RESUME) == _plain(stamp)):  # the finished entry's shards still hold
            shutil.copytree(self.path / "shards", partial / "shards", copy_function=_link_or_copy)
        partial.mkdir(parents=True, exist_ok=True)
        rundir.write_json(partial / RESUME, stamp)
        with usage.frame() as models:
            fields = build(partial)
        manifest = self._manifest(fields, started, models, partial)
        rundir.write_json(partial / rundir.MANIFEST, manifest)
        if self.path.exists() or self.path.is_symlink():
            old = self.path.with_name(self.path.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            if self.path.is_symlink():
                self.path.unlink()
            else:
                os.replace(self.path, old)
            os.replace(partial, self.path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(partial, self.path)
        if not self.keep_shards:
            _tidy(self.path)
        return manifest

    def _manifest(self, fields: Dict[str, Any], started: float, models: List[Dict[str, Any]], work: Path) -> Manifest:
        fields = dict(fields)
        return {"stage": self.stage, "config_hash": self.key_hash, "config": self.key, "inputs": self.inputs,
                "counts": fields.pop("counts", {}),
                "timings": {"started": started, "seconds": round(time.time() - started, 2)},
                "versions": rundir.package_versions(),
                "usage": usage.peak(),  # the stage's peak CPU and GPU memory up to now (usage.py)
                # requests and tokens of every model this build asked (not entries built inside it, which
                # count their own): what `dacli report` totals
                "models": models,
                # each data file's rows, size and sha256, checked before the entry is trusted (_check)
                "files": {str(f.relative_to(work)): rundir.file_record(f) for f in _data_files(work)},
                **fields}


def _data_files(work: Path) -> List[Path]:
    """The files a manifest records: the entry's data, not its weights (too large to hash on every
    cache hit), its shards (each has its own record, shards.py), its bookkeeping or hidden temp files."""
    skip = {rundir.MANIFEST, RESUME}
    return sorted(f for f in work.rglob("*") if f.is_file() and f.suffix in (".parquet", ".jsonl", ".json")
                  and f.name not in skip and f.relative_to(work).parts[0] != "shards"
                  and not any(part.startswith(".") for part in f.relative_to(work).parts))


def _plain(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _link_or_copy(src: str, dst: str) -> None:
    """Shard files are written once and replaced by rename, never changed in place: a hard link shares
    them safely. Stamps (.json) are rewritten in place and journals (.journal, backends/journal.py)
    appended to, so they are copied."""
    if src.endswith((".json", ".journal")):
        shutil.copy2(src, dst)
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _tidy(entry: Path) -> None:
    """A finished entry keeps its outputs and manifest; the resume stamp and the shards it was built
    from go (only after the rename: a kill before it resumes from them)."""
    if entry.is_dir() and (entry / RESUME).exists():
        (entry / RESUME).unlink(missing_ok=True)
        shutil.rmtree(entry / "shards", ignore_errors=True)


@contextlib.contextmanager
def locked(entry: Path) -> Iterator[None]:
    """Hold an exclusive lock on an entry (a `.lock` file beside it) while computing it. A process that
    must wait says so, with the holder's pid and since when, instead of waiting in silence."""
    import fcntl

    from .progress import console

    entry = Path(entry)
    entry.parent.mkdir(parents=True, exist_ok=True)
    with open(entry.with_name(entry.name + ".lock"), "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            console().print(f"waiting for {entry} held by {holder}", highlight=False, soft_wrap=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)


def link_into(run: Path, name: str, target: Path) -> None:
    """`<run>/<name>` becomes a relative symlink to an entry (replaced atomically if it moved)."""
    path = Path(run) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(Path(target).resolve(), path.parent.resolve())
    if path.is_symlink() and os.readlink(path) == rel:
        return
    if path.exists() and not path.is_symlink():
        shutil.rmtree(path)  # a run dir from before the store: its own copy gives way to the link
    tmp = path.with_name(f".{path.name}.{os.getpid()}.link")  # its own: a twin links the same name at once
    tmp.unlink(missing_ok=True)
    os.symlink(rel, tmp)
    os.replace(tmp, path)


def linked(cfg, name: str, stage: str, matches: Callable[[Manifest], bool]) -> Path:
    """The entry `<run>/<name>` links to, after checking that it is whole and was made with this run's
    settings (`matches(manifest)`): train reads what generate wrote, never the prompt source."""
    path = Path(cfg.run.dir) / name
    m = rundir.read_manifest(path)
    if m is None:
        raise DacliError(f"no generated data at {path}: run `dacli generate` with the same overrides first")
    if not matches(m):
        raise DacliError(f"the data at {path} were generated with other settings than this {stage}'s; run "
                         f"`dacli generate` with the same overrides first")
    return path.resolve()
