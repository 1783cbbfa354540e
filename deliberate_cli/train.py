"""`dacli train`: run the method's stages (midtrain, sft) through TRL's SFTTrainer.

Recipe, per stage: read the generated data → build the dataset (plain documents for midtrain;
prompt → [CoT +] response conversations for sft, the spec never in context) → size max_length from
the data → SFTTrainer → save an HF checkpoint (tokenizer and chat template included) + manifest.
A method is only a list of stage names; this file knows stages, never method names.
"""
import contextlib
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from omegaconf import OmegaConf

from . import cot as cot_format
from . import progress, rundir
from .errors import DacliError
from .models import resolve


def sft_example(rec: Dict[str, Any], cot: bool, thinking_format: str) -> Dict[str, List[Dict[str, str]]]:
    """A prompt-completion conversation; TRL then puts the loss on the completion tokens only."""
    assistant: Dict[str, str] = {"role": "assistant", "content": rec["response"]}
    if cot and thinking_format == "reasoning_content":
        assistant["reasoning_content"] = rec["cot"]  # the template renders it in the model's own format
    elif cot:
        assistant["content"] = cot_format.joined(rec["cot"], rec["response"])
    return {"prompt": [{"role": "user", "content": rec["prompt"]}], "completion": [assistant]}


def _read_parquet(path) -> List[Dict[str, Any]]:
    import pyarrow.parquet as pq

    if not path.is_file():
        raise DacliError(f"training data missing: {path} (run `dacli generate` with the same overrides first)")
    return pq.read_table(path).to_pylist()


def _subset(cfg, stage: str) -> Dict[str, Any]:
    s = {"model": OmegaConf.to_container(cfg.model, resolve=True), "train": OmegaConf.to_container(cfg.train, resolve=True)}
    if stage == "sft":
        s["sft"] = OmegaConf.to_container(cfg.method.sft, resolve=True)
        s["n_samples"] = cfg.data.n_samples
        s["mix"] = OmegaConf.to_container(cfg.data.mix, resolve=True)
        s["examples"], s["select"] = cfg.data.examples, cfg.data.select
    return s


def _sft_data(cfg) -> Tuple[List[Dict], Dict[str, str]]:
    """The first data.n_samples prompts' kept records from the AFT data the run dir links to, as conversations."""
    src = rundir.linked(cfg, "data/aft", "training", lambda m: _same_aft_data(cfg, m))
    covered = rundir.read_manifest(src)["counts"]["prompts"]
    if covered < cfg.data.n_samples:
        raise DacliError(f"the AFT data in {src} cover {covered} prompts, fewer than data.n_samples="
                         f"{cfg.data.n_samples}; run `dacli generate` with the same overrides first")
    records = [r for r in _read_parquet(src / "aft.parquet") if r.get("order", 0) < cfg.data.n_samples]
    if not records:
        raise DacliError(f"no training records in {src}/aft.parquet (all rejected?); see rejects.parquet")
    if cfg.method.sft.cot and any(not (r.get("cot") or "").strip() for r in records):
        raise DacliError(f"method {cfg.method.name} trains on CoTs but {src}/aft.parquet has records without one")
    records, selected = select(records, cfg.data.examples, cfg.data.select)
    fmt = cfg.model.thinking_format
    # The subset's own content is the input's identity: extending the data for a larger count leaves
    # a smaller count's checkpoint fresh.
    digest = hashlib.sha256(json.dumps([[r["prompt_id"], r["cot"], r["response"]] for r in records]).encode())
    ref = {"path": str(src), "records": str(len(records)), "records_sha256": digest.hexdigest()[:16], **selected}
    rows = [dict(sft_example(r, cfg.method.sft.cot, fmt), source="alignment") for r in records]
    mixed, mix_ref = _mix(cfg.data.mix, len(rows))
    return rows + mixed, {**ref, **mix_ref}


def _same_aft_data(cfg, m: Dict[str, Any]) -> bool:
    """Whether linked AFT data were made with this run's settings: the prompts' identity is taken from
    the manifest (reloading a prompt file to hash it is generate's job), except for a generated pool,
    whose identity follows from the settings alone."""
    prompts = m["config"]["prompts_sha256"]
    if cfg.data.source == "generated":
        from .generate.prompt_pool import identity

        if prompts != identity(cfg):
            return False
    return m["config_hash"] == rundir.config_hash(rundir.aft_key(cfg, prompts))


