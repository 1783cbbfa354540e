"""A model that cannot be found or fetched is one `error:` line naming the config key, exit 2, before
any engine starts: a missing path, a directory without weights, a bad id, an unreachable hub, a hub
that says no (missing, gated), HF_HUB_OFFLINE without the cache; and `dacli config` checks the
same where no network is needed. The hub is a local fake, so these run the same with or without internet."""
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import dacli, tiny_overrides

CLOSED = "http://127.0.0.1:9"  # nothing listens there: an unreachable hub


class _Hub(BaseHTTPRequestHandler):
    """Answers the model-info call as the Hugging Face hub does for three repos."""

    def do_GET(self):
        name = self.path.split("?")[0].removeprefix("/api/models/")
        status, headers, body = {
            "org/present": (200, {}, {"id": "org/present", "sha": "0" * 40, "private": False, "siblings": []}),
            "org/gated": (403, {"X-Error-Code": "GatedRepo", "X-Error-Message": "gated"}, {"error": "gated"}),
        }.get(name, (404, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "not found"}, {"error": "not found"}))
        data = json.dumps(body).encode()
        self.send_response(status)
        for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)), **headers}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def hub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_") and "proxy" not in k.lower()}
    return dict(env, HF_HUB_CACHE=str(tmp_path / "hub-cache"), HF_HUB_DISABLE_TELEMETRY="1", **extra)


def _locate(value: str, tmp_path, **env) -> subprocess.CompletedProcess:
    code = ("import sys\nfrom deliberate_cli.errors import DacliError\nfrom deliberate_cli.models import locate\n"
            "try:\n    print('OK ' + locate(sys.argv[1], 'model.name_or_path'))\n"
            "except DacliError as e:\n    print('ERROR ' + str(e))\n")
    return subprocess.run([sys.executable, "-c", code, value], capture_output=True, text=True, timeout=120,
                          env=_env(tmp_path, **env))


def test_the_hub_is_asked_once_and_its_answers_become_one_line(hub, tmp_path):
    assert _locate("org/present", tmp_path, HF_ENDPOINT=hub).stdout.strip() == "OK org/present"
    missing = _locate("org/missing", tmp_path, HF_ENDPOINT=hub).stdout.strip()
    assert missing.startswith("ERROR model.name_or_path=org/missing: no such model on") and "log in" in missing
    gated = _locate("org/gated", tmp_path, HF_ENDPOINT=hub).stdout.strip()
    assert gated.startswith("ERROR model.name_or_path=org/gated is a gated model") and "hf auth login" in gated
    closed = _locate("org/present", tmp_path, HF_ENDPOINT=CLOSED).stdout.strip()
    assert closed.startswith(f"ERROR model.name_or_path=org/present: cannot reach the hub at {CLOSED}")
    assert "model=smollm2_135m" in closed  # what would work instead


def test_offline_mode_uses_the_cache_and_says_when_the_model_is_not_in_it(tmp_path):
    snapshot = tmp_path / "hub-cache" / "models--org--cached" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (snapshot / "model.safetensors").write_bytes(b"")
    (tmp_path / "hub-cache" / "models--org--cached" / "refs").mkdir()
    (tmp_path / "hub-cache" / "models--org--cached" / "refs" / "main").write_text("a" * 40)
    assert _locate("org/cached", tmp_path, HF_HUB_OFFLINE="1").stdout.strip() == "OK org/cached"
    out = _locate("org/elsewhere", tmp_path, HF_HUB_OFFLINE="1").stdout.strip()
    assert out.startswith("ERROR model.name_or_path=org/elsewhere is not in the hub cache") and "HF_HUB_OFFLINE=1" in out


def _one_error_line(proc, starts: str) -> str:
    """The one `error:` line a refused command printed (asserting there is exactly one, and no traceback)."""
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout
    assert len(errors) == 1 and errors[0].startswith(starts), proc.stderr
    return errors[0]


def test_each_stage_refuses_a_model_it_cannot_find_before_any_engine(tiny_model, tmp_path):
    args = tiny_overrides(tiny_model, tmp_path / "runs")
    env_run = lambda *a: subprocess.run([sys.executable, "-m", "deliberate_cli", *a], cwd=tmp_path,  # noqa: E731
                                        capture_output=True, text=True, timeout=300,
                                        env=_env(tmp_path, HF_ENDPOINT=CLOSED))
    _one_error_line(env_run("generate", *args, "model.name_or_path=/nonexistent"),
                    "error: model.name_or_path=/nonexistent: no such directory")
    (tmp_path / "no-weights").mkdir()
    (tmp_path / "no-weights" / "config.json").write_text("{}")
    _one_error_line(env_run("train", *args, f"model.name_or_path={tmp_path / 'no-weights'}"),
                    f"error: model.name_or_path={tmp_path / 'no-weights'} is not a model directory")
    _one_error_line(env_run("generate", *args, "model.name_or_path=Qwen/Qwen2.5-0.5B-Instruct"),
                    f"error: model.name_or_path=Qwen/Qwen2.5-0.5B-Instruct: cannot reach the hub at {CLOSED}")
    _one_error_line(env_run("generate", *args, "generator.model_path=org/a..b"),
                    "error: generator.model_path=org/a..b is neither a local directory nor a hub id")
    _one_error_line(env_run("eval", "am", *args, "eval.checkpoint=/no/such/ckpt"),
                    "error: eval.checkpoint=/no/such/ckpt: no such directory")
    grader = _one_error_line(env_run("eval", "am", *args, "eval.checkpoint=base", "eval.grader.enabled=true",
                                     "eval.grader.engine.backend=vllm", "eval.grader.engine.model_path=/no/grader"),
                             "error: eval.grader.engine.model_path=/no/grader: no such directory")
    assert "model=smollm2_135m" in grader  # every refusal says what would work


def test_config_checks_what_needs_no_network(tiny_model, tmp_path):
    for override, starts in [("model.name_or_path=/nonexistent", "error: model.name_or_path=/nonexistent: no such"),
                             (f"model.name_or_path={tmp_path}", f"error: model.name_or_path={tmp_path} is not a model"),
                             ("spec.path=/no/spec.yaml", "error: spec file not found: /no/spec.yaml"),
                             ("data.source=/no/prompts.jsonl", "error: data.source=/no/prompts.jsonl: no such file"),
                             ("judge.model_path=./judge", "error: judge.model_path=./judge: no such directory")]:
        _one_error_line(dacli("config", override, cwd=tmp_path, check=False), starts)
    # A hub id is not fetched to print a config: it passes offline.
    assert dacli("config", "model=qwen2_5_0_5b", cwd=tmp_path).returncode == 0
    assert dacli("config", f"model.name_or_path={tiny_model}", cwd=tmp_path).returncode == 0
