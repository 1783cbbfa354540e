"""A LoRA checkpoint is served as an adapter on its base (vLLM enable_lora, no merge step) and scores
text as the merged weights do; engines that cannot serve adapters get the merged copy."""
import json
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from deliberate_cli.config import EngineConfig
from deliberate_cli.errors import DacliError
from deliberate_cli.models import servable

# Runs one engine in its own process (vLLM does not free memory) and prints, per prompt, the log-
# probabilities of the 20 likeliest first tokens: two engines that apply the same weights agree on them
# to float error, where greedy samples could part at a near-tie later on. (float32: in bfloat16 the
# merged weights are rounded where the adapter's are not. vLLM CPU cannot combine LoRA with
# prompt_logprobs, which would have scored whole texts.)
SERVE = """
import json, sys
from omegaconf import OmegaConf
from vllm import SamplingParams
from deliberate_cli.backends import open_backend
from deliberate_cli.config import EngineConfig, ModelConfig

def main():
    path, lora = sys.argv[1], sys.argv[2]
    engine = OmegaConf.merge(OmegaConf.structured(EngineConfig), {"backend": "vllm", "lora": lora,
        "dtype": "float32", "enforce_eager": True, "gpu_memory_utilization": 0.3, "cpu_kvcache_gb": 1})
    model = OmegaConf.merge(OmegaConf.structured(ModelConfig), {"name": "tiny", "max_model_len": 1024})
    backend = open_backend(engine, path, model, role="eval")
    convs = [[{"role": "user", "content": f"Tell me about topic {i}, in a few words."}] for i in range(6)]
    outs = backend.llm.chat(convs, SamplingParams(max_tokens=1, temperature=0.0, logprobs=20),
                            lora_request=backend.lora_request, use_tqdm=False)
    print("LOGPROBS " + json.dumps([{str(t): lp.logprob for t, lp in o.outputs[0].logprobs[0].items()} for o in outs]))

if __name__ == "__main__":
    main()
"""


@pytest.fixture(scope="module")
def adapter(tiny_model, tmp_path_factory):
    """A rank-8 adapter on every linear layer of the tiny model, with B drawn at random (a trained
    adapter's B is not zero) so that it changes the answers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("adapter")
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                           LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    torch.manual_seed(1)
    for name, weight in model.named_parameters():
        if "lora_B" in name:
            weight.data.normal_(0, 0.5)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(out)
    return out


def _logprobs(path, lora: str, cwd) -> list:
    proc = subprocess.run([sys.executable, "-c", SERVE, str(path), lora], capture_output=True, text=True,
                          cwd=cwd, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("LOGPROBS ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("LOGPROBS "):])


def _largest_gap(a: list, b: list) -> float:
    """The largest difference between two engines' log-probabilities of the same first tokens (a token
    in one's top 20 and not the other's counts as a gap of 10)."""
    gaps = []
    for x, y in zip(a, b):
        common = x.keys() & y.keys()
        gaps += [abs(x[t] - y[t]) for t in common] + [10.0] * min(len(x.keys() ^ y.keys()), 1)
    return max(gaps)


@pytest.mark.slow  # two vLLM engines on a CPU (~110 s); `make test-slow` runs it
def test_vllm_serves_the_adapter_without_merging_and_scores_as_the_merged_weights(adapter, tiny_model, tmp_path):
    served = _logprobs(adapter, "adapter", tmp_path)
    assert not (adapter / "merged").exists()  # served on its base: no merge step
    merged = _logprobs(adapter, "merged", tmp_path)
    assert (adapter / "merged" / "config.json").is_file()
    base = _logprobs(tiny_model, "auto", tmp_path)
    assert _largest_gap(served, merged) < 1e-2  # the same weights: float error only
    assert _largest_gap(served, base) > 0.5  # and the adapter is applied (its B is far from zero)


def _engine(**kw):
    return OmegaConf.merge(OmegaConf.structured(EngineConfig), kw)


def test_auto_serves_adapters_on_gpus_and_merges_elsewhere(adapter, tiny_model):
    import torch

    merged = (str(adapter / "merged"), None)
    served = (str(tiny_model), str(adapter))
    assert servable(_engine(backend="vllm"), str(adapter)) == (served if torch.cuda.is_available() else merged)
    assert servable(_engine(backend="vllm", lora="adapter"), str(adapter)) == served
    assert servable(_engine(backend="vllm", lora="merged"), str(adapter)) == merged
    assert servable(_engine(backend="vllm"), str(tiny_model)) == (str(tiny_model), None)
    assert servable(_engine(backend="transformers"), str(adapter)) == merged
    with pytest.raises(DacliError, match="cannot be served as an adapter by backend transformers"):
        servable(_engine(backend="transformers", lora="adapter"), str(adapter))
    with pytest.raises(DacliError, match="must be auto, adapter or merged"):
        servable(_engine(backend="vllm", lora="yes"), str(adapter))
