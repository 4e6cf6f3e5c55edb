"""`make run` on a fresh checkout: the example config starts with no keys set, keeps
spend in a SQLite file, and `gatewise spend` reads it (also before any request)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson

from tests.test_cli import _free_port, _get

EXAMPLE = Path(__file__).parents[1] / "proxy.example.yaml"
ENV = {"PATH": "/usr/bin:/bin"}


def gatewise(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "proxy", *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=30)


def test_fresh_checkout_keeps_spend_and_gatewise_spend_shows_it(tmp_path):
    shutil.copy(EXAMPLE, tmp_path / "proxy.example.yaml")
    done = gatewise(tmp_path, "spend", "--config", "proxy.example.yaml")
    assert done.returncode == 0, done.stderr  # nothing recorded yet: an empty table
    assert done.stdout.splitlines()[-1].split() == ["TOTAL", "0", "0.000000"]
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--config",
                             "proxy.example.yaml", "--port", str(port)], cwd=tmp_path,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                _get(f"http://127.0.0.1:{port}/health/live")
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline, "gatewise did not start"
                time.sleep(0.05)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions", method="POST",
            data=orjson.dumps({"model": "echo", "messages": [{"role": "user", "content": "hi"}]}),
            headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert resp.status == 200
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert "Traceback" not in err and "in memory only" not in err
    assert (tmp_path / "gatewise-ledger.db").exists()
    done = gatewise(tmp_path, "spend", "--config", "proxy.example.yaml", "--by", "model")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[2].split()[:2] == ["echo", "1"]
    assert lines[-1].split()[:2] == ["TOTAL", "1"]
