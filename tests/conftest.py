"""Shared fixtures: a running gatewise built from a YAML string, and a faithful fake
OpenAI upstream (`fake`; files that test another provider define their own)."""

from __future__ import annotations

import textwrap
from typing import AsyncIterator, Awaitable, Callable, Mapping

import pytest

from proxy.server.app import build_app
from proxy.server.configure import parse_config
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.server import LoopbackServer

StartGateway = Callable[..., Awaitable[LoopbackServer]]


@pytest.fixture
async def start_gateway() -> AsyncIterator[StartGateway]:
    """`await start_gateway(yaml_text, env={...})` → a LoopbackServer running gatewise
    (with handler cancellation on client disconnect, as `gatewise serve` runs it)."""
    servers: list[LoopbackServer] = []

    async def start(config_yaml: str, env: Mapping[str, str] | None = None) -> LoopbackServer:
        config = parse_config(textwrap.dedent(config_yaml), env or {})
        server = LoopbackServer(build_app(config), handler_cancellation=True)
        servers.append(server)
        return await server.start()

    yield start
    for server in reversed(servers):
        await server.close()


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    """The fake OpenAI API on a loopback port (`fake.url`), handler cancellation on."""
    fake = FakeOpenAI()
    async with LoopbackServer(fake.app, handler_cancellation=True) as server:
        fake.url = server.url
        yield fake
