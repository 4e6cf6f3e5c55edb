"""The `gatewise` command, run as a real subprocess (`python -m proxy`)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson

ROOT = Path(__file__).parents[1]
EXAMPLE = ROOT / "proxy.example.yaml"


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "proxy", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=30)


def test_check_prints_models_and_targets():
    done = run("check", "--config", str(EXAMPLE), env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "OK" in out and "5 provider(s), 6 model(s)" in out
    assert "model echo [priority] -> offline/echo" in out
    assert "model gpt-4o-mini [priority] -> openai/gpt-4o-mini" in out
    assert "DISABLED (environment variable OPENAI_API_KEY is not set)" in out
    assert "model smart [cheapest] -> openai/gpt-4o-mini, gemini/gemini-2.5-flash; " \
        "fallbacks: claude-sonnet, echo" in out
    assert done.stderr == ""


def test_check_bad_config_exits_2_one_line_per_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers: {x: {type: azur}}\n"
                   "models: {gpt-4o: {targets: [{provider: x, model: a}, "
                   "{provider: azure-us, model: b}]}}\n"
                   "colour: blue\n")
    done = run("check", "--config", str(bad))
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines[0] == f"gatewise: {bad}: the config has 3 problem(s):"
    assert lines[1].startswith("  providers.x.type: unknown provider type 'azur'")
    assert lines[2:] == ["  models.gpt-4o.targets[1].provider: unknown provider 'azure-us'",
                         "  colour: unknown field"]
    assert "Traceback" not in done.stderr


def test_check_missing_file_exits_2(tmp_path):
    done = run("check", "--config", str(tmp_path / "absent.yaml"))
    assert done.returncode == 2
    assert "cannot read config file" in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_bad_config_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers: [\n")
    done = run("serve", "--config", str(bad), "--port", "0")
    assert done.returncode == 2
    assert "invalid YAML" in done.stderr and "Traceback" not in done.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return resp.status, resp.read()


def test_serve_example_config_answers_health_live(tmp_path):
    port = _free_port()
    proc = subprocess.Popen(  # in a directory of its own: the example's ledger file goes there
        [sys.executable, "-m", "proxy", "serve", "--config", str(EXAMPLE), "--port", str(port)],
        cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                status, body = _get(f"http://127.0.0.1:{port}/health/live")
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline, "gatewise did not start"
                time.sleep(0.05)
        assert status == 200 and orjson.loads(body) == {"status": "ok"}
        status, body = _get(f"http://127.0.0.1:{port}/v1/models")
        assert [m["id"] for m in orjson.loads(body)["data"]] == [
            "echo", "gpt-4o-mini", "claude-sonnet", "gemini-flash", "deepseek-chat", "smart"]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert proc.returncode in (0, -15)
    assert "OPENAI_API_KEY" in err  # the one warning naming the unset variable
    assert "Traceback" not in err
