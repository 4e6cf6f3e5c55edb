"""Messages to every gatewise instance sharing the Redis state (pub/sub).

Used for what must reach all instances at once: `POST /admin/reload?all=true`,
and client keys changed through the admin API (each instance re-reads its key
snapshot at once instead of at its next poll). A message is a small JSON object
`{"kind", "origin", ...}`; `origin` is the sending instance, so it can ignore
its own. Pub/sub delivers only to instances listening now: whatever must not be
missed also has a slower path (keys are polled from the database anyway).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from redis.exceptions import RedisError

from proxy.state.redis_client import RedisState

log = logging.getLogger("gatewise.state")
Handler = Callable[[dict[str, Any]], Awaitable[None]]
RETRY_S = 0.5


class EventBus:
    def __init__(self, state: RedisState) -> None:
        self.state = state
        self.channel = state.key("events")
        self.handlers: dict[str, Handler] = {}
        self._task: asyncio.Task | None = None
        self._handling: set[asyncio.Task] = set()
        self.listening = asyncio.Event()  # subscribed (tests wait for it)

    async def publish(self, kind: str, **fields: Any) -> int:
        """Send to every instance listening; returns how many heard it (0 when Redis is
        unreachable: the caller's own instance already acted)."""
        message = orjson.dumps({"kind": kind, "origin": self.state.instance_id, **fields})
        try:
            return int(await self.state.client.publish(self.channel, message))
        except (RedisError, OSError) as exc:
            log.warning(f"could not tell the other instances ({kind}): {exc!r}")
            return 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._listen(),
                                                                name="gatewise-events")

    async def close(self) -> None:
        task, self._task = self._task, None
        for running in [task, *self._handling]:
            if running is not None:
                running.cancel()
        await asyncio.gather(*[t for t in [task, *self._handling] if t is not None],
                             return_exceptions=True)

    async def _listen(self) -> None:
        while True:
            pubsub = self.state.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.listening.set()
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        await self._dispatch(message.get("data"))
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self.listening.clear()
                log.debug(f"events: subscription lost ({exc!r}); resubscribing")
            finally:
                try:
                    await asyncio.shield(pubsub.aclose())
                except (RedisError, OSError, RuntimeError):
                    pass
            await asyncio.sleep(RETRY_S)

    async def _dispatch(self, data: Any) -> None:
        try:
            message = orjson.loads(data)
        except (orjson.JSONDecodeError, TypeError):
            return
        if not isinstance(message, dict):
            return
        handler = self.handlers.get(message.get("kind"))
        if handler is None:
            return
        task = asyncio.get_running_loop().create_task(self._handle(handler, message))
        self._handling.add(task)  # (a slow handler never holds up the next message)
        task.add_done_callback(self._handling.discard)

    @staticmethod
    async def _handle(handler: Handler, message: dict[str, Any]) -> None:
        try:
            await handler(message)
        except Exception:  # noqa: BLE001 — one bad message must not stop listening
            log.exception(f"events: handling {message.get('kind')!r} failed")
