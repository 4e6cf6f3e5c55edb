"""Each instance's snapshot of the keys made through the admin API.

Requests are identified against this snapshot, never the database: finding a
key is one dict lookup by the SHA-256 of what the caller presented (the
digest, not the secret, so the lookup's timing tells nothing about any secret).
The snapshot follows the database by polling its change sequence (every
`POLL_S`), and at once when this instance made the change or another one says
so over Redis — so a revoked key is refused everywhere within a second. A
database that cannot be read keeps the last snapshot (and says so in the log).
Last-used times are noted in memory and written in batches.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from proxy.config.api_keys import key_config
from proxy.config.policies import KeyConfig
from proxy.state.api_keys import KeyRecord, KeyStore, KeyStoreDown

log = logging.getLogger("gatewise.keys")
POLL_S = 0.25
TOUCH_S = 10.0


class KeyIndex:
    def __init__(self, store: KeyStore, poll: float = POLL_S, touch: float = TOUCH_S) -> None:
        self.store = store
        self.poll_s = poll
        self.touch_s = touch
        #: digest → (key, until): `until` is a rotated-out secret's grace end, else None
        self._by_digest: dict[bytes, tuple[KeyConfig, float | None]] = {}
        self.by_name: dict[str, KeyConfig] = {}  # live keys (not revoked)
        self.records: dict[str, KeyRecord] = {}  # every row, revoked ones too
        self.seq = -1
        self._used: dict[str, float] = {}
        self._tasks: list[asyncio.Task] = []
        self._down = False
        #: told which key names changed after each refresh (budgets reload their scopes)
        self.on_change: Callable[[set[str]], object] | None = None

    @property
    def any(self) -> bool:
        """Whether the key API was ever used here: from the first key made, callers must
        present a key (revoking the last one never opens the gateway)."""
        return bool(self.records)

    def has_name(self, name: str) -> bool:
        return name in self.records

    def lookup(self, digest: bytes) -> KeyConfig | None:
        entry = self._by_digest.get(digest)
        if entry is None:
            return None
        key, until = entry
        now = time.time()
        if until is not None and until <= now:
            return None  # a rotated-out secret past its grace period
        self._used[key.name] = now
        return key

    def knows(self, digest: bytes) -> bool:
        """Whether a live API key has this digest (no use is noted: for refusals)."""
        return digest in self._by_digest

    def keys(self) -> Iterable[KeyConfig]:
        return self.by_name.values()

    async def refresh(self, force: bool = False) -> bool:
        """Re-read the keys if the database changed; True when the snapshot moved."""
        seq = await self.store.seq()
        if seq == self.seq and not force:
            return False
        records = await self.store.all()
        self._rebuild(records)
        self.seq = max(seq, max((r.seq for r in records), default=0))
        return True

    def _rebuild(self, records: list[KeyRecord]) -> None:
        old = self.records
        by_digest: dict[bytes, tuple[KeyConfig, float | None]] = {}
        by_name: dict[str, KeyConfig] = {}
        changed: set[str] = set()
        for record in records:
            if old.get(record.name) is None or old[record.name].seq != record.seq:
                changed.add(record.name)
            if record.revoked_at is not None:
                continue
            key = self.by_name.get(record.name)
            if key is None or record.name in changed:
                key = key_config(record.name, bytes.fromhex(record.digest), record.spec)
                if key is None:
                    log.error(f"API key '{record.name}': its stored settings no longer read; "
                              "the key is refused until it is updated")
                    continue
            by_name[record.name] = key
            by_digest[key.digest] = (key, None)
            if record.previous_digest and record.previous_until:
                by_digest[bytes.fromhex(record.previous_digest)] = (key, record.previous_until)
        self.records = {r.name: r for r in records}
        self._by_digest, self.by_name = by_digest, by_name
        if changed and self.on_change is not None:
            self.on_change(changed)

    async def start(self) -> None:
        await self.refresh(force=True)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._poll(), name="gatewise-keys-poll"),
                       loop.create_task(self._touch_loop(), name="gatewise-keys-touch")]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.flush_used()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.refresh()
                if self._down:
                    self._down = False
                    log.warning("the key database answers again: API keys follow it")
            except (KeyStoreDown, OSError) as exc:
                if not self._down:
                    self._down = True
                    log.error(f"cannot read API keys ({exc}); serving the last snapshot")

    async def _touch_loop(self) -> None:
        while True:
            await asyncio.sleep(self.touch_s)
            await self.flush_used()

    async def flush_used(self) -> None:
        used, self._used = self._used, {}
        if not used:
            return
        try:
            await self.store.touch(used)
        except (KeyStoreDown, OSError) as exc:
            log.warning(f"API keys: last-used times not written ({exc})")
