"""In-process: gatewise's own CPU per request (handler checks + pipeline + dispatch), with
an instant fake transport and no sockets. `python bench/micro.py CONFIG [N]` — e.g.
bench/configs/full-openai.yaml with BENCH_UPSTREAM, BENCH_KEY, BENCH_TMP set. Use it to
see what a change to the hot path costs before running the whole benchmark."""
import asyncio
import os
import sys
import time
from pathlib import Path

import orjson
from multidict import CIMultiDict, CIMultiDictProxy

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from proxy.server.app import build_app
from proxy.server.configure import load_config
from proxy.core.exchange import Exchange
from proxy.server.gateway import GATEWAY
from proxy.server.chat import _parse_chat

BODY = (Path(__file__).resolve().parent / "bodies" / "openai.json").read_bytes()
REQ = orjson.loads((Path(__file__).resolve().parent / "bodies" / "request.json").read_bytes())

class Resp:
    status = 200
    headers: dict = {}  # noqa: RUF012 - read-only stand-in
    async def read(self): return BODY
class Opened:
    async def __aenter__(self): return Resp()
    async def __aexit__(self, *a): pass
class Transport:
    def open(self, req, timeouts): return Opened()
    async def acquire(self, timeout): return 0.0
    def release(self): pass
class Http:  # what the pipeline reads of an aiohttp request: its headers and path
    path = "/v1/chat/completions"
    headers = CIMultiDictProxy(CIMultiDict({
        "authorization": "Bearer bench-key-0123456789abcdef", "content-type": "application/json",
        "user-agent": "wrk", "host": "127.0.0.1:4000"}))

async def main(cfg, n):
    os.environ.setdefault("BENCH_UPSTREAM", "http://127.0.0.1:1")
    os.environ.setdefault("BENCH_KEY", "bench-key-0123456789abcdef")
    os.environ.setdefault("BENCH_TMP", "/tmp/prof")
    config = load_config(cfg)
    app = build_app(config)
    gw = app[GATEWAY]
    gen = gw.lifespan(app).__aiter__()
    await gen.__anext__()
    for k in list(gw.transports): gw.transports[k] = Transport()
    model = config.models["bench-json"]
    async def one():
        body = orjson.loads(orjson.dumps({**REQ, "model": "bench-json"}))
        stream = _parse_chat(body, config.server)
        key = gw.authenticate(Http.headers)
        ex = Exchange(request_id="r", http=Http, body=body, model=model, stream=stream, key=key,
                      key_name=key.name if key else None)
        await gw.pipeline(ex)
        ex.gateway_headers()
        # A served request waits for its sockets at least once: the loop turns, and
        # timers that are due run (e.g. the ledger's grouped commits), as in the server.
        await asyncio.sleep(0)
    for _ in range(int(os.environ.get("WARMUP", "2000"))): await one()
    t = time.process_time()
    for _ in range(n): await one()
    dt = time.process_time() - t
    print(f"{cfg}: {dt/n*1e6:.1f} us/request (our code, no sockets)")
    try: await gen.__anext__()
    except StopAsyncIteration: pass

asyncio.run(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 20000))
