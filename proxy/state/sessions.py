"""Page sessions, kept on the server: in memory, or in Redis so every instance
and worker behind one address knows them.

A session id is 32 random bytes the browser holds in an HttpOnly cookie; the
store keeps only its SHA-256, so a memory or Redis dump gives no usable
cookie. Each session carries its own CSRF token. Sessions end after
`idle` seconds without a request, and after `lifetime` seconds in any case.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import orjson

if TYPE_CHECKING:
    from proxy.state.redis_client import RedisState

IDLE_S = 1800.0  # 30 minutes without a request
LIFETIME_S = 43200.0  # 12 hours, however busy
MAX_SESSIONS = 1000  # in memory: the oldest go first past this


@dataclass(slots=True)
class Session:
    csrf: str
    created: float
    seen: float


def _digest(sid: str) -> str:
    return hashlib.sha256(sid.encode("utf-8", "surrogatepass")).hexdigest()


def new_ids() -> tuple[str, str]:
    """(session id, CSRF token): 256 random bits each, URL-safe."""
    return secrets.token_urlsafe(32), secrets.token_urlsafe(32)


class MemorySessions:
    def __init__(self, clock: Callable[[], float] = time.time, idle: float = IDLE_S,
                 lifetime: float = LIFETIME_S) -> None:
        self.clock, self.idle, self.lifetime = clock, idle, lifetime
        self._sessions: dict[str, Session] = {}

    def _alive(self, session: Session, now: float) -> bool:
        return now - session.seen < self.idle and now - session.created < self.lifetime

    async def create(self) -> tuple[str, Session]:
        now = self.clock()
        if len(self._sessions) >= MAX_SESSIONS:
            self._sessions = {d: s for d, s in self._sessions.items() if self._alive(s, now)}
            while len(self._sessions) >= MAX_SESSIONS:
                oldest = min(self._sessions, key=lambda d: self._sessions[d].created)
                del self._sessions[oldest]
        sid, csrf = new_ids()
        session = self._sessions[_digest(sid)] = Session(csrf, now, now)
        return sid, session

    async def get(self, sid: str) -> Session | None:
        digest = _digest(sid)
        session = self._sessions.get(digest)
        now = self.clock()
        if session is None:
            return None
        if not self._alive(session, now):
            del self._sessions[digest]
            return None
        session.seen = now
        return session

    async def drop(self, sid: str) -> None:
        self._sessions.pop(_digest(sid), None)


class RedisSessions:
    """One key per session (`<prefix>ui:session:<sha256>`), expiring after the idle
    time and renewed as it is used, never past its lifetime."""

    def __init__(self, redis: "RedisState", clock: Callable[[], float] = time.time,
                 idle: float = IDLE_S, lifetime: float = LIFETIME_S) -> None:
        self.redis, self.clock, self.idle, self.lifetime = redis, clock, idle, lifetime

    def _key(self, sid: str) -> str:
        return self.redis.key("ui", "session", _digest(sid))

    async def create(self) -> tuple[str, Session]:
        now = self.clock()
        sid, csrf = new_ids()
        session = Session(csrf, now, now)
        await self.redis.client.set(self._key(sid), orjson.dumps(
            {"csrf": csrf, "created": now}), px=int(self.idle * 1000))
        return sid, session

    async def get(self, sid: str) -> Session | None:
        key = self._key(sid)
        raw = await self.redis.client.get(key)
        if raw is None:
            return None
        data = orjson.loads(raw)
        now = self.clock()
        left = data["created"] + self.lifetime - now
        if left <= 0:
            await self.redis.client.delete(key)
            return None
        await self.redis.client.pexpire(key, int(min(self.idle, left) * 1000))
        return Session(data["csrf"], data["created"], now)

    async def drop(self, sid: str) -> None:
        await self.redis.client.delete(self._key(sid))
