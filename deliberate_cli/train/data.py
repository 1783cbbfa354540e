"""What each training stage trains on, read from the data the run dir links to.

midtrain: the MSM documents, as plain text. sft: data.n_samples kept AFT examples (the first in prompt
order, or a diverse choice among data.candidates) as prompt → [CoT +] response conversations (the spec
never in context), plus an instruction-tuning mix.
"""
import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

from .. import cot as cot_format
from .. import rundir
from ..config import declared
from ..errors import DacliError
from ..generate import aft, msm, prompt_pool
from ..prompts import load_prompt_set
from ..spec import identity as spec_identity
from ..store import Entry, link_into, linked


def sft_example(rec: Dict[str, Any], cot: bool, thinking_format: str) -> Dict[str, List[Dict[str, str]]]:
    """A prompt-completion conversation; TRL then puts the loss on the completion tokens only."""
    assistant: Dict[str, str] = {"role": "assistant", "content": rec["response"]}
    if cot and thinking_format == "reasoning_content":
        assistant["reasoning_content"] = rec["cot"]  # the template renders it in the model's own format
    elif cot:
        assistant["content"] = cot_format.joined(rec["cot"], rec["response"])
    return {"prompt": [{"role": "user", "content": rec["prompt"]}], "completion": [assistant]}


def key(cfg, stage: str) -> Dict[str, Any]:
    """The settings a stage's checkpoint depends on (its cache key; what it trains on is its input).
    num_processes stays in (the global batch is batch_size x grad_accum x num_processes); how the
    processes shard the model, where the logs go and how often are runtime settings (config.declared)."""
    k = declared(cfg, "model", "train")
    s = {"model": k["model"], "train": k["train"]}
    if s["train"].get("num_processes") == 1:
        s["train"].pop("num_processes")  # a single-process checkpoint keeps the key it had before the setting existed
    if stage == "rl":  # the judge is the reward: its model and rubric settings decide what is learnt
        s.update(rl=declared(cfg, "method.rl")["method.rl"], judge=declared(cfg, "judge")["judge"],
                 spec=spec_identity(cfg.spec), n_samples=cfg.data.n_samples)
    if stage == "sft":
        d = declared(cfg, "method.sft", "data.mix")
        s["sft"], s["mix"] = d["method.sft"], d["data.mix"]
        # n_samples counts examples (it counted prompts in keys that lack `examples`)
        s["examples"], s["select"] = cfg.data.n_samples, cfg.data.select
        if cfg.data.select == "diverse":
            s["candidates"] = cfg.data.candidates
    return s


def _read_parquet(path) -> List[Dict[str, Any]]:
    import pyarrow.parquet as pq

    if not path.is_file():
        raise DacliError(f"training data missing: {path} (run `dacli generate` with the same overrides first)")
    return pq.read_table(path).to_pylist()


def sft_data(cfg) -> Tuple[List[Dict], Dict[str, str]]:
    """data.n_samples kept examples from the AFT data the run dir links to, as conversations."""
    src = _aft_input(cfg, "training")
    n, kept = aft.wanted(cfg), rundir.read_manifest(src)["counts"]["kept"]
    if kept < n:
        raise DacliError(f"the AFT data in {src} hold {kept} kept examples, fewer than the {n} this run trains "
                         f"on or chooses from (data.n_samples, data.candidates); run `dacli generate` with the "
                         f"same overrides first")
    records = aft.first_kept(_read_parquet(src / "aft.parquet"), n)
    if cfg.method.sft.cot and any(not (r.get("cot") or "").strip() for r in records):
        raise DacliError(f"method {cfg.method.name} trains on CoTs but {src}/aft.parquet has records without one")
    records, selected = select(records, cfg.data.n_samples, cfg.data.select)
    fmt = cfg.model.thinking_format
    # The subset's own content is the input's identity: extending the data for a larger count leaves
    # a smaller count's checkpoint fresh.
    digest = hashlib.sha256(json.dumps([[r["prompt_id"], r["cot"], r["response"]] for r in records]).encode())
    ref = {"path": str(src), "records": str(len(records)), "records_sha256": digest.hexdigest()[:16], **selected}
    rows = [dict(sft_example(r, cfg.method.sft.cot, fmt), source="alignment") for r in records]
    mixed, mix_ref = _mix(cfg.data.mix, len(rows))
    return rows + mixed, {**ref, **mix_ref}


def _input(cfg, name: str, stage: str, entry: Callable[[], Entry], matches=None) -> Path:
    """The store entry `<run>/<name>` links to, checked. A run dir whose link is missing or points at
    other settings (a run whose overrides change only train settings, so that generate never ran in it)
    finds the entry by its key in the store, and links it."""
    matches = matches or (lambda m: m["config_hash"] == entry().key_hash)
    m = rundir.read_manifest(Path(cfg.run.dir) / name)
    if m is None or not matches(m):
        e = entry()
        found = e.found()
        if found is not None and found.get("config_hash") == e.key_hash:
            link_into(Path(cfg.run.dir), name, e.path)
    return linked(cfg, name, stage, matches)


def _aft_input(cfg, stage: str) -> Path:
    def entry() -> Entry:
        if cfg.data.source == "generated":
            return aft.entry(cfg, prompt_pool.identity(cfg), aft.wanted(cfg))
        return aft.entry(cfg, load_prompt_set(cfg.data)[1], aft.wanted(cfg))

    return _input(cfg, "data/aft", stage, entry, lambda m: _same_aft_data(cfg, m))


