"""Where cached answers live: in process here, in Redis in `stores_redis.py` (same two calls)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cachetools import TTLCache


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """What is stored: plain bytes and strings, so a Redis store can hold it too."""

    body: bytes  # an OpenAI chat.completion, usage included
    target: str | None  # the target label that produced it


class CacheStore(Protocol):
    """Where entries live; memory here, Redis later (same two calls)."""

    def get(self, key: str) -> CachedAnswer | None: ...

    def set(self, key: str, entry: CachedAnswer) -> None: ...


class MemoryCacheStore:
    """TTL + LRU in process (cachetools.TTLCache evicts least recently used)."""

    def __init__(self, ttl: float, max_entries: int) -> None:
        self._cache: TTLCache = TTLCache(maxsize=max_entries, ttl=ttl)

    def get(self, key: str) -> CachedAnswer | None:
        return self._cache.get(key)

    def set(self, key: str, entry: CachedAnswer) -> None:
        self._cache[key] = entry

    def __len__(self) -> int:
        return len(self._cache)
