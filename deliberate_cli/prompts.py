"""Training prompts: the bundled set or a local JSONL/CSV/Parquet file, cut to a nested subset.

The subset is a fixed shuffle (by `data.seed`) of the whole source, truncated to `data.n_samples`,
so the first 1,000 of a 5,000 run are exactly the 1,000 run and a sweep can share one dataset.
"""
import json
import random
from pathlib import Path
from typing import Any, Dict, List

from .errors import DacliError

BUNDLED = Path(__file__).parent / "assets" / "prompts" / "train.jsonl"


def _read(path: Path) -> List[Dict[str, Any]]:
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
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as e:
        raise DacliError(f"cannot read prompts from {path}: {str(e).splitlines()[0]}") from None
    raise DacliError(f"prompt file {path} must end in .jsonl, .csv or .parquet")


def load_prompts(data_cfg) -> List[Dict[str, Any]]:
    path = BUNDLED if data_cfg.source == "bundled" else Path(data_cfg.source).expanduser()
    if not path.is_file():
        raise DacliError(f"prompt file not found: {path}")
    rows = _read(path)
    if not rows:
        raise DacliError(f"prompt set {path} is empty")
    field = data_cfg.prompt_field
    if field not in rows[0]:
        raise DacliError(f"prompt file {path} has no column '{field}' (columns: {', '.join(rows[0])}); "
                         f"set data.prompt_field")
    records = []
    for i, row in enumerate(rows):
        text = row.get(field)
        if not isinstance(text, str) or not text.strip():
            continue
        policy_ids = row.get("policy_ids") or []
        records.append({
            "prompt_id": str(row.get("id", f"{path.stem}-{i:06d}")),
            "prompt": text.strip(),
            "category": str(row.get("category") or ""),
            "expected_behavior": str(row.get("expected_behavior") or ""),
            "label_policy_ids": list(policy_ids) if not isinstance(policy_ids, str) else policy_ids.split(","),
        })
    if not records:
        raise DacliError(f"prompt set {path} has no non-empty '{field}' values")
    random.Random(data_cfg.seed).shuffle(records)
    if data_cfg.n_samples <= 0:
        raise DacliError(f"data.n_samples must be positive, got {data_cfg.n_samples}")
    if data_cfg.n_samples > len(records):
        raise DacliError(f"data.n_samples={data_cfg.n_samples} but {path} has only {len(records)} prompts; "
                         f"lower n_samples or pass a larger data.source")
    for order, rec in enumerate(records):
        rec["order"] = order
    return records[: data_cfg.n_samples]
