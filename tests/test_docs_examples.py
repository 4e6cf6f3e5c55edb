"""Every YAML block in docs/routing.md is a whole config that `gatewise check` accepts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from proxy.server.cli import main

DOCS = Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.S | re.M)


BLOCKS = [m.group(1) for m in BLOCK.finditer((DOCS / "routing.md").read_text(encoding="utf-8"))]


def test_the_routing_docs_have_examples():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("text", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_each_example_passes_gatewise_check(text, tmp_path, monkeypatch, capsys):
    for var in set(re.findall(r"\$\{([A-Z0-9_]+)\}", text)):
        monkeypatch.setenv(var, f"{var.lower()}-0123456789abcdef")
    path = tmp_path / "proxy.yaml"
    path.write_text(text, encoding="utf-8")
    assert main(["check", "--config", str(path)]) == 0, capsys.readouterr().err
