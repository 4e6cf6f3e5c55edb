"""SSE and NDJSON framing: whole events out, whatever the read boundaries."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.framing import Event, NDJSONParser, SSEParser, new_framer


def feed_all(parser, pieces) -> list[Event]:
    events = []
    for piece in pieces:
        events += parser.feed(piece)
    return events + parser.flush()


def bytewise(data: bytes) -> list[bytes]:
    return [data[i:i + 1] for i in range(len(data))]


OPENAI_STREAM = (b'data: {"id":"1","choices":[{"delta":{"role":"assistant"}}]}\n\n'
                 b'data: {"id":"1","choices":[{"delta":{"content":"hi"}}]}\n\n'
                 b"data: [DONE]\n\n")
EXPECTED = [Event(None, b'{"id":"1","choices":[{"delta":{"role":"assistant"}}]}'),
            Event(None, b'{"id":"1","choices":[{"delta":{"content":"hi"}}]}'),
            Event(None, b"[DONE]")]


def test_sse_lf_whole():
    assert feed_all(SSEParser(), [OPENAI_STREAM]) == EXPECTED


@pytest.mark.parametrize("eol", [b"\r\n", b"\r"])
def test_sse_crlf_and_cr(eol):
    assert feed_all(SSEParser(), [OPENAI_STREAM.replace(b"\n", eol)]) == EXPECTED


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_sse_byte_by_byte(eol):
    assert feed_all(SSEParser(), bytewise(OPENAI_STREAM.replace(b"\n", eol))) == EXPECTED


def test_sse_every_split_point():
    data = OPENAI_STREAM.replace(b"\n", b"\r\n")
    for cut in range(1, len(data)):
        assert feed_all(SSEParser(), [data[:cut], data[cut:]]) == EXPECTED, cut


def test_sse_cr_split_from_its_lf():
    parser = SSEParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\n\r") == []
    assert parser.feed(b"\ndata: b\r\n\r\n") == [Event(None, b"a"), Event(None, b"b")]


def test_sse_events_come_out_as_soon_as_complete():
    parser = SSEParser()
    assert parser.feed(b"data: one\n") == []
    assert parser.feed(b"\ndata: tw") == [Event(None, b"one")]
    assert parser.feed(b"o\n\n") == [Event(None, b"two")]
    assert parser.flush() == []


def test_sse_comments_and_unknown_fields_ignored():
    data = b": keep-alive\n\nid: 7\nretry: 100\ndata: x\n: inline comment\n\n:ping\n\n"
    assert feed_all(SSEParser(), [data]) == [Event(None, b"x")]


def test_sse_multiline_data_joined_with_newline():
    data = b"data: {\"a\":\ndata:  1}\n\n"
    assert feed_all(SSEParser(), [data]) == [Event(None, b'{"a":\n 1}')]


def test_sse_event_names():
    data = (b"event: message_start\ndata: {\"type\":\"message_start\"}\n\n"
            b"event: ping\ndata: {}\n\nevent: error\r\ndata: {\"x\":1}\r\n\r\n")
    assert feed_all(SSEParser(), bytewise(data)) == [
        Event("message_start", b'{"type":"message_start"}'), Event("ping", b"{}"),
        Event("error", b'{"x":1}')]


def test_sse_event_without_data_is_dropped():
    assert feed_all(SSEParser(), [b"event: ping\n\ndata: x\n\n"]) == [Event(None, b"x")]


def test_sse_padded_json_and_no_space_after_colon():
    data = b'data:   {"a": 1}  \n\ndata:{"b":2}\n\n'
    events = feed_all(SSEParser(), [data])
    assert events == [Event(None, b'  {"a": 1}  '), Event(None, b'{"b":2}')]
    import orjson
    assert [orjson.loads(e.data) for e in events] == [{"a": 1}, {"b": 2}]


def test_sse_flush_last_event_without_blank_line():
    for tail in (b"data: last", b"data: last\n", b"data: last\r\n", b"data: last\r"):
        parser = SSEParser()
        assert parser.feed(b"data: first\n\n" + tail) == [Event(None, b"first")]
        assert parser.flush() == [Event(None, b"last")], tail
        assert parser.flush() == []


def test_sse_flush_of_nothing():
    parser = SSEParser()
    assert parser.feed(b"") == []
    assert parser.flush() == []


NDJSON = b'{"message":{"content":"a"},"done":false}\n{"done":true,"eval_count":3}\n'


def test_ndjson_whole_and_bytewise():
    expected = [Event(None, b'{"message":{"content":"a"},"done":false}'),
                Event(None, b'{"done":true,"eval_count":3}')]
    assert feed_all(NDJSONParser(), [NDJSON]) == expected
    assert feed_all(NDJSONParser(), bytewise(NDJSON)) == expected
    for cut in range(1, len(NDJSON)):
        assert feed_all(NDJSONParser(), [NDJSON[:cut], NDJSON[cut:]]) == expected


def test_ndjson_crlf_blank_lines_and_flush():
    data = b'{"a":1}\r\n\r\n  \n{"b":2}'
    parser = NDJSONParser()
    events = parser.feed(data)
    assert [e.data.strip() for e in events] == [b'{"a":1}']
    assert parser.flush() == [Event(None, b'{"b":2}')]
    assert parser.flush() == []


def test_new_framer_kinds():
    assert isinstance(new_framer("sse"), SSEParser)
    assert isinstance(new_framer("ndjson"), NDJSONParser)


def test_split_complete_hands_out_whole_events_and_keeps_the_rest():
    parser = SSEParser()
    assert parser.split_complete(b"data: 1\n\ndata: 2") == b"data: 1\n\n"
    assert parser.split_complete(b"\n\ndata: 3\n") == b"data: 2\n\n"
    assert parser.split_complete(b"\n") == b"data: 3\n\n"
    assert parser.split_complete(b"data: 4") == b""
    assert parser.feed(b"\n\n") == [Event(None, b"4")]
    assert parser.split_complete(b"data: 5\r\n\r\n") is None  # CR: feed normalises it
    assert parser.feed(b"data: 5\r\n\r\n") == [Event(None, b"5")]
    assert SSEParser.parse_complete(b"data: a\n\n: c\n\nevent: e\ndata: b\n\n") == [
        Event(None, b"a"), Event("e", b"b")]


def _by_the_grammar(block: bytes) -> Event | None:
    """One event block read line by line, as the WHATWG grammar says."""
    name, data = None, []
    for line in block.split(b"\n"):
        if not line or line.startswith(b":"):
            continue
        field, _, value = line.partition(b":")
        value = value[1:] if value.startswith(b" ") else value
        if field == b"data":
            data.append(value)
        elif field == b"event":
            name = value.decode("utf-8", "replace")
    return Event(name, b"\n".join(data)) if data else None


_PIECES = st.sampled_from([b"event: ", b"event:", b"data: ", b"data:", b"\n", b":", b" ",
                           b"x", b"\xff", b"id: 1", b"\ndata: "])


@settings(max_examples=500)
@given(st.lists(_PIECES, max_size=8).map(b"".join))
def test_the_fast_forms_read_blocks_as_the_grammar_does(block):
    """The one-line `data:` and the `event:`+`data:` shortcuts change nothing."""
    if b"\n\n" not in block:
        assert SSEParser.parse_complete(block + b"\n\n") == \
            ([e] if (e := _by_the_grammar(block)) is not None else [])