def select(records: List[Dict], examples, how: str) -> Tuple[List[Dict], Dict[str, str]]:
    """`examples` of the records, when more passed: the first in prompt order, or a diverse subset
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

    from .prompts import read_rows

    if not m.source:
        return [], {}
    name, raw = read_rows(m.source, m.hf_split)
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
    return picked, {"mix_source": name, "mix_records": str(want), "mix_sha256": digest}


def _midtrain_data(cfg) -> Tuple[List[Dict], Dict[str, str]]:
    src = rundir.linked(cfg, "data/msm", "midtraining",
                        lambda m: m["config_hash"] == rundir.config_hash(rundir.msm_key(cfg)))
    docs = _read_parquet(src / "msm_docs.parquet")
    if not docs:
        raise DacliError(f"no MSM documents in {src}/msm_docs.parquet")
    return [{"text": d["text"]} for d in docs], rundir.input_ref(src)


STAGES: Dict[str, Callable] = {"midtrain": _midtrain_data, "sft": _sft_data}
# Stages whose output does not depend on the run's sample count: computed once into the store and
# linked from every run dir (one midtrained checkpoint for all msm_* jobs of a sweep).
SHARED = {"midtrain"}


def run(cfg) -> Dict[str, Any]:
    unknown = [s for s in cfg.method.stages if s not in STAGES]
    if unknown:
        raise DacliError(f"method {cfg.method.name} names unknown stage(s) {', '.join(unknown)}; "
                         f"valid: {', '.join(STAGES)}")
    summary: Dict[str, Any] = {}
    model_path = resolve(cfg.model)
    upstream: Dict[str, Dict[str, str]] = {}
    for stage in cfg.method.stages:
        rows, ref = STAGES[stage](cfg)
        inputs = {"data": ref, **upstream}
        subset = _subset(cfg, stage)
        shared = stage in SHARED
        out = (rundir.shared_checkpoint_dir(cfg, stage, {"config": subset, "inputs": inputs}) if shared
               else rundir.checkpoint_dir(cfg, stage))
        with rundir.locked(out) if shared and _is_main() else contextlib.nullcontext():
            if rundir.is_fresh(out, subset, inputs):
                summary[stage] = {"dir": str(out), "cached": True, **rundir.read_manifest(out)["counts"]}
            else:
                summary[stage] = {"dir": str(out), "cached": False,
                                  **_fit(cfg, stage, model_path, rows, out, subset, inputs)}
        if shared and _is_main():
            rundir.link(cfg, f"checkpoints/{stage}", out)
        upstream = {"init": rundir.input_ref(out)}
        model_path = str(out)
    return summary


def _sized_max_length(cfg, tokenizer, rows: List[Dict]) -> Tuple[int, int, int, int]:
    """(max_length, longest example, examples cut, tokens per epoch). max_length defaults to the longest."""
    chat_kwargs = dict(cfg.model.chat_template_kwargs)
    if "text" in rows[0]:
        lengths = [len(tokenizer(r["text"])["input_ids"]) + 1 for r in rows]
        prompt_lengths = [0] * len(rows)
    else:
        lengths = [len(tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=True, return_dict=False,
                                                     **chat_kwargs)) for r in rows]
        prompts = [tokenizer.apply_chat_template(r["prompt"], tokenize=True, add_generation_prompt=True,
                                                 return_dict=False, **chat_kwargs) for r in rows[:8]]
        fulls = [tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=True, return_dict=False,
                                               **chat_kwargs) for r in rows[:8]]
        if any(f[:len(p)] != p for p, f in zip(prompts, fulls)):
            raise DacliError("the chat template renders a prompt differently alone than before its answer, so the "
                             "assistant tokens cannot be masked; set model.chat_template_kwargs or use another template")
        prompt_lengths = [len(tokenizer.apply_chat_template(r["prompt"], tokenize=True, add_generation_prompt=True,
                                                            return_dict=False, **chat_kwargs)) for r in rows]
    longest = max(lengths)
    max_length = cfg.train.max_length or min(longest, cfg.model.max_model_len)
    fully_masked = sum(p >= max_length for p in prompt_lengths if p)
    if fully_masked:
        raise DacliError(f"{fully_masked} example(s) lose every completion token at max_length={max_length}; "
                         f"raise train.max_length (longest example: {longest} tokens)")
    return max_length, longest, sum(n > max_length for n in lengths), sum(min(n, max_length) for n in lengths)


def make_trainer(cfg, stage: str, model_path: str, rows: List[Dict], output_dir: Path, max_length: int):
    """TRL's SFTTrainer with CPU-safe settings; prompt-completion rows get the loss on the completion only."""
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    t = cfg.train
    gpu = torch.cuda.is_available()
    midtrain = stage == "midtrain"
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    args = SFTConfig(
        output_dir=str(output_dir),
        num_train_epochs=t.midtrain_epochs if midtrain else t.epochs,
        learning_rate=t.midtrain_learning_rate if midtrain else t.learning_rate,
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        lr_scheduler_type="cosine",
        warmup_steps=t.warmup_ratio,
        weight_decay=t.weight_decay,
        logging_steps=t.logging_steps,
        # Checkpoints go to <out>.partial/trainer/ so that a killed run resumes; they are removed at the end.
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=1,
        # SFTConfig turns both on by default; on a CPU bf16 autocast crawls and checkpointing only costs.
        bf16=t.bf16 and gpu,
        gradient_checkpointing=t.gradient_checkpointing and gpu,
        max_length=max_length,
        packing=t.packing,
        report_to=list(t.report_to),
        seed=t.seed,
        use_cpu=not gpu,
        model_init_kwargs={"dtype": torch.bfloat16 if (t.bf16 and gpu) else torch.float32},
        # dacli's own step count (_steps) shows progress; the losses are kept in the manifest anyway.
        disable_tqdm=os.environ.get(progress.VERBOSE_ENV) != "1",
    )
    return SFTTrainer(model=model_path, args=args,
                      train_dataset=Dataset.from_list([{k: v for k, v in r.items() if k != "source"} for r in rows]),
                      processing_class=tokenizer, peft_config=_peft_config(t.lora))


