"""Training prompts: the bundled set, a local JSONL/CSV/Parquet file, or an HF dataset, cut to a
nested subset.

The subset is a fixed shuffle (by `data.seed`) of the whole source, truncated to `data.n_samples`,
so the first 1,000 of a 5,000 run are exactly the 1,000 run and a sweep can share one dataset.
"""
import hashlib
import json
import random
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .errors import DacliError

BUNDLED = Path(__file__).parent / "assets" / "prompts" / "train.jsonl"
HF_PREFIX = "hf:"


def _read_file(path: Path) -> List[Dict[str, Any]]:
    if not path.is_file():
        raise DacliError(f"prompt file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if suffix == ".csv":
            import csv

            with path.open(newline="") as f:
                return list(csv.DictReader(f))
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError, OSError) as e:
        raise DacliError(f"cannot read prompts from {path}: {str(e).splitlines()[0]}") from None
    raise DacliError(f"prompt file {path} must end in .jsonl, .csv or .parquet")


def _read_hf(name: str, split: str, revision: Optional[str] = None) -> List[Dict[str, Any]]:
    """A hub dataset id (at `revision`: a commit, tag or branch; None the newest) or a local dataset
    directory, through the same `datasets.load_dataset` call, which caches what it fetched."""
    import datasets

    try:
        return datasets.load_dataset(name, split=split, revision=revision).to_list()
    except (FileNotFoundError, ValueError, datasets.exceptions.DatasetNotFoundError) as e:
        raise DacliError(f"cannot load HF dataset '{name}' (split {split}): {str(e).splitlines()[0]}") from None
    except ConnectionError as e:
        raise DacliError(f"cannot reach the hub for dataset '{name}': {str(e).splitlines()[0]}") from None


def read_rows(source: str, hf_split: str = "train", revision: Optional[str] = None) -> Tuple[str, List[Dict[str, Any]]]:
    """(resolved name, rows) of a local file or an `hf:` dataset."""
    if source.startswith(HF_PREFIX):
        return source, _read_hf(source[len(HF_PREFIX):], hf_split, revision)
    path = Path(source).expanduser()
    return str(path), _read_file(path)


def _read(data_cfg) -> Tuple[str, List[Dict[str, Any]]]:
    if data_cfg.source == "bundled":
        return str(BUNDLED), _read_file(BUNDLED)
    return read_rows(data_cfg.source, data_cfg.hf_split)


def _ids(value: Any) -> List[str]:
    if not value:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def load_prompts(data_cfg) -> List[Dict[str, Any]]:
    """The first data.n_samples prompts of the shuffled source."""
    return load_prompt_set(data_cfg)[0][: data_cfg.n_samples]


def load_prompt_set(data_cfg) -> Tuple[List[Dict[str, Any]], str]:
    """Every prompt of the shuffled source, numbered in that order (`order`), and a hash of them.

    Generation takes prompts from the front of this order until it has kept data.n_samples examples, so
    a source with fewer prompts than that is refused here. The hash does not depend on n_samples, so
    every count of a sweep finds the same generated dataset, and a source whose content changed gets a new one.
    """
    name, rows = _read(data_cfg)
    if not rows:
        raise DacliError(f"prompt set {name} is empty")
    cols = dict(data_cfg.columns)
    field = cols.get("prompt", "prompt")
    if field not in rows[0]:
        raise DacliError(f"prompt set {name} has no column '{field}' (columns: {', '.join(rows[0])}); "
                         f"set data.columns.prompt")
    answer = cols.get("response", "response")
    if data_cfg.given_responses and answer not in rows[0]:
        raise DacliError(f"data.given_responses=true but prompt set {name} has no column '{answer}' "
                         f"(columns: {', '.join(rows[0])}); set data.columns.response")
    records = []
    for i, row in enumerate(rows):
        text = row.get(field)
        if not isinstance(text, str) or not text.strip():
            continue
        records.append({
            "prompt_id": str(row.get(cols.get("id", "id")) or f"{Path(name).stem}-{i:06d}"),
            "prompt": text.strip(),
            "category": str(row.get(cols.get("category", "category")) or ""),
            "expected_behavior": str(row.get(cols.get("expected_behavior", "expected_behavior")) or ""),
            "label_policy_ids": _ids(row.get(cols.get("policy_ids", "policy_ids"))),
        })
        if data_cfg.given_responses:  # the answers to train on, as the set has them
            records[-1].update(response=str(row.get(answer) or "").strip(),
                               cot=str(row.get(cols.get("cot", "cot")) or "").strip())
    if not records:
        raise DacliError(f"prompt set {name} has no non-empty '{field}' values")
    random.Random(data_cfg.seed).shuffle(records)
    if data_cfg.n_samples <= 0:
        raise DacliError(f"data.n_samples must be positive, got {data_cfg.n_samples}")
    if data_cfg.n_samples > len(records):
        raise DacliError(f"data.n_samples={data_cfg.n_samples} examples but {name} has only {len(records)} prompts "
                         f"(each gives at most one); lower n_samples or pass a larger data.source")
    for order, rec in enumerate(records):
        rec["order"] = order
    digest = hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()[:16]
    return records, digest
