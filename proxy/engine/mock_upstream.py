"""The in-process upstream of the offline `mock` provider, and its transport.

It answers exactly as an OpenAI-format server would (JSON or SSE, usage chunk,
`[DONE]`), so the offline path exercises the real dispatch, relay and framing.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import time
from typing import Any, AsyncIterator

import orjson

from proxy.core.chunks import ChunkEncoder
from proxy.core.sse import DONE, encode_frames
from translators.base import UpstreamRequest

_WORD = re.compile(r"\S+\s*|\s+")


def count_tokens(text: str) -> int:
    return math.ceil(len(text) / 4) if text else 0


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content
                        if isinstance(p, dict) and p.get("type") == "text")
    return ""


class MockResponse:
    """Quacks like proxy.engine.transport.HttpResponse for the dispatcher."""

    def __init__(self, request: UpstreamRequest, latency: float, chunk_delay: float) -> None:
        self.status = 200
        self._request = request
        self._latency = latency
        self._chunk_delay = chunk_delay
        body = orjson.loads(request.body)
        self._body = body
        self._model = body.get("model", "echo")
        digest = hashlib.sha256(request.body).hexdigest()
        self._id = f"chatcmpl-mock{digest[:24]}"
        self._created = int(time.time())
        messages = body.get("messages") or []
        user = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        text = _text_of(user[-1].get("content")) if user else ""
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        self._pieces, self._finish = _truncate(_WORD.findall(text), limit)
        self._prompt_tokens = 3 + sum(4 + count_tokens(_text_of(m.get("content")))
                                      for m in messages if isinstance(m, dict))
        self._completion_tokens = sum(count_tokens(p) for p in self._pieces)
        content_type = "text/event-stream; charset=utf-8" if request.stream else "application/json"
        self.headers = {"content-type": content_type}

    def _usage(self) -> dict[str, Any]:
        return {"prompt_tokens": self._prompt_tokens,
                "completion_tokens": self._completion_tokens,
                "total_tokens": self._prompt_tokens + self._completion_tokens,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                              "accepted_prediction_tokens": 0,
                                              "rejected_prediction_tokens": 0}}

    async def read(self) -> bytes:
        if self._latency:
            await asyncio.sleep(self._latency)
        return orjson.dumps({
            "id": self._id, "object": "chat.completion", "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "message": {"role": "assistant",
                                                 "content": "".join(self._pieces),
                                                 "refusal": None, "annotations": []},
                         "logprobs": None, "finish_reason": self._finish}],
            "usage": self._usage(), "service_tier": "default",
            "system_fingerprint": "fp_gatewise_mock",
        })

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        # OpenAI's stream as the translator asks for it: `"usage":null` on every chunk,
        # then the usage chunk.
        encoder = ChunkEncoder(self._id, self._created, self._model, include_usage=True,
                               service_tier="default", system_fingerprint="fp_gatewise_mock")
        if self._latency:
            await asyncio.sleep(self._latency)
        yield encode_frames([encoder.chunk({"role": "assistant", "content": "", "refusal": None})])
        for piece in self._pieces:
            if self._chunk_delay:
                await asyncio.sleep(self._chunk_delay)
            yield encode_frames([encoder.chunk({"content": piece})])
        yield encode_frames([encoder.chunk({}, finish=self._finish),
                             encoder.usage(self._usage())]) + DONE

    async def finish(self) -> None:
        pass

    def close(self) -> None:
        pass


def _truncate(pieces: list[str], limit: Any) -> tuple[list[str], str]:
    if not isinstance(limit, int) or limit <= 0:
        return pieces, "stop"
    kept, used = [], 0
    for piece in pieces:
        cost = count_tokens(piece)
        if used + cost > limit:
            return kept, "length"
        kept.append(piece)
        used += cost
    return kept, "stop"


class MockTransport:
    """The in-process 'network' of the mock provider."""

    def __init__(self, provider) -> None:
        self._latency = float(provider.options.get("latency_ms") or 0) / 1000.0
        self._chunk_delay = float(provider.options.get("chunk_delay_ms") or 0) / 1000.0

    def open(self, request: UpstreamRequest, timeouts) -> "_Opened":
        return _Opened(MockResponse(request, self._latency, self._chunk_delay))

    async def acquire(self, timeout: float) -> float:
        """No connections in process: never a wait."""
        return 0.0

    def release(self) -> None:
        pass


class _Opened:
    def __init__(self, response: MockResponse) -> None:
        self._response = response

    async def __aenter__(self) -> MockResponse:
        return self._response

    async def __aexit__(self, *exc: object) -> None:
        self._response.close()
