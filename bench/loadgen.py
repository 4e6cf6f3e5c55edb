"""wrk runs (closed-model load at a fixed number of connections) and a one-shot sanity request."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

LUA = Path(__file__).resolve().parent / "chat.lua"


def run_wrk(url: str, conns: int, seconds: int, body: Path, cpu: str, key: str = "",
            body2: Path | None = None, headers: dict[str, str] | None = None) -> dict:
    """One wrk run on `cpu`; returns its summary plus `rps`. Raises if wrk printed none."""
    env = {**os.environ, "BENCH_BODY": str(body), "BENCH_KEY": key,
           "BENCH_BODY2": str(body2) if body2 else "",
           "BENCH_HEADERS": "\n".join(f"{k}: {v}" for k, v in (headers or {}).items())}
    cmd = ["taskset", "-c", cpu, "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "10s",
           "-s", str(LUA), url]
    out = subprocess.run(cmd, env=env, check=False, capture_output=True, text=True,
                         timeout=seconds + 120)
    lines = [line for line in out.stdout.splitlines() if line.startswith("BENCH_JSON ")]
    if not lines:
        raise RuntimeError(f"wrk gave no summary (rc {out.returncode}): {out.stdout[-300:]}"
                           f"{out.stderr[-300:]}")
    data = json.loads(lines[-1][len("BENCH_JSON "):])
    data["rps"] = data["requests"] / (data["duration_us"] / 1e6)
    data["error_count"] = sum(data["errors"].values())
    return data


def sanity(url: str, body: Path, key: str, stream: bool, fmt_out: str,
           extra: dict[str, str] | None = None) -> str | None:
    """None if one request gets a 200 in the expected shape, else why not."""
    headers = {"content-type": "application/json", **(extra or {})}
    if key:
        headers["authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=body.read_bytes(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, text = resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return f"HTTP {err.code}: {err.read().decode(errors='replace')[:200]}"
    except (urllib.error.URLError, OSError) as err:
        return f"request failed: {err}"
    marker = {("openai", True): "data: [DONE]", ("openai", False): '"choices"',
              ("anthropic", True): "message_stop", ("anthropic", False): '"content"'}[(fmt_out, stream)]
    if status != 200 or marker not in text:
        return f"HTTP {status}, no {marker!r} in the answer: {text[:200]}"
    return None
