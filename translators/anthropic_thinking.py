"""Anthropic thinking blocks carried across tool turns for OpenAI clients.

With extended thinking, Anthropic requires the thinking and redacted-thinking
blocks of a turn that called tools to come back unchanged (signatures and
all) with the tool results; an OpenAI client keeps only what OpenAI's wire
has. So the blocks before each `tool_use` ride inside that call's id, as
Gemini's thought signatures do (docs/providers/anthropic.md):
`<id>__th_<the blocks as JSON, zlib-compressed, unpadded base64url>`. The id
still matches `^[a-zA-Z0-9_-]+$`; nothing is kept server-side.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from typing import Any

import orjson

MARK = "__th_"
_MAX_CARRIED = 1 << 21  # bytes once inflated: a crafted id cannot make the gateway balloon


def carry(call_id: Any, blocks: list[dict[str, Any]]) -> Any:
    """`call_id` with `blocks` (thinking / redacted_thinking, in order) riding along."""
    if not blocks or not isinstance(call_id, str):
        return call_id
    packed = zlib.compress(orjson.dumps(blocks), 6)
    return call_id + MARK + base64.urlsafe_b64encode(packed).rstrip(b"=").decode()


def split(value: Any) -> tuple[Any, list[dict[str, Any]]]:
    """An id from a client → (Anthropic's id, the blocks it carried). An id mangled on
    the way loses its blocks (Anthropic then says what it misses), never the call."""
    if not isinstance(value, str) or MARK not in value:
        return value, []
    base, _, carried = value.partition(MARK)
    try:
        packed = base64.urlsafe_b64decode(carried + "=" * (-len(carried) % 4))
        inflate = zlib.decompressobj()
        raw = inflate.decompress(packed, _MAX_CARRIED)
        if inflate.unconsumed_tail:
            return base, []
        blocks = orjson.loads(raw)
    except (binascii.Error, ValueError, zlib.error):
        return base, []
    return base, [b for b in blocks if _is_block(b)] if isinstance(blocks, list) else []


def _is_block(block: Any) -> bool:
    if not isinstance(block, dict):
        return False
    if block.get("type") == "thinking":
        return isinstance(block.get("thinking"), str) and isinstance(block.get("signature"), str)
    return block.get("type") == "redacted_thinking" and isinstance(block.get("data"), str)


def kept(block: dict[str, Any]) -> dict[str, Any] | None:
    """What of an answer's content block rides along (None: not a thinking block)."""
    kind = block.get("type")
    if kind == "thinking":
        return {"type": "thinking", "thinking": str(block.get("thinking") or ""),
                "signature": str(block.get("signature") or "")}
    if kind == "redacted_thinking":
        return {"type": "redacted_thinking", "data": str(block.get("data") or "")}
    return None
