"""A client that stops reading a stream is cut off after `timeouts.client_write`:
the upstream is closed and what it generated is billed."""

from __future__ import annotations

import asyncio
import logging
import socket

import orjson

from tests.fakes.openai_upstream import API_KEY, Reply


async def test_a_client_that_stops_reading_is_disconnected(fake, start_gateway, caplog):
    caplog.set_level(logging.INFO, logger="gatewise.access")
    # Far more than the socket buffers hold: 60 chunks of 200 kB.
    fake.default = Reply(text=" ".join(["x" * 200_000] * 60), chunk_delay=0.01)
    gw = await start_gateway(f"""
        providers: {{up: {{type: openai, base_url: "{fake.url}/v1", api_key: {API_KEY}}}}}
        models: {{m: {{targets: [{{provider: up, model: gpt-4o,
                                   price: {{input: 1, output: 1}}}}]}}}}
        policies: {{timeouts: {{client_write: 0.3s}}}}
    """)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", gw.port))
    payload = orjson.dumps({"model": "m", "stream": True,
                            "messages": [{"role": "user", "content": "hi"}]})
    await loop.sock_sendall(sock, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                            b"content-type: application/json\r\ncontent-length: "
                            + str(len(payload)).encode() + b"\r\n\r\n" + payload)
    head = await loop.sock_recv(sock, 1024)
    assert head.startswith(b"HTTP/1.1 200")
    try:  # ...and the client reads nothing more
        left = await fake.wait_disconnect(timeout=5.0)  # the upstream was closed
    finally:
        sock.close()
    assert left
    for _ in range(100):
        lines = [r for r in caplog.records if r.name == "gatewise.access"]
        if lines:
            break
        await asyncio.sleep(0.02)
    fields = lines[0].fields
    assert fields["status"] == 499
    assert fields["error_code"] == "client_write_timeout"
    assert fields["completion_tokens"] > 0 and fields["cost_usd"] > 0  # billed
