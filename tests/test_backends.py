"""Both engines behind the one interface, on the tiny model: n completions, token counts, prefixes."""
import pytest
from omegaconf import OmegaConf

from deliberate_cli.backends import Sampling, open_backend
from deliberate_cli.config import EngineConfig, ModelConfig

CONVS = [[{"role": "user", "content": "Say hello."}],
         [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour, please."}]]


def _engine(backend):
    return OmegaConf.merge(OmegaConf.structured(EngineConfig),
                           {"backend": backend, "enforce_eager": True, "gpu_memory_utilization": 0.3,
                            "cpu_kvcache_gb": 1, "batch_size": 2})


@pytest.mark.parametrize("backend", ["transformers", "vllm"])
def test_backend_chat_and_continuation(backend, tiny_model):
    model_cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), {"name": "tiny", "max_model_len": 1024})
    engine = open_backend(_engine(backend), str(tiny_model), model_cfg, role="eval")
    try:
        outs = engine.chat(CONVS, Sampling(max_tokens=8, temperature=1.0, n=3, seed=1))
        assert [len(o) for o in outs] == [3, 3]
        for completions in outs:
            for c in completions:
                assert 0 < c.completion_tokens <= 8 and c.prompt_tokens > 5
                assert c.finish_reason in ("stop", "length")
        # A random model at temperature 1 almost never repeats itself across three samples.
        assert len({c.text for c in outs[0]}) > 1
        # Continuing an assistant prefix: the prompt grows by the prefix and the model carries on from it.
        cont = engine.chat([CONVS[0] + [{"role": "assistant", "content": "<think>\nI should"}]],
                           Sampling(max_tokens=4, temperature=0.0))
        assert cont[0][0].prompt_tokens > outs[0][0].prompt_tokens
        assert cont[0][0].completion_tokens <= 4
        # A prompt longer than the context is answered with "overflow", and the rest of the batch still runs.
        huge = [{"role": "user", "content": "word " * 1500}]
        outs = engine.chat([huge, CONVS[0]], Sampling(max_tokens=4, temperature=0.0))
        assert outs[0][0].finish_reason == "overflow" and outs[0][0].completion_tokens == 0
        assert outs[1][0].finish_reason in ("stop", "length") and outs[1][0].completion_tokens > 0
    finally:
        engine.close()
