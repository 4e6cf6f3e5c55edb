"""Delivering alerts to one webhook: in order, retried with backoff, signed, never
following a redirect.

Each sink has its own bounded queue and one worker, so a receiver that hangs,
redirects or answers 500 delays only its own alerts; when its queue is full
the newest alerts are dropped and counted (a storm never grows memory). The
body is signed with HMAC-SHA256 over its exact bytes
(`x-gatewise-signature: sha256=<hex>`), so a receiver can verify what it
got. Internal `http://` receivers are allowed: they usually live inside the
operator's network. A 3xx is a failure that is not retried (the URL is the
operator's to fix), as is any other 4xx but 408 and 429.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
from typing import Any, Callable

import aiohttp
import orjson

from proxy.config.observe import AlertSink

log = logging.getLogger("gatewise.alerts")

ATTEMPTS = 4  # the first try and three retries
TIMEOUT_S = 5.0  # per try, connect to last byte
BACKOFF_S = 1.0  # then 2 s, 4 s
QUEUE = 1000
_ICONS = {"critical": ":red_circle:", "warning": ":large_orange_circle:",
          "info": ":large_green_circle:"}


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def render(event: dict[str, Any], fmt: str) -> bytes:
    """The exact bytes sent: the event as JSON, or a Slack-compatible `text` message."""
    if fmt != "slack":
        return orjson.dumps(event)
    icon = _ICONS.get(event.get("severity", ""), ":white_circle:")
    title = str(event.get("event", "alert")).replace("_", " ")
    text = f"{icon} *gatewise: {title}* ({event.get('severity')}) — {event.get('message')}"
    if event.get("suppressed"):
        text += f" (+{event['suppressed']} like it suppressed by the cool-down)"
    return orjson.dumps({"text": text})


class WebhookSender:
    def __init__(self, sink: AlertSink, session: Callable[[], aiohttp.ClientSession], *,
                 attempts: int = ATTEMPTS, timeout: float = TIMEOUT_S,
                 backoff: float = BACKOFF_S, queue: int = QUEUE) -> None:
        self.sink = sink
        self.where = sink.where  # scheme://host:port, never the path (it may be a token)
        self._session = session
        self.attempts, self.timeout, self.backoff = attempts, timeout, backoff
        self.queue: asyncio.Queue[tuple[dict, dict]] = asyncio.Queue(queue)
        self.dropped = 0
        self.delivered = 0
        self.failed = 0
        self._task: asyncio.Task | None = None
        self._closing = False

    def offer(self, event: dict, status: dict) -> None:
        """Queue one event; `status` (shown by /admin/alerts) is updated in place."""
        try:
            self.queue.put_nowait((event, status))
        except asyncio.QueueFull:
            self.dropped += 1
            status.update(state="dropped", detail="queue full")

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._work(), name=f"gatewise-alerts-{self.where}")

    async def stop(self, grace: float = 2.0) -> None:
        """Give queued alerts `grace` seconds, then stop."""
        task, self._task = self._task, None
        if task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self.queue.join()
        self._closing = True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _work(self) -> None:
        while not self._closing:  # (the flag too: a swallowed cancel must not keep it)
            event, status = await self.queue.get()
            try:
                await self.deliver(event, status)
            except Exception as exc:  # noqa: BLE001 — the worker must outlive any alert
                status.update(state="failed", detail=type(exc).__name__)
            finally:
                self.queue.task_done()

    async def deliver(self, event: dict, status: dict) -> bool:
        body = render(event, self.sink.format)
        headers = {"content-type": "application/json", "user-agent": "gatewise-alerts",
                   "x-gatewise-event": str(event.get("event")),
                   "x-gatewise-delivery": str(event.get("id"))}
        if self.sink.secret:
            headers["x-gatewise-signature"] = sign(self.sink.secret, body)
        for attempt in range(1, self.attempts + 1):
            retry, detail = await self._try(body, headers)
            status.update(attempts=attempt, detail=detail)
            if detail == "delivered":
                status["state"] = "delivered"
                self.delivered += 1
                return True
            if not retry or attempt == self.attempts:
                break
            await asyncio.sleep(min(30.0, self.backoff * 2 ** (attempt - 1)))
        status["state"] = "failed"
        self.failed += 1
        log.warning(f"alert {event.get('event')} not delivered to {self.where}: "
                    f"{status.get('detail')} after {status.get('attempts')} attempt(s)")
        return False

    async def _try(self, body: bytes, headers: dict[str, str]) -> tuple[bool, str]:
        """(worth retrying, what happened)."""
        try:
            async with asyncio.timeout(self.timeout):
                async with self._session().post(self.sink.url, data=body, headers=headers,
                                                allow_redirects=False) as resp:
                    await resp.content.read(65536)  # a bounded look, then let go
                    code = resp.status
        except TimeoutError:
            return True, f"no answer within {self.timeout:g}s"
        except (aiohttp.ClientError, OSError) as exc:
            return True, f"connection failed ({type(exc).__name__})"
        if 200 <= code < 300:
            return False, "delivered"
        if 300 <= code < 400:
            return False, f"HTTP {code}: redirect not followed"
        return code in (408, 429) or code >= 500, f"HTTP {code}"
