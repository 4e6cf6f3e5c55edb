"""Claude Code pointed at gatewise with ANTHROPIC_BASE_URL answers a one-shot prompt
(`claude -p`) through the offline mock. Skipped when Claude Code is not installed:
`npm install @anthropic-ai/claude-code` and put `claude` on PATH, or set
CLAUDE_CODE_BIN to the binary."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess

import pytest

from proxy.server.gateway import GATEWAY

KEY = "claude-code-key-0123456789"


def _claude() -> str | None:
    path = os.environ.get("CLAUDE_CODE_BIN") or shutil.which("claude")
    if not path:
        return None
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return path if "Claude Code" in out.stdout else None


CLAUDE = _claude()
pytestmark = pytest.mark.skipif(CLAUDE is None, reason="Claude Code is not installed")


async def test_claude_p_answers_through_the_mock(start_gateway, tmp_path):
    gw = await start_gateway(f"""
        providers: {{offline: {{type: mock}}}}
        models:
          local-echo: {{targets: [{{provider: offline, model: echo}}]}}
        keys: [{{name: claude-code, key: {KEY}}}]
    """)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path),
           "ANTHROPIC_BASE_URL": gw.url, "ANTHROPIC_API_KEY": KEY,
           "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1"}
    proc = await asyncio.create_subprocess_exec(
        CLAUDE, "-p", "say hello to the gateway", "--model", "local-echo", env=env,
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 45)
    finally:
        if proc.returncode is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()
    assert "say hello to the gateway" in out.decode()  # the mock echoes the prompt
    metrics = gw.app[GATEWAY].metrics.requests.values
    assert any(labels[0] == "messages" and labels[1] == "local-echo" and labels[3] == "200"
               for labels in metrics)
