"""What a stage used, for its manifests: the requests and tokens of every model it asked (count(),
called by every backend that backends.open_backend opens), peak CPU memory (RSS summed over the stage process and its
children: vLLM's engine core, accelerate's ranks) and peak GPU memory, sampled twice a second by a
daemon thread that pipeline.run_stage starts.

GPU memory is read through NVML (the `nvidia-ml-py` package, which the GPU install of vLLM brings), so
this process never opens a CUDA context of its own: the memory of this stage's processes when NVML
can attribute it, else all memory in use on the visible GPUs (`gpu_measured` says which). Without
NVML or a GPU the GPU fields are null.
"""
import os
import threading
import time
from contextlib import contextmanager
from typing import Any, Dict, List, Optional

_peak: Dict[str, Any] = {"cpu_rss_gb": 0.0, "gpu_gb": None, "gpu_measured": None, "gpus": None}
_thread: Optional[threading.Thread] = None
_GB = 1024 ** 3
_frames: List[Dict[str, Dict[str, Any]]] = [{}]  # the process's own, then one per store entry being built
_models_lock = threading.Lock()


def count(role: str, model: str, requests: int, input_tokens: int, output_tokens: int) -> None:
    """Add what one batch of requests to `model`, playing `role` (generator, judge, eval, grader,
    monitor), cost, to the innermost store entry being built."""
    with _models_lock:
        row = _frames[-1].setdefault(f"{role}:{model}", {"role": role, "model": model, "requests": 0,
                                                         "input_tokens": 0, "output_tokens": 0})
        row["requests"] += requests
        row["input_tokens"] += input_tokens
        row["output_tokens"] += output_tokens


def current() -> List[Dict[str, Any]]:
    """What the innermost frame has counted so far."""
    with _models_lock:
        return [dict(r) for r in _frames[-1].values()]


@contextmanager
def frame():
    """Count the requests made inside into a list of its own (one row per role and model), apart from
    any enclosing frame's: an entry built inside another's build is counted in its own manifest only,
    so that totals over manifests count every request once."""
    rows: List[Dict[str, Any]] = []
    with _models_lock:
        _frames.append({})
    try:
        yield rows
    finally:
        with _models_lock:
            rows.extend(_frames.pop().values())


def start(interval: float = 0.5) -> None:
    global _thread
    if _thread is not None:
        return

    def loop():
        while True:
            _sample()
            time.sleep(interval)

    _thread = threading.Thread(target=loop, name="dacli-usage", daemon=True)
    _thread.start()


def peak() -> Optional[Dict[str, Any]]:
    """The peaks so far (None outside a stage), and the GPUs this stage was given: its
    CUDA_VISIBLE_DEVICES, as a launcher that assigns GPUs (hydra/launcher=ray) set it, or null."""
    if _thread is None:
        return None
    _sample()
    return {**{k: (round(v, 3) if isinstance(v, float) else v) for k, v in _peak.items()},
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}


def _sample() -> None:
    import psutil

    try:
        me = psutil.Process()
        procs = [me, *me.children(recursive=True)]
    except psutil.Error:
        return
    rss, pids = 0, set()
    for p in procs:
        try:
            rss += p.memory_info().rss
            pids.add(p.pid)
        except psutil.Error:
            pass
    _peak["cpu_rss_gb"] = max(_peak["cpu_rss_gb"], rss / _GB)
    gpu = _gpu(pids)
    if gpu is not None:
        used, measured, names = gpu
        _peak["gpu_gb"] = max(_peak["gpu_gb"] or 0.0, used / _GB)
        _peak["gpu_measured"], _peak["gpus"] = measured, names


_nvml = None


def _gpu(pids):
    """(bytes used, "processes" | "device", GPU names) on the visible GPUs, or None without NVML."""
    global _nvml
    if _nvml is False:
        return None
    try:
        if _nvml is None:
            import pynvml

            pynvml.nvmlInit()
            _nvml = pynvml
        handles = [_nvml.nvmlDeviceGetHandleByIndex(i) for i in _visible(_nvml.nvmlDeviceGetCount())]
        names = sorted({str(_nvml.nvmlDeviceGetName(h)) for h in handles})
        ours = sum(p.usedGpuMemory or 0 for h in handles for p in _nvml.nvmlDeviceGetComputeRunningProcesses(h)
                   if p.pid in pids)
        if ours:
            return ours, "processes", names
        return sum(_nvml.nvmlDeviceGetMemoryInfo(h).used for h in handles), "device", names
    except Exception:  # no NVML, no driver, no GPU: nothing to measure
        _nvml = False
        return None


def _visible(count: int):
    ids = [int(i) for i in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if i.strip().isdigit()]
    return [i for i in ids if i < count] or range(count)  # unset, or GPU UUIDs: every GPU
