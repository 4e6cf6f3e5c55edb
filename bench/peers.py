"""Peers in the same interleaved run: LiteLLM's proxy and Portkey's gateway, each
installed on first use into bench/.peers/ (LiteLLM into its own virtualenv from
PyPI, `litellm[proxy]`; Portkey from the npm registry, `@portkey-ai/gateway`),
pointed at the same nginx upstream and pinned to the proxy's core like floor
and gatewise. `bench/run.py --peers` (or `make bench-peers`) adds them; a peer
that cannot be installed or started is a skipped target with its reason.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from common import KEY, Upstream
from procs import Target, free_port, wait_port

PEERS_DIR = Path(__file__).resolve().parent / ".peers"
LITELLM_SPEC = "litellm[proxy]"
PORTKEY_SPEC = "@portkey-ai/gateway"
# the bench's model names (bench/configs/*) → the nginx location that answers them
LOCATIONS = {"bench-json": "{fmt}-json", "bench-sse": "{fmt}-sse",
             "bench-json-60": "lat60/openai-json"}
# LiteLLM refuses to start without a master key: the bench's client key is it
LITELLM_KEY = KEY
UPSTREAM_MODEL = {"openai": "openai/gpt-4o-mini",
                  "anthropic": "anthropic/claude-3-5-haiku-20241022"}


def _install(cmd: list[str], marker: Path, log: Path) -> str | None:
    """Runs `cmd` once (until `marker` exists); None on success, else why not."""
    if marker.exists():
        return None
    with log.open("ab") as out:
        rc = subprocess.run(cmd, stdout=out, stderr=out, check=False, timeout=1800).returncode
    if rc != 0 or not marker.exists():
        tail = log.read_text(errors="replace")[-300:]
        return f"install failed ({' '.join(cmd[:3])}…, rc {rc}): {tail}"
    return None


def install_litellm() -> tuple[Path, str | None]:
    venv = PEERS_DIR / "litellm"
    exe = venv / "bin" / "litellm"
    PEERS_DIR.mkdir(exist_ok=True)
    if not (venv / "bin" / "pip").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=False)
    return exe, _install([str(venv / "bin" / "pip"), "install", "-q", LITELLM_SPEC], exe,
                         PEERS_DIR / "litellm-install.log")


def install_portkey() -> tuple[Path, str | None]:
    prefix = PEERS_DIR / "portkey"
    entry = prefix / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    PEERS_DIR.mkdir(exist_ok=True)
    return entry, _install(["npm", "install", "--no-audit", "--no-fund", "--prefix",
                            str(prefix), PORTKEY_SPEC], entry, PEERS_DIR / "portkey-install.log")


def litellm_config(fmt: str, up: Upstream, workdir: Path) -> Path:
    models = []
    for name, location in LOCATIONS.items():
        loc = location.format(fmt=fmt)
        base = f"{up.url}/{loc}/v1" if fmt == "openai" else f"{up.url}/{loc}/v1/messages"
        models.append({"model_name": name, "litellm_params": {
            "model": UPSTREAM_MODEL[fmt], "api_base": base, "api_key": "bench-not-a-real-key"}})
    path = workdir / f"litellm-{fmt}.json"  # YAML is a superset of JSON
    path.write_text(json.dumps({"model_list": models,
                                "general_settings": {"master_key": LITELLM_KEY},
                                "litellm_settings": {"drop_params": True,
                                                     "telemetry": False}}))
    return path


def _start(name: str, cmd: list[str], port: int, cpu: str, workdir: Path,
           env: dict[str, str] | None = None) -> Target:
    err = workdir / f"{name}.stderr"
    proc = subprocess.Popen(["taskset", "-c", cpu, *cmd], stdout=subprocess.DEVNULL,
                            stderr=err.open("wb"), env=env)
    try:
        wait_port(port, proc, timeout=120.0)  # LiteLLM imports for tens of seconds
    except RuntimeError as exc:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        return Target(name, "", skipped=f"did not start: {exc}: "
                      f"{err.read_text(errors='replace')[-300:]}")
    return Target(name, f"http://127.0.0.1:{port}", proc, proc.pid, stderr_path=err)


def start_peers(fmt: str, up: Upstream, cpu: str, workdir: Path, env: dict[str, str],
                wanted: set[str] | None) -> list[Target]:
    targets = []
    if not wanted or "litellm" in wanted:
        exe, why = install_litellm()
        if why:
            targets.append(Target("litellm", "", skipped=why))
        else:
            port = free_port()
            cfg = litellm_config(fmt, up, workdir)
            targets.append(_start("litellm", [str(exe), "--config", str(cfg), "--host",
                                              "127.0.0.1", "--port", str(port), "--num_workers",
                                              "1"], port, cpu, workdir,
                                  {**env, "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False"}))
    if not wanted or "portkey" in wanted:
        entry, why = install_portkey()
        if why:
            targets.append(Target("portkey", "", skipped=why))
        else:
            port = free_port()
            t = _start("portkey", ["node", str(entry), f"--port={port}", "--headless"], port,
                       cpu, workdir, env)
            t.extra["headers"] = lambda sc: {  # Portkey routes by request headers
                "x-portkey-provider": sc.fmt,
                "x-portkey-custom-host": f"{up.url}/{sc.location}/v1"}
            targets.append(t)
    return targets
