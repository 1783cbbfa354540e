"""One fit: TRL's SFTTrainer on a stage's rows, resumed from the last trainer checkpoint in the
stage's partial dir, saved as an HF checkpoint (or, with LoRA, as the adapter).

Runs in the train stage's own process, or, with train.num_processes > 1, in every process that
`accelerate launch` starts (rank.py): each rank builds the same trainer, trains its share and saves
collectively; rank 0 returns the counts.
"""
import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .. import progress
from ..errors import DacliError

PROGRESS = "fit_progress.json"  # rank 0's steps, read by the stage process that shows them (launch.py)
COUNTS = "fit.json"


def is_main() -> bool:
    """Rank 0 of an `accelerate launch` job, or the only process."""
    return int(os.environ.get("RANK", "0")) == 0


def sized_max_length(cfg, tokenizer, rows: List[Dict]) -> Tuple[int, int, int, int]:
    """(max_length, longest example, examples cut, tokens per epoch). max_length defaults to the longest."""
    chat_kwargs = dict(cfg.model.chat_template_kwargs)
    if "text" not in rows[0] and "completion" not in rows[0]:  # rl: prompts only; the policy writes the rest
        lengths = [len(tokenizer.apply_chat_template(r["prompt"], tokenize=True, add_generation_prompt=True,
                                                     return_dict=False, **chat_kwargs)) for r in rows]
        return cfg.method.rl.max_completion_length, max(lengths), 0, sum(lengths)
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


def _common_args(t, output_dir: Path) -> Dict[str, Any]:
    """The trainer settings SFT and GRPO share: schedule, checkpoints, precision and the CPU's needs."""
    import torch

    gpu = torch.cuda.is_available()
    return dict(
        output_dir=str(output_dir),
        gradient_accumulation_steps=t.grad_accum,
        lr_scheduler_type="cosine",
        warmup_steps=t.warmup_ratio,
        weight_decay=t.weight_decay,
        logging_steps=t.logging_steps,
        # Checkpoints go to <out>.partial/trainer/ so that a killed run resumes; they are removed at the end.
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=1,
        # TRL turns both on by default; on a CPU bf16 autocast crawls and checkpointing only costs.
        bf16=t.bf16 and gpu,
        gradient_checkpointing=t.gradient_checkpointing and gpu,
        report_to=list(t.report_to),
        seed=t.seed,
        use_cpu=not gpu,
        model_init_kwargs={"dtype": torch.bfloat16 if (t.bf16 and gpu) else torch.float32},
        # Under DDP: every trainable parameter takes part in every step (the Trainer's default would
        # search for unused ones each step).
        ddp_find_unused_parameters=False,
        # dacli's own step count (_steps) shows progress; the losses are kept in the manifest anyway.
        disable_tqdm=os.environ.get(progress.VERBOSE_ENV) != "1",
    )


