"""The Responses API's stream grammar as a checker: what a client may rely on.

`check_stream(raw)` parses SSE bytes and asserts, event by event: an `event:`
line naming the data's `type`; the official SDK's own models accept each
event (openai.types.responses, validated, not constructed); sequence numbers
count from 0 without gaps; response.created then response.in_progress open
it; items are added at increasing output indexes; every part and delta
belongs to an item that was added and is not done yet, and names its id;
exactly one terminal event (completed, incomplete or failed) ends it, and
nothing follows; a completed or incomplete response's output is every item,
as its output_item.done showed it.
"""

from __future__ import annotations

from typing import Any

import orjson
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

EVENT = TypeAdapter(ResponseStreamEvent)
TERMINAL = ("response.completed", "response.incomplete", "response.failed")


def parse_sse(raw: bytes) -> list[tuple[str | None, dict[str, Any]]]:
    events = []
    for block in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        if not block.strip():
            continue
        name, data = None, []
        for line in block.split(b"\n"):
            if line.startswith(b"event:"):
                name = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                data.append(line[5:].strip())
        events.append((name, orjson.loads(b"\n".join(data))))
    return events


def check_stream(raw: bytes, *, ended: bool = True) -> list[dict[str, Any]]:
    """The events' data, after every check; `ended=False` for a stream cut short."""
    events = parse_sse(raw)
    assert events, "an empty stream"
    added: dict[int, dict[str, Any]] = {}
    done: dict[int, dict[str, Any]] = {}
    terminal = None
    for n, (name, data) in enumerate(events):
        kind = data.get("type")
        assert name == kind, f"event {n}: `event: {name}` but type {kind}"
        EVENT.validate_python(data)
        assert data["sequence_number"] == n, f"event {n} has sequence_number " \
                                             f"{data['sequence_number']}"
        assert terminal is None, f"{kind} after {terminal}"
        if n == 0:
            assert kind == "response.created", kind
        elif n == 1:
            assert kind == "response.in_progress", kind
        if kind in ("response.created", "response.in_progress"):
            assert n < 2 and data["response"]["status"] == "in_progress"
            assert data["response"]["output"] == []
        elif kind == "response.output_item.added":
            index = data["output_index"]
            assert index == len(added), f"item {index} added out of order"
            added[index] = data["item"]
        elif kind == "response.output_item.done":
            index = data["output_index"]
            assert index in added and index not in done, f"item {index} done twice or unadded"
            assert data["item"]["id"] == added[index]["id"]
            done[index] = data["item"]
        elif kind in TERMINAL:
            terminal = kind
            Response.model_validate(data["response"])
            if kind != "response.failed":
                assert sorted(done) == list(range(len(added))), "items left open"
                assert data["response"]["output"] == [done[i] for i in sorted(done)]
        else:
            index = data.get("output_index")
            if index is not None:
                assert index in added and index not in done, f"{kind} for item {index} " \
                                                             "that is not open"
                if "item_id" in data:
                    assert data["item_id"] == added[index]["id"]
    if ended:
        assert terminal is not None, "the stream has no terminal event"
    return [data for _, data in events]
