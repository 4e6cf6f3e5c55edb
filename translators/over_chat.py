"""Translators that do their work through the attempt's chat translator.

A legacy completion on a chat upstream and a legacy function-calling request
are chat requests underneath: the chat translator of the attempt's provider
maps them, and these rework what goes in and what comes out. They use the
chat translator's public contract only: its credentials and its error
classification serve them, and its stream state is the one the relay reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from proxy.core.errors import UpstreamError
from proxy.core.framing import Event
from proxy.core.usage import Usage
from translators.base import Translator, UpstreamRequest


class OverChat(Translator):
    """Subclasses say what a chat request becomes (`request`), how the chat answer comes
    back (`response`) and how each chat chunk does (`convert`)."""

    def __init__(self, chat: Translator) -> None:
        super().__init__(chat.provider)
        self.chat = chat
        self.state = chat.state  # the chat translator updates it; the relay reads it here
        self.framing = chat.framing

    def chat_request(self, body: dict[str, Any], target, stream: bool) -> UpstreamRequest:
        """The chat request `body` as the chat translator sends it, with this attempt's
        settings (the dispatcher sets them on this translator)."""
        self.chat.drop_unsupported = self.drop_unsupported
        return self.chat.request(body, target, stream=stream)

    def chat_response(self, status: int, headers: Mapping[str, str],
                      body: bytes) -> tuple[dict[str, Any], Usage | None]:
        """The chat translator's completion, as an object to rework."""
        out, usage = self.chat.response(status, headers, body)
        return (orjson.loads(out) if isinstance(out, bytes) else out), usage

    def convert(self, chunks: list[bytes]) -> list[bytes]:
        """The chat translator's chunks as this translator's client gets them."""
        return chunks

    def stream(self, event: Event) -> tuple[list[bytes], Usage | None]:
        chunks, usage = self.chat.stream(event)
        return self.convert(chunks), usage

    def end_of_stream(self) -> list[bytes]:
        return self.convert(self.chat.end_of_stream())

    def partial_usage(self) -> Usage | None:
        return self.chat.partial_usage()

    def auth_headers(self) -> dict[str, str]:
        return self.chat.auth_headers()

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        return self.chat.error(status, headers, body)

    def classify(self, status: int, parsed: Any,
                 headers: Mapping[str, str] | None) -> UpstreamError:
        return self.chat.classify(status, parsed, headers)