def _tokenizer(model_path: str, **kwargs):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def make_trainer(cfg, stage: str, model_path: str, rows: List[Dict], output_dir: Path, max_length: int):
    """TRL's SFTTrainer with CPU-safe settings; prompt-completion rows get the loss on the completion only."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    t, midtrain = cfg.train, stage == "midtrain"
    args = SFTConfig(
        **_common_args(t, output_dir),
        num_train_epochs=t.midtrain_epochs if midtrain else t.epochs,
        learning_rate=t.midtrain_learning_rate if midtrain else t.learning_rate,
        per_device_train_batch_size=t.batch_size,
        max_length=max_length,
        packing=t.packing,
    )
    return SFTTrainer(model=model_path, args=args,
                      train_dataset=Dataset.from_list([{k: v for k, v in r.items() if k != "source"} for r in rows]),
                      processing_class=_tokenizer(model_path), peft_config=_peft_config(t.lora))


def make_rl_trainer(cfg, model_path: str, rows: List[Dict], output_dir: Path, reward):
    """TRL's GRPOTrainer: method.rl.num_generations answers per prompt, each rewarded by `reward` (the
    spec-aware judge, reward.py), with the same settings as SFT otherwise."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    t, r = cfg.train, cfg.method.rl
    args = GRPOConfig(
        **_common_args(t, output_dir),
        num_train_epochs=r.epochs,
        learning_rate=r.learning_rate,
        # one group of num_generations answers per prompt; a batch holds whole groups
        per_device_train_batch_size=r.num_generations * max(1, t.batch_size // r.num_generations),
        num_generations=r.num_generations,
        max_completion_length=r.max_completion_length,
        temperature=r.temperature,
        beta=r.beta,
        chat_template_kwargs=dict(cfg.model.chat_template_kwargs) or None,
    )
    return GRPOTrainer(model=model_path, reward_funcs=[reward], args=args, train_dataset=Dataset.from_list(rows),
                       processing_class=_tokenizer(model_path, padding_side="left"), peft_config=_peft_config(t.lora))


def train_into(cfg, stage: str, model_path: str, rows: List[Dict], tmp: Path, sizes, label: str) -> Dict[str, Any]:
    """Train (resuming from tmp/trainer/ when a killed run left a checkpoint there) and save into tmp:
    the full model, or with LoRA the adapter, and the tokenizer. The counts come back from rank 0."""
    from transformers.trainer_utils import get_last_checkpoint

    max_length, longest, truncated, epoch_tokens = sizes
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(tmp / "tensorboard")
    reward = None
    if stage == "rl":
        from .reward import JudgeReward

        reward = JudgeReward(cfg)
        trainer = make_rl_trainer(cfg, model_path, rows, tmp / "trainer", reward)
    else:
        trainer = make_trainer(cfg, stage, model_path, rows, tmp / "trainer", max_length)
    last = get_last_checkpoint(str(tmp / "trainer")) if (tmp / "trainer").is_dir() else None
    t0 = time.time()
    with contextlib.ExitStack() as stack:
        if reward is not None:
            stack.callback(reward.close)
        if is_main():
            trainer.add_callback(_steps(label, stack, tmp))
        result = trainer.train(resume_from_checkpoint=last)
    train_seconds = time.time() - t0
    # Collective under FSDP/ZeRO-3; rank 0 writes. A PEFT model saves its adapter (adapter_config.json +
    # adapter_model.safetensors), served on its base without a merge (models.servable).
    trainer.save_model(str(tmp))
    if not is_main():
        return {}
    (tmp / "training_args.bin").unlink(missing_ok=True)
    shutil.rmtree(tmp / "trainer", ignore_errors=True)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    train_tokens = int(round(epoch_tokens * trainer.args.num_train_epochs))
    if reward is not None:  # rl: the judge's mean reward per logged step is what it optimised
        rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
        return {
            "prompts": len(rows), "generations_per_prompt": cfg.method.rl.num_generations,
            "steps": result.global_step, "train_loss": result.training_loss,
            "first_reward": rewards[0] if rewards else None, "last_reward": rewards[-1] if rewards else None,
            "mean_reward": sum(rewards) / len(rewards) if rewards else None, "reward_history": rewards,
            "resumed_from_step": int(Path(last).name.split("-")[-1]) if last else 0,
            "train_seconds": round(train_seconds, 2), "processes": int(os.environ.get("WORLD_SIZE", "1")),
            "lora": bool(cfg.train.lora.enabled), "loss_history": losses, **reward.counts(),
        }
    return {
        "examples": len(rows), "max_length": max_length, "longest_example": longest, "truncated": truncated,
        "steps": result.global_step, "train_loss": result.training_loss,
        "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
        "samples_per_second": result.metrics.get("train_samples_per_second"),
        "resumed_from_step": int(Path(last).name.split("-")[-1]) if last else 0,
        "train_seconds": round(train_seconds, 2),
        "train_tokens": train_tokens,
        # over the whole run when resumed: tokens of the schedule / seconds of this attempt would overstate it
        "tokens_per_second": round(train_tokens / train_seconds, 1) if train_seconds > 0 and not last else None,
        "processes": int(os.environ.get("WORLD_SIZE", "1")),
        "lora": bool(cfg.train.lora.enabled),
        "loss_history": losses,
    }


def _steps(label: str, stack: contextlib.ExitStack, tmp: Path):
    """A Trainer callback that shows training as one progress line: steps done of max_steps (known
    only once training begins, so the track opens then, in `stack`) and the last logged loss. Under
    `accelerate launch` the terminal belongs to the stage process, so rank 0 writes its steps to a
    file there instead (launch.py shows them)."""
    from transformers import TrainerCallback

    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1

    class Steps(TrainerCallback):
        advance, done, loss = None, 0, None

        def on_train_begin(self, args, state, control, **kwargs):
            if not launched:
                self.advance = stack.enter_context(progress.track(label, total=state.max_steps))
            self._tell(state)

        def on_step_end(self, args, state, control, **kwargs):
            if self.advance:
                self.advance(state.global_step - self.done)  # a resumed run jumps to its checkpoint's step
            self.done = state.global_step
            self._tell(state)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.loss = f"{logs['loss']:.3f}"
                if self.advance:
                    self.advance(0, loss=self.loss)
                self._tell(state)

        def _tell(self, state):
            if launched:
                from ..rundir import write_json

                write_json(tmp / PROGRESS, {"step": state.global_step, "max_steps": state.max_steps, "loss": self.loss})

    return Steps()


def _peft_config(lora) -> Optional[Any]:
    if not lora.enabled:
        return None
    from peft import LoraConfig

    targets = lora.target_modules if isinstance(lora.target_modules, str) else [str(m) for m in lora.target_modules]
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=targets, task_type="CAUSAL_LM")
