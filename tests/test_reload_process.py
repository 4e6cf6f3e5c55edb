"""Reload in real processes: SIGHUP and `--watch` on `gatewise serve`, and SIGHUP to
the supervisor of `--workers 2` reloading every worker."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.test_redis_stores import free_port, require
from tests.test_scaleout import listening_pids

ROOT = Path(__file__).resolve().parent.parent


def write(path: Path, target: str, state: str = "") -> None:
    path.write_text(f"""
telemetry: {{log_format: text}}
providers: {{a: {{type: mock}}, b: {{type: mock}}}}
models: {{m: {{targets: [{{provider: {target}, model: echo}}]}}}}
{state}
""")


def serve(path: Path, port: int, *extra: str) -> subprocess.Popen:
    with open(path.parent / "gatewise.log", "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--config", str(path),
                                 "--port", str(port), *extra], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=log)


def target(port: int) -> str | None:
    """The target a fresh connection is served by (None while nothing listens)."""
    try:
        with requests.Session() as http:
            resp = http.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=5, json={
                "model": "m", "messages": [{"role": "user", "content": "hi"}]},
                headers={"connection": "close"})
            return resp.headers.get("x-gatewise-target")
    except requests.ConnectionError:
        return None


def eventually(check, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def log_of(path: Path) -> str:
    return (path.parent / "gatewise.log").read_text()


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0


def test_sighup_reloads_and_a_bad_file_leaves_the_process_serving(tmp_path):
    path, port = tmp_path / "gatewise.yaml", free_port()
    write(path, "a")
    proc = serve(path, port)
    try:
        eventually(lambda: target(port) == "a/echo")
        write(path, "b")
        proc.send_signal(signal.SIGHUP)
        eventually(lambda: target(port) == "b/echo", 3.0)
        path.write_text("models: [\n")
        proc.send_signal(signal.SIGHUP)
        eventually(lambda: "config reload (SIGHUP) refused" in log_of(path), 3.0)
        assert proc.poll() is None and target(port) == "b/echo"
        assert "invalid YAML" in log_of(path)
    finally:
        stop(proc)


def test_watch_follows_the_file_even_when_it_vanishes(tmp_path):
    path, port = tmp_path / "gatewise.yaml", free_port()
    write(path, "a")
    proc = serve(path, port, "--watch")
    try:
        eventually(lambda: target(port) == "a/echo")
        write(path, "b")
        eventually(lambda: target(port) == "b/echo", 5.0)
        path.unlink()
        eventually(lambda: "cannot read config file" in log_of(path), 5.0)
        assert target(port) == "b/echo"
        write(path, "a")
        eventually(lambda: target(port) == "a/echo", 5.0)
        assert log_of(path).count("config reload (file changed): applied") == 2
    finally:
        stop(proc)


def test_sighup_to_the_supervisor_reloads_every_worker(tmp_path):
    require("127.0.0.1", 6379, "Redis")
    state = (f'state: {{backend: redis, url: "redis://127.0.0.1:6379/0", '
             f'prefix: "gwtest-{uuid.uuid4().hex[:10]}:", instances: 2}}')
    path, port = tmp_path / "gatewise.yaml", free_port()
    write(path, "a", state)
    proc = serve(path, port, "--workers", "2")
    try:
        eventually(lambda: len(listening_pids(port)) == 2, 20.0)  # both started
        write(path, "b", state)
        proc.send_signal(signal.SIGHUP)
        eventually(lambda: log_of(path).count("config reload (SIGHUP): applied") == 2, 5.0)
        assert {target(port) for _ in range(20)} == {"b/echo"}
        assert proc.poll() is None
    finally:
        stop(proc)


@pytest.fixture(autouse=True)
def _no_requests_proxy(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)


def test_a_sighup_while_starting_is_not_fatal_and_is_honoured(tmp_path):
    path, port = tmp_path / "gatewise.yaml", free_port()
    write(path, "a")
    proc = serve(path, port)
    try:
        # its first line is out (SIGHUP is in gatewise's hands), the gateway not yet serving
        eventually(lambda: f"on http://127.0.0.1:{port} " in log_of(path))
        write(path, "b")
        proc.send_signal(signal.SIGHUP)
        eventually(lambda: target(port) == "b/echo")
        assert proc.poll() is None
    finally:
        stop(proc)


def test_a_storm_of_sighups_makes_a_few_reloads(tmp_path):
    path, port = tmp_path / "gatewise.yaml", free_port()
    write(path, "a")
    proc = serve(path, port)
    try:
        eventually(lambda: target(port) == "a/echo")
        write(path, "b")
        for _ in range(50):
            proc.send_signal(signal.SIGHUP)
        eventually(lambda: target(port) == "b/echo", 3.0)
        time.sleep(0.5)
        log = log_of(path)
        assert log.count("config reload (SIGHUP): applied") == 1
        assert log.count("config reload (SIGHUP)") <= 3  # the rest shared a run
        assert proc.poll() is None
    finally:
        stop(proc)


def test_watch_follows_a_secret_file(tmp_path):
    path, port = tmp_path / "gatewise.yaml", free_port()
    secret = tmp_path / "openai.key"
    secret.write_text("sk-first-secret-0123456789\n")
    path.write_text("""
telemetry: {log_format: text}
providers:
  a: {type: mock}
  o: {type: openai, base_url: "http://127.0.0.1:9/v1", api_key: "${file:openai.key}"}
models: {m: {targets: [{provider: a, model: echo}]}}
""")
    proc = serve(path, port, "--watch")
    try:
        eventually(lambda: target(port) == "a/echo")
        secret.write_text("sk-second-secret-0123456789\n")
        eventually(lambda: "config reload (file changed): applied" in log_of(path), 5.0)
        log = log_of(path)
        assert "providers ~o" in log
        assert "sk-first-secret" not in log and "sk-second-secret" not in log
    finally:
        stop(proc)


def test_a_public_bind_with_keys_only_in_the_key_api_starts_and_asks_for_one(tmp_path):
    path, port = tmp_path / "gatewise.yaml", free_port()
    path.write_text(f"""
telemetry: {{log_format: text}}
state: {{ledger: "sqlite:{tmp_path / 'ledger.db'}"}}
providers: {{a: {{type: mock}}}}
models: {{m: {{targets: [{{provider: a, model: echo}}]}}}}
""")
    made = subprocess.run([sys.executable, "-m", "proxy", "keys", "create", "app", "--config",
                           str(path), "--json"], cwd=ROOT, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    proc = serve(path, port, "--host", "0.0.0.0")
    try:
        eventually(lambda: live(port) or proc.poll() is not None)
        assert proc.poll() is None, log_of(path)  # started: the key API holds a key
        with requests.Session() as http:
            resp = http.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=5,
                             json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
        assert resp.status_code == 401
    finally:
        stop(proc)


def live(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/health/live", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False
