"""The OpenAI-compatible backend against a real `vllm serve` (vLLM's API server) on loopback."""
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pyarrow.parquet as pq
import pytest

from conftest import dacli, tiny_overrides


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(tiny_model, tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", VLLM_LOGGING_LEVEL="WARNING")
    with log.open("w") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_model),
             "--host", "127.0.0.1", "--port", str(port), "--enforce-eager", "--max-model-len", "2048",
             "--gpu-memory-utilization", "0.3"], stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 240
        while True:
            try:
                urllib.request.urlopen(f"{url}/models", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"vLLM server did not start:\n{log.read_text()[-3000:]}")
                time.sleep(1)
        yield url
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=60)


@pytest.mark.slow  # a real `vllm serve` on a CPU (~50 s); the OpenAI protocol itself is tested against
# conftest.ChatServer in the judge, grader and monitor tests
def test_generate_and_judge_over_http(vllm_server, tiny_model, tmp_path, monkeypatch):
    secret = "sk-dacli-test-secret-do-not-store"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    args = tiny_overrides(tiny_model, tmp_path / "runs", "method=aft_cot", "generator.backend=openai",
                          f"generator.base_url={vllm_server}", "generator.samples_per_prompt=2",
                          "judge=vllm", "judge.backend=openai", f"judge.base_url={vllm_server}", "judge.threshold=0",
                          "data.max_prompts=8")
    # The tiny random judge rarely writes a score it can read: of 8 examples asked for, the first 8
    # prompts keep what they keep, and a short count is one line naming the judge's reasons
    proc = dacli("generate", *args, cwd=tmp_path, check=False)
    out = proc.stdout
    kept_all = proc.returncode == 0
    assert kept_all or (proc.returncode == 2 and "data.max_prompts=8 reached; rejected: " in proc.stderr)
    data = tmp_path / "runs" / "tiny-aft_cot-8ex" / "data" / "aft"
    rows = pq.read_table(data / "aft.parquet").to_pylist() + pq.read_table(data / "rejects.parquet").to_pylist()
    assert len(rows) == 16  # 8 prompts x 2 samples: kept, or rejected with a reason (not_best_of_k included)
    assert sum(r["judge_verdict"] == "keep" for r in rows) <= 8
    assert all(r["cot"] or r["judge_verdict"] != "keep" for r in rows)
    judged = [r for r in rows if r["judge"] is not None]
    assert judged and all(r["judge"] == str(tiny_model) for r in judged)
    assert {r["judge_verdict"] for r in judged} <= {"keep", "judge_unparsable", "judge_below_threshold"}
    # The key came from the environment and went nowhere on disk.
    for path in (tmp_path / "runs").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert "aft" in out
