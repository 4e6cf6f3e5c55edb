"""Stored responses: SQLite and PostgreSQL behind one interface, owners kept
apart, chains, retention, a write still in flight, and a store that says no."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

import asyncpg
import openai
import pytest

from proxy.server.gateway import GATEWAY
from proxy.state.responses_pg import PostgresResponses
from proxy.state.responses_store import SqliteResponses, StoredResponse
from tests.test_pg_ledger import ADMIN_DSN
from tests.test_redis_stores import require


def row(rid: str, owner: str = "alice", previous: str | None = None, text: str = "a",
        ask: str = "q") -> StoredResponse:
    return StoredResponse(rid, owner, previous,
                          {"id": rid, "object": "response", "output": [
                              {"id": f"msg_{rid}", "type": "message", "role": "assistant",
                               "content": [{"type": "output_text", "text": text}]}]},
                          [{"id": f"in_{rid}", "type": "message", "role": "user",
                            "content": [{"type": "input_text", "text": ask}]}])


@contextlib.asynccontextmanager
async def fresh_database():
    """A PostgreSQL database of its own, dropped afterwards."""
    require("127.0.0.1", 5432, "PostgreSQL")
    name = f"gatewise_test_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def pg_dsn():
    async with fresh_database() as dsn:
        yield dsn


@pytest.fixture(params=["sqlite-memory", "sqlite-file", "postgres"])
async def store(request, tmp_path):
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "postgres":
            made = PostgresResponses(await stack.enter_async_context(fresh_database()),
                                     retention=60.0)
        else:
            path = ":memory:" if request.param == "sqlite-memory" else str(tmp_path / "s.db")
            made = SqliteResponses(path, retention=60.0)
        await made.open()
        yield made
        await made.close()


def _texts(items: list[dict]) -> list[str]:
    return [item["content"][0]["text"] for item in items]


async def test_owners_chains_and_deletes(store):
    await store.put(row("r1", text="a1", ask="q1"))
    await store.put(row("r2", previous="r1", text="a2", ask="q2"))
    await store.put(row("r3", previous="r2", text="a3", ask="q3"))
    await store.put(row("b1", owner="bob"))
    assert (await store.get("r2", "alice"))["id"] == "r2"
    assert await store.get("r2", "bob") is None
    assert await store.get("nope", "alice") is None
    assert _texts(await store.chain("r3", "alice")) == ["q1", "a1", "q2", "a2", "q3", "a3"]
    assert await store.chain("r3", "bob") is None
    assert _texts(await store.input_items("r3", "alice")) == ["q3"]
    assert await store.input_items("r3", "bob") is None
    assert not await store.delete("r2", "bob")
    assert await store.delete("r2", "alice")
    assert not await store.delete("r2", "alice")
    assert _texts(await store.chain("r3", "alice")) == ["q3", "a3"]  # a deleted link ends it


async def test_an_id_is_never_taken_over_by_another_owner(store):
    await store.put(row("same", owner="alice", text="alice's"))
    await store.put(row("same", owner="bob", text="bob's"))  # an upstream reusing its ids
    assert (await store.get("same", "alice"))["output"][0]["content"][0]["text"] == "alice's"
    assert await store.get("same", "bob") is None


async def test_an_upstream_reusing_ids_cannot_make_a_chain_loop(store):
    await store.put(row("x", text="first"))
    await store.put(row("y", previous="x", text="second"))
    await store.put(row("x", previous="y", text="third"))  # the upstream answered "x" again
    assert _texts(await store.chain("y", "alice")) == ["q", "first", "q", "second"]
    assert (await store.get("x", "alice"))["output"][0]["content"][0]["text"] == "first"


async def test_retention_expires_and_purges(store, monkeypatch):
    now = time.time()
    await store.put(row("old"))
    assert await store.get("old", "alice") is not None
    monkeypatch.setattr(time, "time", lambda: now + 61)
    assert await store.get("old", "alice") is None
    assert await store.chain("old", "alice") is None
    assert await store._purge(time.time()) == 1


async def test_a_read_waits_for_the_write_in_flight(store):
    gate = asyncio.Event()
    real = store._put

    async def slow_put(*args):
        await gate.wait()
        return await real(*args)

    store._put = slow_put
    writing = asyncio.create_task(store.put(row("late")))
    await asyncio.sleep(0)
    reading = asyncio.create_task(store.chain("late", "alice"))
    await asyncio.sleep(0.05)
    assert not reading.done()
    gate.set()
    await writing
    assert _texts(await reading) == ["q", "a"]


# --- a store that says no, seen from a client ---------------------------------------------

async def test_a_failing_store_still_answers_and_says_so_later(start_gateway, caplog):
    gw = await start_gateway("""
        providers: {offline: {type: mock}}
        models: {echo: {targets: [{provider: offline, model: echo}]}}
    """)
    store = gw.app[GATEWAY].responses

    async def refuse(*args):
        raise OSError("disk full")

    store._put = refuse
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0) as c:
        with caplog.at_level(logging.ERROR, logger="gatewise.responses"):
            reply = await c.responses.create(model="echo", input="kept?")
            async with c.responses.stream(model="echo", input="streamed") as s:
                streamed = await s.get_final_response()
        assert reply.output_text == "kept?" and streamed.output_text == "streamed"
        assert sum("storing a response failed" in r.message for r in caplog.records) == 2
        with pytest.raises(openai.BadRequestError) as info:
            await c.responses.create(model="echo", input="next", previous_response_id=reply.id)
        assert info.value.body["code"] == "previous_response_not_found"


async def test_responses_live_in_the_ledgers_sqlite_file(start_gateway, tmp_path):
    config = f"""
        providers: {{offline: {{type: mock}}}}
        models: {{echo: {{targets: [{{provider: offline, model: echo}}]}}}}
        state: {{ledger: "sqlite:{tmp_path}/state.db"}}
    """
    first = await start_gateway(config)
    async with openai.AsyncOpenAI(base_url=first.url + "/v1", api_key="x", max_retries=0) as c:
        reply = await c.responses.create(model="echo", input="survive a restart")
    await first.close()
    second = await start_gateway(config)
    async with openai.AsyncOpenAI(base_url=second.url + "/v1", api_key="x",
                                  max_retries=0) as c:
        assert (await c.responses.retrieve(reply.id)).output_text == "survive a restart"
        follow = await c.responses.create(model="echo", input="still here",
                                          previous_response_id=reply.id)
        assert follow.usage.input_tokens > reply.usage.input_tokens


async def test_two_instances_share_responses_on_postgres(start_gateway, pg_dsn):
    config = f"""
        providers: {{offline: {{type: mock}}}}
        models: {{echo: {{targets: [{{provider: offline, model: echo}}]}}}}
        state: {{ledger: "{pg_dsn}"}}
    """
    one, two = await start_gateway(config), await start_gateway(config)
    async with openai.AsyncOpenAI(base_url=one.url + "/v1", api_key="x", max_retries=0) as a, \
            openai.AsyncOpenAI(base_url=two.url + "/v1", api_key="x", max_retries=0) as b:
        reply = await a.responses.create(model="echo", input="made on one")
        assert (await b.responses.retrieve(reply.id)).output_text == "made on one"
        follow = await b.responses.create(model="echo", input="continued on two",
                                          previous_response_id=reply.id)
        assert follow.previous_response_id == reply.id


async def test_an_in_memory_store_keeps_only_the_newest(monkeypatch):
    """Without a ledger file stored responses live in process memory: capped, oldest
    first out, so `store: true` traffic cannot grow the process without bound."""
    monkeypatch.setattr("proxy.state.responses_store.MEMORY_MAX_ROWS", 3)
    store = SqliteResponses(":memory:", retention=60.0)
    await store.open()
    try:
        for i in range(5):
            await store.put(row(f"m{i}", text=f"a{i}"))
            await asyncio.sleep(0.001)  # distinct created_at
        kept = [i for i in range(5) if await store.get(f"m{i}", "alice") is not None]
        assert kept == [2, 3, 4]
    finally:
        await store.close()
