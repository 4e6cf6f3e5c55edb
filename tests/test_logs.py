"""The log handler: redacted JSON lines, batched per event-loop turn."""

from __future__ import annotations

import asyncio
import io
import logging

import orjson

from proxy.server.logs import log_handler


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def _logger(stream: CountingStream) -> logging.Logger:
    logger = logging.getLogger(f"test.batching.{id(stream)}")
    logger.handlers[:] = [log_handler("json", ["sk-planted-secret-123"], stream)]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


async def test_lines_of_one_loop_turn_go_out_in_one_write():
    stream = CountingStream()
    log = _logger(stream)
    for i in range(5):
        log.info("request", extra={"fields": {"n": i, "note": "sk-planted-secret-123"}})
    assert stream.getvalue() == ""  # not yet: at the end of this loop turn
    await asyncio.sleep(0)
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["n"] for line in lines] == [0, 1, 2, 3, 4]
    assert stream.writes == 1
    assert all(line["note"] == "[redacted]" for line in lines)


def test_outside_a_loop_a_line_is_written_at_once():
    stream = CountingStream()
    _logger(stream).warning("starting")
    assert orjson.loads(stream.getvalue())["msg"] == "starting"
