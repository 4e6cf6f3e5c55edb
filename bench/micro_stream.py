"""In-process: gatewise's own CPU per streamed request, with an instant fake upstream and a
fake client socket. `python bench/micro_stream.py CONFIG [N]` — e.g.
bench/configs/minimal-openai.yaml (model `bench-sse`: an OpenAI stream passed through) or
bench/configs/minimal-anthropic.yaml (an Anthropic stream translated to OpenAI chunks).

The upstream answers with the fixed SSE body of bench/bodies/ (the one the bench's
upstream serves), cut into reads as `READS` says: `whole` (default: one read, as the
bench's local upstream delivers it), `event` (one read per event, as a real provider
sends tokens) or a number of bytes. `FLOOR=1` runs bench/floor.py's relay of the
OpenAI body instead (one write per read), for the least this harness can cost. The client side is aiohttp's own StreamResponse
and StreamWriter over a transport that only counts bytes, so what is measured is what
the real server runs per stream, less the HTTP parsing and the sockets.
"""
import asyncio
import os
import sys
import time
from pathlib import Path

import orjson
from aiohttp import web
from aiohttp.http_parser import RawRequestMessage
from aiohttp.http_writer import HttpVersion11, StreamWriter
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from proxy.core.exchange import Exchange
from proxy.server.app import build_app
from proxy.server.chat import _parse_chat
from proxy.server.configure import load_config
from proxy.server.gateway import GATEWAY, REQUEST_ID

BODIES = Path(__file__).resolve().parent / "bodies"
REQ = orjson.loads((BODIES / "request.json").read_bytes())
HEADERS = CIMultiDictProxy(CIMultiDict({
    "authorization": "Bearer bench-key-0123456789abcdef", "content-type": "application/json",
    "user-agent": "wrk", "host": "127.0.0.1:4000"}))


def reads(body: bytes, how: str) -> list[bytes]:
    """The upstream's body as the gateway's socket reads would deliver it."""
    if how == "whole":
        return [body]
    if how == "event":
        return [part + b"\n\n" for part in body.split(b"\n\n") if part]
    size = int(how)
    return [body[i:i + size] for i in range(0, len(body), size)]


class Resp:
    status = 200
    headers: dict = {"content-type": "text/event-stream"}  # noqa: RUF012 - read-only

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def read(self) -> bytes:
        return b"".join(self.chunks)

    async def iter_chunks(self):
        for chunk in self.chunks:
            yield chunk

    async def finish(self) -> None:
        pass

    def close(self) -> None:
        pass


class Opened:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def __aenter__(self):
        return Resp(self.chunks)

    async def __aexit__(self, *a):
        pass


class Transport:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def open(self, req, timeouts):
        return Opened(self.chunks)

    async def acquire(self, timeout):
        return 0.0

    def release(self):
        pass


class Socket:
    """The client connection: takes every write at once (a client that keeps up)."""

    def __init__(self) -> None:
        self.writes = 0
        self.sent = 0
        self.kept: list[bytes] | None = None  # DUMP: what the last request wrote

    def write(self, data) -> None:
        self.writes += 1
        self.sent += len(data)
        if self.kept is not None:
            self.kept.append(bytes(data))

    def writelines(self, chunks) -> None:
        self.write(b"".join(chunks))

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 50000) if name == "peername" else default


class Protocol:
    ssl_context = None
    _paused = False
    peername = ("127.0.0.1", 50000)
    sockname = ("127.0.0.1", 4000)

    def __init__(self, socket: Socket) -> None:
        self.transport = socket
        self.writer = None

    async def _drain_helper(self) -> None:
        pass


MESSAGE = RawRequestMessage("POST", "/v1/chat/completions", HttpVersion11, HEADERS,
                            tuple((k.encode(), v.encode()) for k, v in HEADERS.items()),
                            False, None, False, False, URL("/v1/chat/completions"))


def client_request(app: web.Application, protocol: Protocol) -> web.Request:
    """What aiohttp makes of one request on the connection: a Request with its writer."""
    loop = asyncio.get_running_loop()
    writer = StreamWriter(protocol, loop)
    protocol.writer = writer
    request = web.Request(MESSAGE, None, protocol, writer, None, loop)
    request._match_info = Routed(app)
    return request


class Routed:
    """Just enough of the match info for the app's on_response_prepare hooks."""

    def __init__(self, app: web.Application) -> None:
        self._apps = (app,)
        self.current_app = app

    @property
    def apps(self):
        return self._apps


async def main(cfg: str, n: int) -> None:
    os.environ.setdefault("BENCH_UPSTREAM", "http://127.0.0.1:1")
    os.environ.setdefault("BENCH_KEY", "bench-key-0123456789abcdef")
    os.environ.setdefault("BENCH_TMP", "/tmp/prof")
    how = os.environ.get("READS", "whole")
    config = load_config(cfg)
    app = build_app(config)
    gw = app[GATEWAY]
    gen = gw.lifespan(app).__aiter__()
    await gen.__anext__()
    app.freeze()  # as aiohttp does once started: the on_response_prepare hooks can run
    for name in list(gw.transports):
        kind = config.providers[name].type
        body = (BODIES / ("anthropic.sse" if kind == "anthropic" else "openai.sse")).read_bytes()
        gw.transports[name] = Transport(reads(body, how))
    model = config.models["bench-sse"]
    socket = Socket()
    protocol = Protocol(socket)

    upstream_reads = reads((BODIES / "openai.sse").read_bytes(), how)
    raw_request = orjson.dumps({**REQ, "model": "bench-sse", "stream": True})

    async def floor():  # bench/floor.py's relay: one downstream write per upstream read
        orjson.loads(raw_request).get("stream")
        out = web.StreamResponse(status=200, headers={"content-type": "text/event-stream"})
        await out.prepare(client_request(app, protocol))
        for chunk in upstream_reads:
            await out.write(chunk)
        await out.write_eof()

    async def one():
        body = orjson.loads(orjson.dumps({**REQ, "model": "bench-sse", "stream": True}))
        stream = _parse_chat(body, config.server)
        key = gw.authenticate(HEADERS)
        http = client_request(app, protocol)
        http[REQUEST_ID] = "r"
        ex = Exchange(request_id="r", http=http, body=body, model=model, stream=stream,
                      key=key, key_name=key.name if key else None)
        await gw.pipeline(ex)
        if ex.response is None:
            raise SystemExit(f"no stream: {ex.status} {ex.response_body!r}")
        await ex.response.write_eof()

    if os.environ.get("FLOOR"):
        one = floor  # noqa: F811 - the floor's cost in the same harness
    for _ in range(int(os.environ.get("WARMUP", "2000"))):
        await one()
    socket.writes = socket.sent = 0
    t = time.process_time()
    for _ in range(n):
        await one()
    dt = time.process_time() - t
    print(f"{cfg} (reads: {how}): {dt / n * 1e6:.1f} us/request (our code, no sockets); "
          f"{socket.writes / n:g} writes, {socket.sent / n:g} bytes to the client each")
    if os.environ.get("DUMP"):  # the last stream as the client got it, for diffing
        socket.kept = []
        await one()
        wire = b"".join(socket.kept)
        Path(os.environ["DUMP"]).write_bytes(wire[wire.index(b"\r\n\r\n") + 4:])
    try:
        await gen.__anext__()
    except StopAsyncIteration:
        pass


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 20000))
