"""The rl stage (deliberative alignment's GRPO step): the spec-aware judge rewards each sampled answer
and never sees the CoT; it trains from the sft checkpoint, is recorded like sft, and resumes."""
import json

import pytest
from omegaconf import OmegaConf

from conftest import dacli, kill_after, read_json, tiny_overrides
from deliberate_cli.judge import conversations
from deliberate_cli.spec import load_spec
from deliberate_cli.train.reward import JudgeReward

SECRET = "PRIVATE-REASONING-MARKER"


def _given(tmp_path, n=4):
    """Training answers given with the prompts: the AFT data need no judge, which the tiny model cannot be."""
    path = tmp_path / "given.jsonl"
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"prompt": f"Please help me plan picnic number {i}.", "response": "Sure: pick a park.",
                                "cot": "OR1 applies: a harmless request, so I help fully."}) + "\n")
    return path


def _args(tiny_model, tmp_path, *extra):
    return tiny_overrides(tiny_model, tmp_path / "runs", "method=aft_cot_rl", "train.report_to=[]",
                          f"data.source={_given(tmp_path)}", "data.given_responses=true", "data.n_samples=4",
                          "judge=transformers", "judge.max_tokens=8", "method.rl.max_completion_length=12",
                          "method.rl.num_generations=2", *extra)


def test_the_judge_grades_the_answer_without_the_cot():
    spec = load_spec(OmegaConf.create({"name": "s", "path": None, "include_reasons": True, "policies": [
        {"id": "OR1", "title": "Help", "rule": "Help with harmless requests.", "reason": "Use."}]}))
    completion = [{"role": "assistant", "content": f"<think>\n{SECRET} I will comply.\n</think>\n\nThe answer."}]
    records = JudgeReward.records([[{"role": "user", "content": "A request."}]], [completion])
    assert records == [{"prompt": "A request.", "cot": "", "response": "The answer."}]
    hidden = json.dumps(conversations(spec, records, [], show_cot=False))
    assert SECRET not in hidden and "The answer." in hidden and "Reasoning:" not in hidden
    assert conversations(spec, records, [], show_cot=False)[0][0]["content"].startswith(
        "You grade an assistant's answer against")
    # the AFT filter's judge still sees the CoT
    shown = json.dumps(conversations(spec, [{"prompt": "A request.", "cot": SECRET, "response": "x"}], []))
    assert SECRET in shown


def test_rl_trains_from_sft_rewards_every_answer_and_is_recorded(tiny_model, tmp_path):
    args = _args(tiny_model, tmp_path)
    dacli("generate", *args, cwd=tmp_path)
    proc = dacli("train", *args, cwd=tmp_path)
    assert "rl steps: 2/2" in proc.stderr
    run = tmp_path / "runs" / "tiny-aft_cot_rl-4ex" / "checkpoints"
    m = read_json(run / "rl" / "manifest.json")
    c = m["counts"]
    assert c["prompts"] == 4 and c["generations_per_prompt"] == 2 and c["steps"] == 2
    # every sampled answer went to the judge: 4 prompts x 2 answers (the tiny judge rarely writes a score)
    assert c["judged_answers"] + c["unscored_answers"] == 8 and len(c["reward_history"]) == 2
    assert c["reward_judge"] == str(tiny_model)
    assert m["inputs"]["init"]["path"] == str(run / "sft")  # from the SFT checkpoint
    assert (run / "rl" / "model.safetensors").is_file() and not (run / "rl" / "trainer").exists()
    # what the reward depends on is in the key: another judge threshold is another checkpoint
    assert m["config"]["judge"]["threshold"] == 5.0 and m["config"]["rl"]["num_generations"] == 2
    dacli("train", *args, cwd=tmp_path)
    assert read_json(run / "rl" / "manifest.json") == m  # fresh: not trained again


@pytest.mark.slow  # ~35 s; the trainer's resume after SIGKILL is test_train's, on the same code path (fit.train_into)
def test_killed_rl_resumes_from_its_last_checkpoint(tiny_model, tmp_path):
    args = _args(tiny_model, tmp_path, "method.rl.epochs=8", "train.save_steps=3")
    dacli("generate", *args, cwd=tmp_path)
    trainer_dir = tmp_path / "runs" / "tiny-aft_cot_rl-4ex" / "checkpoints" / "rl.partial" / "trainer"
    kill_after(["train", *args], tmp_path, trainer_dir, "checkpoint-*/trainer_state.json", count=1, settle=0.3)
    saved = sorted(int(p.name.split("-")[1]) for p in trainer_dir.glob("checkpoint-*"))
    assert saved, "a checkpoint should exist before the kill"
    dacli("train", *args, cwd=tmp_path)
    c = read_json(tmp_path / "runs" / "tiny-aft_cot_rl-4ex" / "checkpoints" / "rl" / "manifest.json")["counts"]
    assert c["resumed_from_step"] >= saved[0] > 0 and c["steps"] == 16