def _same_aft_data(cfg, m: Dict[str, Any]) -> bool:
    """Whether linked AFT data were made with this run's settings: the prompts' identity is taken from
    the manifest (reloading a prompt file to hash it is generate's job), except for a generated pool,
    whose identity follows from the settings alone."""
    prompts = m["config"]["prompts_sha256"]
    if cfg.data.source == "generated" and prompts != prompt_pool.identity(cfg):
        return False
    return m["config_hash"] == rundir.config_hash(aft.key(cfg, prompts))


def select(records: List[Dict], examples: int, how: str) -> Tuple[List[Dict], Dict[str, str]]:
    """`examples` of the records, when there are more: the first in prompt order, or a diverse subset
    (STAR-1's selection: repeatedly drop a record of the most frequent (category, source) group, the
    latest in prompt order first, until `examples` remain)."""
    from collections import Counter

    if not examples or len(records) <= examples:
        return records, {}
    records = sorted(records, key=lambda r: r.get("order", 0))
    if how == "first":
        return records[:examples], {"selected": f"first {examples} of {len(records)}"}
    group = lambda r: (r.get("category") or "", r.get("source") or "")  # noqa: E731
    kept = list(records)
    counts = Counter(group(r) for r in kept)
    while len(kept) > examples:
        top = max(counts.values())
        drop = max((i for i, r in enumerate(kept) if counts[group(r)] == top), key=lambda i: kept[i].get("order", 0))
        counts[group(kept[drop])] -= 1
        del kept[drop]
    return kept, {"selected": f"diverse {examples} of {len(records)}"}


def _mix(m, alignment: int) -> Tuple[List[Dict], Dict[str, str]]:
    """The instruction-tuning conversations data.mix asks for: `count`, or `ratio` x the alignment
    examples, drawn with `seed` from the source; each a prompt (every turn before the last) and its
    last, assistant turn, tagged `source: mix`."""
    import random

    from ..prompts import read_rows

    if not m.source:
        return [], {}
    name, raw = read_rows(m.source, m.hf_split, m.revision)
    convs = []
    for i, row in enumerate(raw):
        turns = row.get(m.messages_column)
        if isinstance(turns, str):
            turns = json.loads(turns)
        if not isinstance(turns, list) or not turns or not all(isinstance(t, dict) and "role" in t and "content" in t
                                                               for t in turns):
            raise DacliError(f"data.mix.source {name}: row {i + 1} has no '{m.messages_column}' list of "
                             f"{{role, content}} turns (set data.mix.messages_column)")
        if turns[-1]["role"] == "assistant" and len(turns) > 1:
            convs.append({"prompt": [{"role": t["role"], "content": t["content"]} for t in turns[:-1]],
                          "completion": [{"role": "assistant", "content": turns[-1]["content"]}], "source": "mix"})
    want = m.count or int(round(m.ratio * alignment))
    if want > len(convs):
        raise DacliError(f"data.mix asks for {want} conversations but {name} has {len(convs)} that end with "
                         f"an assistant turn")
    picked = random.Random(m.seed).sample(convs, want)
    digest = hashlib.sha256(json.dumps([[c["prompt"], c["completion"]] for c in picked]).encode()).hexdigest()[:16]
    return picked, {"mix_source": name, "mix_records": str(want), "mix_sha256": digest,
                    **({"mix_revision": m.revision} if m.revision else {})}


def midtrain_data(cfg) -> Tuple[List[Dict], Dict[str, str]]:
    src = _input(cfg, "data/msm", "midtraining", lambda: msm.entry(cfg))
    docs = _read_parquet(src / "msm_docs.parquet")
    if not docs:
        raise DacliError(f"no MSM documents in {src}/msm_docs.parquet")
    return [{"text": d["text"]} for d in docs], rundir.input_ref(src)


def rl_data(cfg) -> Tuple[List[Dict], Dict[str, str]]:
    """The prompts the rl stage samples from: the first method.rl.prompts (default data.n_samples) of the
    run's prompt set, as the AFT data the run dir links to hold them (kept or rejected alike: the policy
    is rewarded on every prompt, not only on those its teacher answered well)."""
    src = _aft_input(cfg, "RL")
    n = cfg.method.rl.prompts or cfg.data.n_samples
    covered = rundir.read_manifest(src)["counts"]["prompts"]
    if covered < n:
        raise DacliError(f"the AFT data in {src} cover {covered} prompts, fewer than the {n} the rl stage samples "
                         f"from (method.rl.prompts, else data.n_samples); run `dacli generate` with data.n_samples={n}")
    records = _read_parquet(src / "aft.parquet") + (_read_parquet(src / "rejects.parquet")
                                                     if (src / "rejects.parquet").is_file() else [])
    prompts = sorted({r["prompt_id"]: r for r in records if r.get("order", 0) < n}.values(), key=lambda r: r["order"])
    rows = [{"prompt": [{"role": "user", "content": r["prompt"]}], "prompt_id": r["prompt_id"],
             "category": r.get("category") or "", "label_policy_ids": list(r.get("label_policy_ids") or [])}
            for r in prompts]
    digest = hashlib.sha256(json.dumps([r["prompt_id"] for r in rows]).encode()).hexdigest()[:16]
    return rows, {"path": str(src), "prompts": str(len(rows)), "prompts_sha256": digest}


# stage name -> what it trains on.
STAGES: Dict[str, Callable] = {"midtrain": midtrain_data, "sft": sft_data, "rl": rl_data}
