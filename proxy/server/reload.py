"""Live reload: read the whole config again and put it in place, or refuse it.

SIGHUP, `POST /admin/reload` and `gatewise serve --watch` all come here. The
file (and every `${file:…}` secret it names) is read and validated whole; a
config with any problem — or one that changes what only a restart can (see
proxy/config/diff.py) — is refused with every problem named and the running
config stays. A valid one becomes a new Gateway generation built by the
composition root with what the running one carries over (proxy/server/carry.py),
and is swapped in at once (proxy/server/live.py): new requests use it, requests
in flight finish on theirs. Reloads never overlap: one asked for while another
runs waits for it, and any number asked for meanwhile share the next run, which
reads the file after all of them were asked for.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from proxy.config.diff import changes, fixed_changes, summary
from proxy.config.types import GatewayConfig
from proxy.server.carry import Carried
from proxy.server.configure import ConfigError
from proxy.server.gateway import Gateway
from proxy.server.live import Live
from proxy.server.logs import remember_secrets

log = logging.getLogger("gatewise.reload")
Loader = Callable[[], GatewayConfig]


@dataclass(slots=True)
class ReloadResult:
    status: str  # applied | unchanged | refused | failed
    generation: int
    problems: list[str] = field(default_factory=list)
    changes: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status in ("applied", "unchanged")

    def json(self) -> dict[str, Any]:
        return {"object": "config.reload", "status": self.status,
                "generation": self.generation, "source": self.source,
                "changes": self.changes, "problems": self.problems,
                "duration_ms": round(self.ms, 3)}


class Reloader:
    def __init__(self, live: Live, load: Loader | None,
                 checks: list[Callable[[GatewayConfig], list[str]]] | None = None) -> None:
        """`load` reads and validates the file (None: the config came from no file);
        each of `checks` names problems of a valid config against the running state
        (e.g. a file key named like an API key)."""
        self.live = live
        self.load = load
        self.checks = checks or []
        self._lock = asyncio.Lock()
        self._queued: asyncio.Task | None = None

    async def reload(self, cause: str) -> ReloadResult:
        """Reload now, or share the run queued behind the one in progress."""
        if self._queued is None:  # (a task of the app's: cancelled if it stops meanwhile)
            self._queued = self.live.spawn(self._after(cause), name="gatewise-reload")
        return await asyncio.shield(self._queued)

    def reload_soon(self, cause: str) -> None:
        """For a signal or the file watcher: nobody waits, the log tells."""
        self.live.spawn(self.reload(cause), name="gatewise-reload-request")

    async def _after(self, cause: str) -> ReloadResult:
        async with self._lock:
            self._queued = None  # who asks from now on waits for the next run
            return await self._apply(cause)

    async def _apply(self, cause: str) -> ReloadResult:
        started = time.perf_counter()
        old = self.live.current
        source = old.config.source
        result = ReloadResult("refused", old.generation, source=source)
        if self.load is None:
            result.problems = ["this gateway's config was not read from a file: there is "
                               "nothing to reload"]
            return self._done(result, cause, started)
        try:
            config = await asyncio.to_thread(self.load)
        except ConfigError as err:
            result.problems = list(err.problems)
            return self._done(result, cause, started)
        problems = fixed_changes(old.config, config)
        for check in self.checks:
            problems += check(config)
        if problems:
            result.problems = problems
            return self._done(result, cause, started)
        # Its credentials are hidden in every log line from now on (the old ones stay
        # hidden: requests in flight may still print them).
        remember_secrets(config.secrets())
        result.changes = changes(old.config, config)
        if not result.changes and config == old.config:
            result.status = "unchanged"
            return self._done(result, cause, started)
        new = None
        try:
            new = Gateway(config, carried=Carried.take(old, config))
            await new.begin(old)
        except Exception as exc:  # noqa: BLE001 — the running config stays, whatever broke
            log.exception("reload: the new config could not be put in place")
            if new is not None:
                await _discard(new, old, self.live)
            result.status = "failed"
            result.problems = [f"the new config could not be put in place: "
                               f"{type(exc).__name__}: {exc}"]
            return self._done(result, cause, started)
        self.live.swap(new)
        result.status, result.generation = "applied", new.generation
        return self._done(result, cause, started)

    def _done(self, result: ReloadResult, cause: str, started: float) -> ReloadResult:
        result.ms = (time.perf_counter() - started) * 1000
        metric = {"applied": "ok", "unchanged": "ok", "refused": "invalid"}.get(result.status,
                                                                                 "error")
        self.live.current.metrics.reloads.inc((metric,))
        fields = {"cause": cause, "status": result.status, "generation": result.generation,
                  "source": result.source, "changes": result.changes,
                  "problems": result.problems, "ms": round(result.ms, 3)}
        if result.ok:
            log.info(f"config reload ({cause}): {result.status}, generation "
                     f"{result.generation}: {summary(result.changes)}",
                     extra={"fields": fields})
        else:
            log.error(f"config reload ({cause}) {result.status}: {len(result.problems)} "
                      f"problem(s); still serving generation {result.generation}",
                      extra={"fields": fields})
            for problem in result.problems:
                log.error(f"  {problem}")
        return result


async def _discard(new: Gateway, old: Gateway, live: Live) -> None:
    """A generation that never served: close what it opened and `old` does not use."""
    try:
        old.bind()
        await new.retire(live.serving())
    except Exception:  # noqa: BLE001
        log.exception("reload: cleaning up the refused generation failed")
