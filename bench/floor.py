"""`floor`: the least a Python proxy can cost — a bare aiohttp pass-through.

Parses the request once (orjson, as any real proxy must), forwards the bytes to
the same path on one fixed upstream over a pooled session, and relays the
answer: whole for JSON, one downstream write per upstream read for streams.
No validation, no policies, no logging. Uses uvloop only if gatewise would.
"""

import argparse

import aiohttp
import orjson
from aiohttp import web


async def forward(request: web.Request) -> web.StreamResponse:
    raw = await request.read()
    stream = bool(orjson.loads(raw).get("stream"))
    session: aiohttp.ClientSession = request.app["session"]
    async with session.post(request.app["upstream"] + request.path, data=raw,
                            headers={"content-type": "application/json"}) as up:
        if not stream:
            return web.Response(body=await up.read(), status=up.status,
                                content_type=up.content_type)
        out = web.StreamResponse(status=up.status, headers={"content-type": "text/event-stream"})
        await out.prepare(request)
        while chunk := await up.content.readany():
            await out.write(chunk)
        await out.write_eof()
        return out


async def lifespan(app: web.Application):
    connector = aiohttp.TCPConnector(limit=1000, limit_per_host=0)
    app["session"] = aiohttp.ClientSession(connector=connector,
                                           timeout=aiohttp.ClientTimeout(total=None))
    yield
    await app["session"].close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="http://host:port, no path")
    args = parser.parse_args()
    app = web.Application()
    app["upstream"] = args.upstream.rstrip("/")
    app.cleanup_ctx.append(lifespan)
    app.router.add_post("/{tail:.*}", forward)
    kwargs = {}
    try:
        import uvloop  # same choice as `gatewise serve`
        kwargs["loop"] = uvloop.new_event_loop()
    except ImportError:
        pass
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None, **kwargs)


if __name__ == "__main__":
    main()
