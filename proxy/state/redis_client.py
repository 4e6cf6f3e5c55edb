"""The connection to Redis shared by the stores, its health, and recovery.

`RedisState.up` goes False at the first failed call (never for a merely busy
connection pool) and a monitor task reconnects every `interval` seconds,
replays settlements that could not be written, and rebuilds budgets from the
ledger when it finds Redis emptied.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable

from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError, RedisError

from proxy.state import redis_lua as lua
from proxy.state.redis_pipe import ScriptPipe

log = logging.getLogger("gatewise.state")
HEARTBEAT_S = 5.0
#: connections to Redis per gatewise process at most (besides the scripts' one)
POOL_SIZE = 1024
#: how long one command (or one script) may take before Redis counts as unreachable
SCRIPT_TIMEOUT_S = 2.0


def _client(url: str, socket_timeout: float | None) -> aioredis.Redis:
    """A pool far above what one process keeps in flight (a few dozen commands at
    thousands of requests/s); were it ever exhausted, that is load, never an outage
    (`pool_busy`). No retries: what failed is replayed by the owner."""
    return aioredis.Redis(connection_pool=aioredis.ConnectionPool.from_url(
        url, max_connections=POOL_SIZE, socket_connect_timeout=0.5,
        socket_timeout=socket_timeout), retry=Retry(NoBackoff(), 0))


def pool_busy(exc: BaseException) -> bool:
    """All pooled connections in use: load, not Redis being down."""
    return isinstance(exc, MaxConnectionsError) or (
        isinstance(exc, RedisConnectionError) and str(exc) == "No connection available.")


class RedisState:
    """The connection, its health, and what to do when Redis returns."""

    def __init__(self, url: str, prefix: str, instances: int = 1, interval: float = 0.5,
                 client: aioredis.Redis | None = None) -> None:
        self.client = client or _client(url, socket_timeout=SCRIPT_TIMEOUT_S)
        # The request path's scripts (limits, budgets, tokens in flight) go pipelined
        # over a connection of their own (proxy/state/redis_pipe.py); other URL kinds
        # (TLS, unix sockets) and an injected client keep redis-py's.
        self._pipe = ScriptPipe(url, lua.SCRIPTS) \
            if client is None and ScriptPipe.handles(url) else None
        self.prefix = prefix
        self.instances = max(1, instances)
        self.interval = interval
        self.instance_id = uuid.uuid4().hex[:12]
        self.up = False
        self.on_empty: list[Callable[[], Awaitable[None]]] = []  # rebuild from the ledger
        self.on_tick: list[Callable[[], Awaitable[None]]] = []  # e.g. poll shared cool-downs
        self.replay: list[Callable[[], Awaitable[None]]] = []  # writes that failed
        self.scripts = {name: self.client.register_script(src) for name, src in lua.SCRIPTS.items()}
        self._tasks: set[asyncio.Task] = set()
        self._monitor: asyncio.Task | None = None
        self._closing = False

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def run(self, name: str, keys: list[str], args: list) -> object:
        """One script, atomically; marks the state down on a connection failure."""
        try:
            if self._pipe is None:
                return await self.scripts[name](keys=keys, args=args)
            async with asyncio.timeout(SCRIPT_TIMEOUT_S):
                return await self._pipe.run(name, keys, args)
        except TimeoutError as exc:  # an OSError: Redis counts as unreachable
            if self._pipe is not None:  # and the next call starts on a new connection
                self._pipe.close()
            self.failed(exc)
            raise
        except (RedisError, OSError) as exc:
            if not pool_busy(exc):
                self.failed(exc)
            raise

    def failed(self, exc: BaseException) -> None:
        if self.up:
            log.error(f"redis unreachable, running degraded: {exc!r}")
        self.up = False

    def spawn(self, make: Callable[[], Awaitable[None]], retry: bool = False) -> None:
        """Fire and forget; with `retry`, a write lost to an outage is replayed later."""
        async def runner() -> None:
            if not self.up:
                if retry:
                    self.replay.append(make)
                return
            try:
                await make()
            except (RedisError, OSError) as exc:
                self.failed(exc)
                if retry:
                    self.replay.append(make)
        task = asyncio.get_running_loop().create_task(runner())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self) -> None:
        await self.check(initial=True)  # the owners rebuild themselves at start
        if not self.up:
            log.error("redis is unreachable at start: serving degraded until it answers")
        self._monitor = asyncio.get_running_loop().create_task(self._watch(), name="gatewise-redis")

    async def check(self, initial: bool = False) -> None:
        """One health tick: reconnect, notice an emptied Redis, replay, heartbeat."""
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.exists(self.key("alive"))
            pipe.set(self.key("inst", self.instance_id), "1", px=int(HEARTBEAT_S * 1000))
            alive, _ = await pipe.execute()
            emptied = not alive
            was_up = self.up
            if not was_up or emptied:
                replay, self.replay = self.replay, []
                for make in replay:  # before any rebuild: the ledger already has these rows
                    await make()
            if emptied and not initial:
                log.warning("redis holds no gatewise state (new or flushed): rebuilding budgets "
                            "from the ledger")
                for hook in self.on_empty:  # idempotent: every instance may run them
                    await hook()
            if emptied and (not initial or not self.on_empty):
                await self.client.set(self.key("alive"), "1")  # only once rebuilt
            self.up = True
            if not was_up and not initial:
                log.warning("redis reachable: shared state back in use")
            for hook in self.on_tick:
                await hook()
        except (RedisError, OSError) as exc:
            self.failed(exc)
        except Exception as exc:  # noqa: BLE001 — e.g. the ledger is down: retried next tick
            log.error(f"shared state: rebuilding from the ledger failed: {exc!r}")

    async def _watch(self) -> None:
        # The flag, not only the cancel, ends the loop: redis-py can turn a cancel that
        # lands mid-command into a connection error, which check() then takes for an
        # outage, and close() would wait for this task for ever.
        while not self._closing:
            await asyncio.sleep(self.interval)
            if not self._closing:
                await self.check()

    async def close(self) -> None:
        self._closing = True
        if self._monitor is not None:
            self._monitor.cancel()
            await asyncio.gather(self._monitor, return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.up:
            try:
                await self.client.delete(self.key("inst", self.instance_id))
            except (RedisError, OSError):
                pass
        await self.client.aclose()
        if self._pipe is not None:
            self._pipe.close()
