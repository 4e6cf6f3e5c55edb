"""One upstream attempt's JSON answer relayed to the client (streams: stream_relay.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import orjson

from proxy.core.errors import (
    UpstreamError,
    upstream_protocol,
    upstream_timeout,
)
from proxy.core.exchange import Attempt, Exchange

log = logging.getLogger("gatewise")

if TYPE_CHECKING:
    from proxy.config.types import ProviderConfig
    from translators.base import Translator

async def relay_json(ex: Exchange, attempt: Attempt, translator: "Translator", transport: Any,
                     request: Any, provider: "ProviderConfig", deadline: float) -> None:
    """`deadline`: seconds left of the request's budget (bounds this attempt too)."""
    try:
        # aiohttp enforces the provider's total timeout; a second timer only when the
        # request's deadline (spent partly by earlier attempts) comes clearly sooner.
        # (the fetch is written out twice rather than called: one coroutine less)
        if deadline < provider.timeouts.total - 0.5:
            async with asyncio.timeout(deadline):
                async with transport.open(request, provider.timeouts) as resp:
                    body = await resp.read()
        else:
            async with transport.open(request, provider.timeouts) as resp:
                body = await resp.read()
    except TimeoutError:
        raise upstream_timeout(provider.name, "request deadline", round(deadline, 3)) from None
    finally:
        ex.upstream_ns += time.perf_counter_ns() - attempt.started_ns
    attempt.status = resp.status
    if resp.status >= 400:
        raise translator.error(resp.status, resp.headers, body)
    try:
        out, usage = translator.response(resp.status, resp.headers, body)
    except UNEXPECTED_SHAPE as exc:
        raise malformed(provider.name, exc, ex.request_id) from None
    ex.usage = usage
    ex.target = attempt.target
    ex.status = 200
    ex.response_body = out if isinstance(out, bytes) else orjson.dumps(out)


#: what a translator raises when an upstream's answer is JSON of another shape than its
#: wire format's (a field of the wrong type): the upstream's protocol error, not the
#: gateway's own (it may fall back, and the client never sees an internal error)
UNEXPECTED_SHAPE = (TypeError, AttributeError, KeyError, IndexError, ValueError)


def malformed(provider: str, exc: Exception, request_id: str) -> UpstreamError:
    log.warning(f"upstream provider '{provider}' answered in a shape its translator does "
                "not expect", exc_info=exc, extra={"request_id": request_id})
    return upstream_protocol(provider, "its answer does not have the expected shape")
