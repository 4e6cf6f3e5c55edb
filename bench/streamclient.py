"""Streaming-scale client: N concurrent long streams, per-chunk arrival lag.

Run pinned to the load core by bench/modes.py; prints one JSON line. The fake
upstream stamps every chunk with its send time (`"t":<epoch seconds>`, nginx's
`$msec`, millisecond resolution); an event's lag is its arrival time minus that
stamp. What a proxy adds shows up as extra lag compared with `direct` at the
same number of streams.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp


def _stamp(event: bytes) -> float | None:
    at = event.find(b'"t":')
    if at < 0:
        return None
    end = at + 4
    while end < len(event) and event[end] in b"0123456789.":
        end += 1
    return float(event[at + 4:end])


async def one(session: aiohttp.ClientSession, url: str, body: bytes,
              lags: list[float], opened: list[int]) -> bool:
    events = 0
    async with session.post(url, data=body, headers={"content-type": "application/json"}) as resp:
        if resp.status != 200:
            return False
        opened[0] += 1
        tail = b""
        data = b""
        while chunk := await resp.content.readany():
            now = time.time()
            data = tail + chunk
            *complete, tail = data.split(b"\n\n")
            for event in complete:
                sent = _stamp(event)
                if sent is not None:
                    lags.append(now - sent)
                events += 1
        return data.endswith(b"data: [DONE]\n\n")


async def main_async(args: argparse.Namespace) -> dict:
    body = json.dumps({"model": args.model, "stream": True, "messages": [
        {"role": "user", "content": "Write a long answer, please."}]}).encode()
    lags: list[float] = []
    opened = [0]
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=None)) as session:
        t0 = time.perf_counter()
        results = await asyncio.gather(*(one(session, args.url, body, lags, opened)
                                          for _ in range(args.streams)), return_exceptions=True)
        elapsed = time.perf_counter() - t0
    lags.sort()

    def pct(p: float) -> float:
        return lags[min(len(lags) - 1, int(p / 100 * len(lags)))] * 1000 if lags else float("nan")

    errors = [repr(r)[:120] for r in results if isinstance(r, BaseException)]
    return {"completed": sum(1 for r in results if r is True), "events": len(lags),
            "lag_p50_ms": pct(50), "lag_p90_ms": pct(90), "lag_p99_ms": pct(99),
            "elapsed_s": elapsed, "errors": errors[:3], "error_count": len(errors)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--model", default="bench-slow")
    parser.add_argument("--streams", type=int, required=True)
    args = parser.parse_args()
    print("SCALE_JSON " + json.dumps(asyncio.run(main_async(args))), flush=True)


if __name__ == "__main__":
    main()
