"""Incremental framing of upstream streams: Server-Sent Events and NDJSON.

Upstream reads arrive in arbitrary pieces; these parsers keep the unfinished
tail between reads and hand out whole events, so each upstream read is framed
once and an event split across TCP reads is never lost.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol


class Event(NamedTuple):
    """One framed event: SSE `event:` name (or None) and its data bytes."""

    name: str | None
    data: bytes


class Framer(Protocol):
    def feed(self, chunk: bytes) -> list[Event]: ...

    def flush(self) -> list[Event]: ...


class SSEParser:
    """SSE per the WHATWG grammar: LF, CRLF or CR line ends; `:` comments;
    multi-line `data:`; `event:` names; unknown fields ignored."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[Event]:
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            # A CR at the very end may be half of a CRLF split across reads.
            held = buf.endswith(b"\r")
            if held:
                buf = buf[:-1]
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if held:
                buf += b"\r"
        blocks = buf.split(b"\n\n")
        self._buf = blocks.pop()
        events = []
        for block in blocks:
            event = _parse_block(block)
            if event is not None:
                events.append(event)
        return events

    def split_complete(self, chunk: bytes) -> bytes | None:
        """The complete events of what is buffered plus `chunk`, as raw bytes (the
        rest stays buffered), for a caller that may forward them untouched; None
        (nothing consumed) when CR line ends need `feed`'s normalising."""
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            return None
        cut = buf.rfind(b"\n\n")
        if cut < 0:
            self._buf = buf
            return b""
        self._buf = buf[cut + 2:]
        return buf[:cut + 2]

    @staticmethod
    def parse_complete(block: bytes) -> list[Event]:
        """The events of a block from `split_complete`."""
        events = []
        for part in block.split(b"\n\n")[:-1]:
            event = _parse_block(part)
            if event is not None:
                events.append(event)
        return events

    def flush(self) -> list[Event]:
        """The stream ended: a last event without its blank line still counts."""
        rest, self._buf = self._buf.rstrip(b"\r\n"), b""
        event = _parse_block(rest) if rest else None
        return [event] if event is not None else []


def _parse_block(block: bytes) -> Event | None:
    if block.startswith(b"data:") and b"\n" not in block:  # the common case
        data = block[5:]
        return Event(None, data[1:] if data.startswith(b" ") else data)
    if block.startswith(b"event: "):  # Anthropic's: one name line, one data line
        line = block.find(b"\n")
        if block.startswith(b"data: ", line + 1) and block.find(b"\n", line + 1) < 0:
            return Event(block[7:line].decode("utf-8", "replace"), block[line + 7:])
    name: str | None = None
    data_lines: list[bytes] = []
    for line in block.split(b"\n"):
        if not line or line.startswith(b":"):
            continue
        field, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if field == b"data":
            data_lines.append(value)
        elif field == b"event":
            name = value.decode("utf-8", "replace")
    if not data_lines:
        return None
    return Event(name, b"\n".join(data_lines))


class NDJSONParser:
    """Newline-delimited JSON (Ollama): one event per non-empty line."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[Event]:
        buf = self._buf + chunk if self._buf else chunk
        lines = buf.split(b"\n")
        self._buf = lines.pop()
        # stripped like the last line at flush: CRLF streams give the same events
        return [Event(None, data) for line in lines if (data := line.strip())]

    def flush(self) -> list[Event]:
        rest, self._buf = self._buf.strip(), b""
        return [Event(None, rest)] if rest else []


def new_framer(kind: str) -> Framer:
    return NDJSONParser() if kind == "ndjson" else SSEParser()