def _is_main() -> bool:
    """Rank 0 of an `accelerate launch` / torchrun job, or the only process."""
    return int(os.environ.get("RANK", "0")) == 0


def _fit(cfg, stage: str, model_path: str, rows: List[Dict], out, subset, inputs) -> Dict[str, Any]:
    from transformers import AutoTokenizer

    started = time.time()
    sizes = _sized_max_length(cfg, AutoTokenizer.from_pretrained(model_path), rows)
    resume = {"config_hash": rundir.config_hash(subset), "inputs": inputs}
    if not _is_main():
        # Other ranks train into the same partial dir; rank 0 alone creates, finalises and renames it.
        return _train_into(cfg, stage, model_path, rows, out.with_name(out.name + ".partial"), sizes, main=False)
    with rundir.atomic_dir(out, resume=resume) as tmp:
        counts = _train_into(cfg, stage, model_path, rows, tmp, sizes, main=True)
        if stage == "sft":  # what it trained on, each record tagged with where it came from
            sources = [r.get("source", "alignment") for r in rows]
            counts.update(alignment_examples=sources.count("alignment"), mix_examples=sources.count("mix"))
            with (tmp / "train_data.jsonl").open("w") as f:
                for r in rows:
                    f.write(json.dumps(r) + "\n")
        rundir.write_json(tmp / rundir.MANIFEST, rundir.manifest(stage, subset, inputs, counts, started,
                                                                 base_model=model_path,
                                                                 loss_history=counts.pop("loss_history")))
    return counts


def _train_into(cfg, stage: str, model_path: str, rows: List[Dict], tmp: Path, sizes, main: bool) -> Dict[str, Any]:
    from transformers.trainer_utils import get_last_checkpoint

    max_length, longest, truncated, epoch_tokens = sizes
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(tmp / "tensorboard")
    trainer = make_trainer(cfg, stage, model_path, rows, tmp / "trainer", max_length)
    last = get_last_checkpoint(str(tmp / "trainer")) if (tmp / "trainer").is_dir() else None
    t0 = time.time()
    with contextlib.ExitStack() as stack:
        if main:
            trainer.add_callback(_steps(f"{stage} steps", stack))
        result = trainer.train(resume_from_checkpoint=last)
    train_seconds = time.time() - t0
    if cfg.train.lora.enabled:
        if main:
            trainer.model.merge_and_unload().save_pretrained(tmp)
            trainer.processing_class.save_pretrained(tmp)
    else:
        trainer.save_model(str(tmp))  # collective under FSDP/ZeRO-3; rank 0 writes model + tokenizer
    if not main:
        return {}
    (tmp / "training_args.bin").unlink(missing_ok=True)
    shutil.rmtree(tmp / "trainer", ignore_errors=True)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        "examples": len(rows), "max_length": max_length, "longest_example": longest, "truncated": truncated,
        "steps": result.global_step, "train_loss": result.training_loss,
        "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
        "samples_per_second": result.metrics.get("train_samples_per_second"),
        "resumed_from_step": int(Path(last).name.split("-")[-1]) if last else 0,
        "train_seconds": round(train_seconds, 2),
        "train_tokens": int(round(epoch_tokens * trainer.args.num_train_epochs)),
        "loss_history": losses,
    }


def _steps(label: str, stack: contextlib.ExitStack):
    """A Trainer callback that shows training as one progress line: steps done of max_steps (known
    only once training begins, so the track opens then, in `stack`) and the last logged loss."""
    from transformers import TrainerCallback

    class Steps(TrainerCallback):
        advance, done = None, 0

        def on_train_begin(self, args, state, control, **kwargs):
            self.advance = stack.enter_context(progress.track(label, total=state.max_steps))

        def on_step_end(self, args, state, control, **kwargs):
            self.advance(state.global_step - self.done)  # a resumed run jumps to its checkpoint's step
            self.done = state.global_step

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.advance and logs and "loss" in logs:
                self.advance(0, loss=f"{logs['loss']:.3f}")

    return Steps()


def _peft_config(lora) -> Optional[Any]:
    if not lora.enabled:
        return None
    from peft import LoraConfig

    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=lora.target_modules, task_type="CAUSAL_LM")
