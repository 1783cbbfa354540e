"""The loss falls on exactly the right tokens: assistant CoT + answer for SFT, every token for midtrain."""
import pytest
from omegaconf import OmegaConf

from deliberate_cli.config import Config
from deliberate_cli.train import make_trainer, sft_example

REC = {"prompt": "How do I reset my router?", "cot": "OR1 applies: this is benign, help fully.",
       "response": "Hold the reset button for ten seconds."}


def _cfg():
    return OmegaConf.merge(OmegaConf.structured(Config), {"train": {"report_to": [], "batch_size": 2}})


def _labelled(trainer):
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
    return batch["input_ids"], batch["labels"]


@pytest.mark.parametrize("cot", [True, False])
def test_sft_labels_are_exactly_the_assistant_turn(cot, tiny_model, tmp_path):
    rows = [sft_example(REC, cot, "delimiter")]
    trainer = make_trainer(_cfg(), "sft", str(tiny_model), rows, tmp_path, max_length=512)
    tok = trainer.processing_class
    ids, labels = _labelled(trainer)
    trained = tok.decode([t for t, l in zip(ids[0].tolist(), labels[0].tolist()) if l != -100])
    masked = tok.decode([t for t, l in zip(ids[0].tolist(), labels[0].tolist()) if l == -100])
    expected = (f"<think>\n{REC['cot']}\n</think>\n\n" if cot else "") + REC["response"] + "<|im_end|>"
    assert trained.rstrip("\n") == expected
    assert REC["prompt"] in masked and "<|im_start|>assistant" in masked
    assert REC["cot"] not in masked


def test_midtrain_loss_covers_every_document_token(tiny_model, tmp_path):
    doc = "An essay on AG1: an assistant accepts correction, because humans must stay able to fix it."
    trainer = make_trainer(_cfg(), "midtrain", str(tiny_model), [{"text": doc}], tmp_path, max_length=512)
    ids, labels = _labelled(trainer)
    assert (labels[0] != -100).all()
    assert trainer.processing_class.decode(ids[0]).startswith(doc)


def test_reasoning_content_format_hands_cot_to_the_template():
    ex = sft_example(REC, True, "reasoning_content")
    assert ex["completion"][0] == {"role": "assistant", "content": REC["response"], "reasoning_content": REC["cot"]}
    assert ex["prompt"] == [{"role": "user", "content": REC["prompt"]}]


# A chat template in the style of Qwen3's (written for this test): the assistant's `reasoning_content`
# is rendered as a <think> block before its content, as the model will produce it at eval time.
THINKING_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['role'] == 'assistant' and m.get('reasoning_content') %}"
    "<think>\n{{ m['reasoning_content'] }}\n</think>\n\n{% endif %}"
    "{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_reasoning_content_cot_lands_in_the_templates_think_block(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    model = tmp_path / "thinker"
    tok = AutoTokenizer.from_pretrained(tiny_model)
    tok.chat_template = THINKING_TEMPLATE
    tok.save_pretrained(model)
    for f in tiny_model.iterdir():
        if not (model / f.name).exists():
            (model / f.name).symlink_to(f)
    rows = [sft_example(REC, True, "reasoning_content")]
    trainer = make_trainer(_cfg(), "sft", str(model), rows, tmp_path / "out", max_length=512)
    ids, labels = _labelled(trainer)
    trained = tok.decode([t for t, l in zip(ids[0].tolist(), labels[0].tolist()) if l != -100])
    assert trained.rstrip("\n") == f"<think>\n{REC['cot']}\n</think>\n\n{REC['response']}<|im_end|>"


def test_warmup_ratio_becomes_that_share_of_the_training_steps(tiny_model, tmp_path):
    """train.warmup_ratio is passed as a float warmup_steps, which transformers >= 5 (pyproject's lower
    bound) reads as a ratio; a 4.x Trainer would read it as 0.05 of one step, i.e. no warmup."""
    cfg = OmegaConf.merge(_cfg(), {"train": {"warmup_ratio": 0.25}})
    trainer = make_trainer(cfg, "sft", str(tiny_model), [sft_example(REC, False, "delimiter")], tmp_path, max_length=512)
    assert trainer.args.get_warmup_steps(40) == 10 and trainer.args.get_warmup_steps(3) == 1
