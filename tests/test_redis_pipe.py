"""The request path's pipelined script runner (proxy/state/redis_pipe.py): replies as
redis-py gives them, order kept through cancels, NOSCRIPT, a dropped connection,
one write per turn of the loop, and RESP parsing of any reply split anywhere."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis import asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from proxy.state.redis_pipe import ScriptPipe, _pack, _parse, _Protocol
from tests.test_redis_stores import REDIS_URL, free_port, require

SCRIPTS = {
    "echo": "return ARGV",
    "get": "return redis.call('GET', KEYS[1])",
    "shapes": "return {1, 'two', {3, false}, ARGV[1]}",
    "boom": "return redis.error_reply('WRONG it failed')",
    "sum": "return tonumber(ARGV[1]) + tonumber(ARGV[2])",
}


@pytest.fixture
async def redis_up():
    require("127.0.0.1", 6379, "Redis")
    client = aioredis.from_url(REDIS_URL)
    yield client
    await client.aclose()


async def test_replies_are_what_redis_py_returns(redis_up):
    pipe = ScriptPipe(REDIS_URL, SCRIPTS)
    key = f"gwpipe:{uuid.uuid4().hex}"
    await redis_up.set(key, b"v\r\n1")
    assert await pipe.run("get", [key], []) == b"v\r\n1"
    assert await pipe.run("get", [key + "-missing"], []) is None
    assert await pipe.run("shapes", [], ["x"]) == [1, b"two", [3, None], b"x"]
    assert await pipe.run("echo", [], [1, 2.5, "é", b"\x00"]) == [b"1", b"2.5", "é".encode(),
                                                                    b"\x00"]
    assert await pipe.run("sum", [], [40, 2]) == 42
    script = redis_up.register_script(SCRIPTS["shapes"])
    assert await script(keys=[], args=["x"]) == await pipe.run("shapes", [], ["x"])
    with pytest.raises(ResponseError, match="WRONG it failed"):
        await pipe.run("boom", [], [])
    assert await pipe.run("sum", [], [1, 1]) == 2  # an error reply leaves the order intact
    await redis_up.delete(key)
    pipe.close()


async def test_calls_of_one_turn_share_one_write_and_keep_their_order(redis_up, monkeypatch):
    pipe = ScriptPipe(REDIS_URL, SCRIPTS)
    await pipe.run("sum", [], [0, 0])  # connected, the script known
    writes = []
    transport = pipe._protocol._transport
    real = transport.write
    monkeypatch.setattr(transport, "write", lambda data: (writes.append(data), real(data)))
    results = await asyncio.gather(*(pipe.run("sum", [], [i, 1]) for i in range(200)))
    assert results == [i + 1 for i in range(200)]
    assert len(writes) == 1
    pipe.close()


async def test_a_cancelled_call_never_shifts_the_replies(redis_up):
    pipe = ScriptPipe(REDIS_URL, SCRIPTS)
    await pipe.run("sum", [], [0, 0])
    first = asyncio.ensure_future(pipe.run("sum", [], [1, 1]))
    second = asyncio.ensure_future(pipe.run("sum", [], [2, 2]))
    await asyncio.sleep(0)  # both written
    first.cancel()
    assert await second == 4
    assert await pipe.run("sum", [], [3, 3]) == 6
    pipe.close()


async def test_a_flushed_script_cache_is_refilled(redis_up):
    pipe = ScriptPipe(REDIS_URL, SCRIPTS)
    assert await pipe.run("sum", [], [1, 2]) == 3  # EVAL, then known
    assert await pipe.run("sum", [], [1, 2]) == 3  # EVALSHA
    await redis_up.script_flush()  # e.g. Redis restarted
    assert await pipe.run("sum", [], [2, 2]) == 4  # NOSCRIPT, then EVAL again
    assert await pipe.run("sum", [], [3, 2]) == 5
    pipe.close()


async def test_a_dropped_connection_fails_its_calls_and_the_next_one_reconnects(redis_up):
    pipe = ScriptPipe(REDIS_URL, SCRIPTS)
    await pipe.run("sum", [], [0, 0])
    pipe._protocol._transport.close()  # the server went away
    await asyncio.sleep(0.01)
    assert pipe._protocol.closed
    assert await pipe.run("sum", [], [5, 5]) == 10  # a new connection


async def test_an_unreachable_redis_is_a_redis_connection_error():
    pipe = ScriptPipe(f"redis://127.0.0.1:{free_port()}/0", SCRIPTS)
    with pytest.raises(RedisConnectionError):
        await pipe.run("sum", [], [1, 1])


async def test_the_url_database_is_selected(redis_up):
    key = f"gwpipe:{uuid.uuid4().hex}"
    other = aioredis.from_url(REDIS_URL.rsplit("/", 1)[0] + "/3")
    await other.set(key, b"in-db-3")
    pipe = ScriptPipe(REDIS_URL.rsplit("/", 1)[0] + "/3", SCRIPTS)
    assert await pipe.run("get", [key], []) == b"in-db-3"
    await other.delete(key)
    await other.aclose()
    pipe.close()


def test_only_plain_tcp_urls_are_taken():
    assert ScriptPipe.handles("redis://h:6379/0")
    assert not ScriptPipe.handles("rediss://h:6380/0")
    assert not ScriptPipe.handles("unix:///run/redis.sock")


def _resp(value) -> bytes:
    if isinstance(value, int):
        return b":%d\r\n" % value
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    return b"*%d\r\n" % len(value) + b"".join(_resp(v) for v in value)


replies = st.recursive(st.none() | st.integers(-2**63, 2**63 - 1) | st.binary(max_size=40),
                       lambda inner: st.lists(inner, max_size=5), max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.lists(replies, min_size=1, max_size=6), st.data())
def test_any_replies_split_anywhere_parse_back(values, data):
    wire = b"".join(_resp(v) for v in values)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    loop = asyncio.new_event_loop()
    try:
        protocol = _Protocol()
        futures = [loop.create_future() for _ in values]
        protocol._waiting.extend(futures)
        start = 0
        for cut in [*cuts, len(wire)]:
            protocol.data_received(wire[start:cut])
            start = cut
        assert [f.result() for f in futures] == values
        assert not protocol._buffer
    finally:
        loop.close()


@given(replies)
def test_an_incomplete_reply_is_not_parsed(value):
    wire = _resp(value)
    assert _parse(bytearray(wire), 0) == (value, len(wire))
    for end in range(len(wire)):
        assert _parse(bytearray(wire[:end]), 0) is None


def test_commands_are_packed_as_redis_py_packs_them():
    from redis._parsers.encoders import Encoder
    encoder = Encoder("utf-8", "strict", False)
    parts = (b"EVALSHA", b"abc", b"2", "k:é", "k2", 7, 2.5, -1)
    expected = b"*8\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(encoder.encode(p)), encoder.encode(p))
                                     for p in parts)
    assert _pack(parts) == expected


async def test_a_refused_password_is_an_error_without_the_password(redis_up):
    pipe = ScriptPipe(REDIS_URL.replace("redis://", "redis://gw:not-the-password-123@"),
                      SCRIPTS)
    with pytest.raises(ResponseError) as caught:
        await pipe.run("sum", [], [1, 1])
    assert "not-the-password-123" not in str(caught.value)
    assert pipe._protocol is None  # nothing kept: the next call connects again


@pytest.fixture
def redis_with_password(tmp_path):
    """A private redis-server that wants a password (the shared one has none)."""
    import shutil
    import subprocess
    import time
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--save", "",
                               "--appendonly", "no", "--requirepass", "s3cret-pw",
                               "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            __import__("socket").create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            time.sleep(0.02)
    yield port
    server.kill()
    server.wait()


@pytest.mark.parametrize("form", ["redis://:s3cret-pw@127.0.0.1:{port}/3",
                                  "redis://127.0.0.1:{port}/?db=3&password=s3cret-pw",
                                  "redis://127.0.0.1:{port}?db=3&password=s3cret-pw"])
async def test_the_pipe_reads_the_url_as_redis_py_does(redis_with_password, form):
    """The stores' other commands (redis-py) and the scripts (the pipe) must reach the
    same database with the same credentials: redis-py takes `db` and `password` from the
    query string too, which the pipe ignored (NOAUTH on every script: Redis flapped
    between up and degraded; or the scripts wrote database 0 while the rest used 3)."""
    url = form.format(port=redis_with_password)
    client = aioredis.from_url(url)
    await client.set("k", b"from-redis-py")
    pipe = ScriptPipe(url, SCRIPTS)
    assert await pipe.run("get", ["k"], []) == b"from-redis-py"
    pipe.close()
    await client.aclose()


async def test_a_connection_lost_during_set_up_leaves_no_unretrieved_error():
    """Redis going away between AUTH and SELECT (a restart mid-reconnect): the call
    fails with a ConnectionError, and the set-up's other reply is retrieved, not left
    for asyncio to log as "Future exception was never retrieved" at every restart."""
    import gc

    async def hang_up(reader, writer):
        try:
            await reader.read(1)
        except OSError:  # reset by the pipe first: no matter, and no stray task error
            pass
        writer.close()
    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    unretrieved = []
    loop = asyncio.get_running_loop()
    # only the pipe's own errors count (gc.collect may find other tests' leftovers)
    loop.set_exception_handler(lambda _, context: unretrieved.append(context["message"])
                               if isinstance(context.get("exception"), RedisConnectionError)
                               else None)
    try:
        pipe = ScriptPipe(f"redis://:pw@127.0.0.1:{port}/3", SCRIPTS)
        with pytest.raises(RedisConnectionError):
            await pipe.run("sum", [], [1, 1])
        await asyncio.sleep(0)
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
        server.close()
    assert unretrieved == []
