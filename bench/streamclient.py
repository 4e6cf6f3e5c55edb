"""Streaming-scale client: N concurrent long streams, per-chunk arrival lag.

Run pinned to the load core by bench/modes.py; prints one JSON line. The fake
upstream stamps every chunk with its send time (`"t":<epoch seconds>`, nginx's
`$msec`, millisecond resolution); a read's lag is its arrival time minus the
last stamp in it. What a proxy adds shows up as extra lag compared with
`direct` at the same number of streams.

The client is a bare asyncio Protocol (no HTTP library, no per-event parsing:
it counts `\\n\\n` and reads one stamp per socket read) so that thousands of
streams at ten chunks a second each measure the proxy, not the client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from urllib.parse import urlsplit


class Stream(asyncio.Protocol):
    __slots__ = ("done", "events", "first", "lags", "last", "request", "saw_done", "status",
                 "transport")

    def __init__(self, request: bytes, lags: list[float], done: asyncio.Future) -> None:
        self.request, self.lags, self.done = request, lags, done
        self.status = 0
        self.events = 0
        self.last = b""
        self.saw_done = False

    def connection_made(self, transport: asyncio.Transport) -> None:
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if not self.status:
            self.status = int(data[9:12]) if data.startswith(b"HTTP/1.1 ") else -1
        joined = self.last + data
        self.events += joined.count(b"\n\n") - self.last.count(b"\n\n")
        at = data.rfind(b'"t":')
        if at >= 0:
            end = at + 4
            while end < len(data) and data[end] in b"0123456789.":
                end += 1
            if end > at + 4:
                self.lags.append(now - float(data[at + 4:end]))
        if b"data: [DONE]" in joined:
            self.saw_done = True
        self.last = joined[-16:]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(self.status == 200 and self.saw_done)


async def one(host: str, port: int, request: bytes, lags: list[float]) -> tuple[bool, int]:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    transport, protocol = await loop.create_connection(lambda: Stream(request, lags, done),
                                                       host, port)
    try:
        return await done, protocol.events
    finally:
        transport.close()


async def main_async(args: argparse.Namespace) -> dict:
    url = urlsplit(args.url)
    body = json.dumps({"model": args.model, "stream": True, "messages": [
        {"role": "user", "content": "Write a long answer, please."}]}).encode()
    request = (f"POST {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\nConnection: close\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
               ).encode() + body
    lags: list[float] = []
    t0 = time.perf_counter()
    tasks = []
    for i in range(args.streams):  # ramp up in steps, so no accept queue overflows
        tasks.append(asyncio.ensure_future(one(url.hostname, url.port, request, lags)))
        if i % args.ramp_step == args.ramp_step - 1:
            await asyncio.sleep(args.ramp_pause)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    elapsed = time.perf_counter() - t0
    lags.sort()

    def pct(p: float) -> float:
        return lags[min(len(lags) - 1, int(p / 100 * len(lags)))] * 1000 if lags else float("nan")

    errors = [repr(r)[:120] for r in results if isinstance(r, BaseException)]
    done = [r for r in results if not isinstance(r, BaseException)]
    return {"completed": sum(1 for ok, _ in done if ok), "events": sum(n for _, n in done),
            "samples": len(lags), "lag_p50_ms": pct(50), "lag_p90_ms": pct(90),
            "lag_p99_ms": pct(99), "elapsed_s": elapsed, "errors": errors[:3],
            "error_count": len(errors)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--model", default="bench-slow")
    parser.add_argument("--streams", type=int, required=True)
    parser.add_argument("--ramp-step", type=int, default=250, help="streams opened at once")
    parser.add_argument("--ramp-pause", type=float, default=0.05, help="seconds between steps")
    args = parser.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    print("SCALE_JSON " + json.dumps(asyncio.run(main_async(args))), flush=True)


if __name__ == "__main__":
    main()
