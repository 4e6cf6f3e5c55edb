"""Exact-match response cache: the last policy before dispatch.

Off unless the YAML turns it on (`policies.cache`, or `cache: true` on a
model). The key hashes everything that changes the answer; the scope (per
client key by default) is part of it, so tenants never see each other's
answers. Only complete successes are stored: never errors, never a stream that
ended early. A hit is answered in the form the client asked for, costs 0 and
records what it saved (`ex.cache_status`, `ex.cost_saved`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from policies.cache_replay import (
    ChunkCollector,
    assemble,
    finished,
    sse_body,
    stream_chunks,
)
from proxy.config.telemetry import CacheConfig
from proxy.core.exchange import Exchange
from proxy.core.pipeline import CallNext
from proxy.core.sse import SSE_HEADERS
from proxy.core.usage import Usage
from proxy.state.cache_store import CachedAnswer, CacheStore, MemoryCacheStore

FORMAT_VERSION = 1
HEADER = "x-gatewise-cache"
# Fields that never change the answer: transport and bookkeeping only.
IGNORED_FIELDS = frozenset({"stream", "stream_options", "user", "metadata", "store",
                            "safety_identifier", "prompt_cache_key",
                            "prompt_cache_retention"})


def cache_key(ex: Exchange, scope: str, upstream: str = "") -> str:
    """SHA-256 of the canonical request: format version, scope, resolved model and
    its targets (and `upstream`: where they are, see `upstream_fingerprints`), and
    every body field except transport ones. A field left out is not the same as
    any value of it (temperature absent is not temperature 0)."""
    body = ex.body
    fields = sorted((name, value) for name, value in body.items()
                    if name not in IGNORED_FIELDS and name != "model")
    who = f"key:{ex.key_name or ''}" if scope == "key" else "global"
    canonical = [FORMAT_VERSION, who, ex.model.name,
                 [t.label for t in ex.model.targets], upstream, fields]
    return hashlib.sha256(orjson.dumps(canonical)).hexdigest()


def upstream_fingerprints(models: Mapping[str, Any], providers: Mapping[str, Any]) -> dict[str, str]:
    """Per model, a digest of what makes its answers: its targets and each one's upstream
    (provider type, URL, options), never a credential. A reload that changes any of it
    changes the model's cache keys, so a changed model starts with an empty cache while
    unchanged ones keep theirs (a rotated key changes nothing here)."""
    prints = {}
    for name, model in models.items():
        upstreams = [[t.provider, t.model, providers[t.provider].type,
                      providers[t.provider].base_url, dict(providers[t.provider].options),
                      providers[t.provider].responses] for t in model.targets]
        raw = orjson.dumps([upstreams, model.drop_unsupported], default=str,
                           option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SORT_KEYS)
        prints[name] = hashlib.sha256(raw).hexdigest()[:16]
    return prints


def cache_control(value: str | None) -> tuple[bool, bool]:
    """(look up, store) from the client's Cache-Control."""
    if not value:
        return True, True
    directives = {part.strip().split("=", 1)[0].lower() for part in value.split(",")}
    if "no-store" in directives:
        return False, False
    return "no-cache" not in directives, True


class ResponseCache:
    def __init__(self, config: CacheConfig, store: CacheStore | None = None,
                 upstreams: Mapping[str, str] | None = None) -> None:
        """`upstreams`: each model's `upstream_fingerprints` entry."""
        self._config = config
        self._upstreams = upstreams or {}
        self.store: CacheStore = store or MemoryCacheStore(config.ttl, config.max_entries)
        self.remote = getattr(self.store, "remote", False)  # Redis: the lookup awaits

    async def __call__(self, ex: Exchange, call_next: CallNext) -> None:
        # Adapted requests (legacy completions, functions, embeddings) answer in other
        # shapes than the chat completion an entry holds: never stored, never replayed.
        if ex.adapter is not None or ex.egress is not None \
                or not self._config.for_model(ex.model.name):
            await call_next(ex)
            return
        lookup, store = cache_control(ex.http.headers.get("cache-control"))
        key = cache_key(ex, self._config.scope, self._upstreams.get(ex.model.name, "")) \
            if (lookup or store) else ""
        if lookup:
            entry = (await self.store.get_async(key)) if self.remote else self.store.get(key)
            if entry is not None:
                await self._replay(ex, entry)
                return
        ex.cache_status = "MISS"
        _set_header(ex, "MISS")
        if not store:
            await call_next(ex)
            return
        collector = None
        if ex.stream:
            collector = ChunkCollector(self._config.max_entry_bytes)
            ex.add_stream_tap(collector)
        await call_next(ex)
        if ex.error is not None or ex.status != 200:
            return
        body = self._complete_body(ex, collector)
        if body is not None and len(body) <= self._config.max_entry_bytes:
            self.store.set(key, CachedAnswer(body, ex.target.label if ex.target else None))

    @staticmethod
    def _complete_body(ex: Exchange, collector: ChunkCollector | None) -> bytes | None:
        if collector is None:
            body = ex.response_body
            if not body:
                return None
            try:
                return body if finished(orjson.loads(body)) else None
            except orjson.JSONDecodeError:
                return None
        if collector.overflow or not collector.finished or ex.response is None:
            return None
        usage = ex.usage.to_openai() if ex.usage is not None else None
        completion = assemble(collector.chunks, usage)
        return orjson.dumps(completion) if completion is not None else None

    async def _replay(self, ex: Exchange, entry: CachedAnswer) -> None:
        completion = orjson.loads(entry.body)
        usage = Usage.from_openai(completion.get("usage"))
        ex.usage = usage
        ex.cost = 0.0
        ex.cache_status = "HIT"
        ex.cost_saved = self._saved(ex, entry.target, usage)
        _set_header(ex, "HIT")
        ex.status = 200
        if not ex.stream:
            ex.response_body = entry.body
            return
        options = ex.body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        chunks = stream_chunks(completion, include_usage)
        response = web.StreamResponse(status=200, headers={**SSE_HEADERS,
                                                           **ex.gateway_headers()})
        await response.prepare(ex.http)
        ex.response = response
        if ex.stream_tap is not None:
            ex.stream_tap(chunks)
        await response.write(sse_body(chunks))

    @staticmethod
    def _saved(ex: Exchange, label: str | None, usage: Usage | None) -> float:
        """What the answer cost when it was made, at today's configured price."""
        if usage is None or label is None:
            return 0.0
        for target in ex.model.targets:
            if target.label == label:
                return target.info.cost(usage.prompt_tokens, usage.completion_tokens,
                                        usage.cached_tokens)
        return 0.0


def _set_header(ex: Exchange, value: str) -> None:
    if ex.extra_headers is None:
        ex.extra_headers = {HEADER: value}
    else:
        ex.extra_headers[HEADER] = value


def build_cache(config: CacheConfig, store: CacheStore | None = None,
                upstreams: Mapping[str, str] | None = None) -> ResponseCache | None:
    """The policy, or None when no model has the cache on (then it costs nothing)."""
    return ResponseCache(config, store, upstreams) if config.any else None


__all__ = [
    "FORMAT_VERSION",
    "CacheStore",
    "CachedAnswer",
    "MemoryCacheStore",
    "ResponseCache",
    "build_cache",
    "cache_control",
    "cache_key",
    "upstream_fingerprints",
]
