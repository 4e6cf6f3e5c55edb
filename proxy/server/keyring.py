"""The key API's operations, shared by the admin routes and `gatewise keys`.

Make, change, revoke and rotate client keys in the ledger's database (see
proxy/state/api_keys.py), each with its audit row and log line, and tell every
instance at once (its own snapshot now, the others over Redis when there is
one; they poll the database anyway). A name used by a key in the config file
is refused. A secret is returned once, by `create` and `rotate`, and kept
nowhere: the database holds its SHA-256 and a display prefix.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Iterable

from proxy.config.api_keys import NAME, merged, read_spec
from proxy.config.reader import Problems
from proxy.config.routes import ADMIN_KEY_NAME
from proxy.config.types import GatewayConfig
from proxy.state.api_keys import (AuditEntry, KeyConflict, KeyNotFound, KeyRecord, KeyStore,
                                  digest_hex, display_prefix, new_secret)
from proxy.state.key_index import KeyIndex

log = logging.getLogger("gatewise.keys")
#: how long a rotated-out secret keeps working unless the call says otherwise
ROTATE_GRACE_S = 3600.0
MAX_GRACE_S = 7 * 86400.0
KEYS_EVENT = "keys"


class KeyProblems(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class FileKey(Exception):
    """The key is in the config file: it is changed there (and reloaded)."""


@dataclass(frozen=True, slots=True)
class Actor:
    admin: str  # "admin:1a2b3c4d" (the admin key's id) or "cli:USER"
    source: str  # the caller's address, or "local"


def build_store(config: GatewayConfig) -> KeyStore | None:
    """The key store beside the ledger; None when the ledger is in memory (keys that
    vanish on restart would be worse than none). asyncpg is optional: imported late."""
    if config.state.postgres is not None:
        from proxy.state.api_keys_pg import PostgresKeyStore

        return PostgresKeyStore(config.state.postgres)
    if config.state.ledger and config.state.ledger != ":memory:":
        from proxy.state.api_keys_sqlite import SqliteKeyStore

        return SqliteKeyStore(config.state.ledger)
    return None


class KeyRing:
    def __init__(self, store: KeyStore, events: Any = None) -> None:
        self.store = store
        self.index = KeyIndex(store)
        self.events = events  # proxy/state/events.py, with the Redis backend

    async def start(self) -> None:
        await self.store.open()
        await self.index.start()
        if self.events is not None:
            self.events.handlers[KEYS_EVENT] = self._heard

    async def close(self) -> None:
        await self.index.close()
        await self.store.close()

    async def _heard(self, message: dict) -> None:
        await self.index.refresh()

    async def _changed(self) -> None:
        """Here at once; the others over Redis (and by their poll in any case)."""
        await self.index.refresh()
        if self.events is not None:
            await self.events.publish(KEYS_EVENT)

    # --- operations ---------------------------------------------------------------------

    async def create(self, body: Any, file_names: Iterable[str],
                     actor: Actor) -> tuple[KeyRecord, str]:
        problems = Problems()
        name, spec = read_spec(body, problems, with_name=True)
        if problems:
            raise KeyProblems(list(problems))
        assert name is not None
        if name in set(file_names):
            raise KeyConflict(f"'{name}' is the name of a key in the config file (names are "
                              "unique across the file and the API).")
        if name == ADMIN_KEY_NAME:
            raise KeyConflict(f"'{name}' is the admin key's name when it calls the data "
                              "plane: choose another.")
        secret = new_secret()
        now = time.time()
        record = KeyRecord(name=name, digest=digest_hex(secret), prefix=display_prefix(secret),
                           spec={k: v for k, v in spec.items() if v is not None},
                           created_at=now, updated_at=now)
        entry = self._done("key.create", name, actor, now)
        await self.store.create(record, entry)
        logged(entry)
        await self._changed()
        return record, secret

    async def update(self, name: str, body: Any, file_names: Iterable[str],
                     actor: Actor) -> KeyRecord:
        record = await self._live(name, file_names)
        problems = Problems()
        _, change = read_spec(body, problems, with_name=False)
        if problems:
            raise KeyProblems(list(problems))
        now = time.time()
        entry = self._done("key.update", name, actor, now, {"fields": sorted(change)})
        record = await self.store.update(name, {"spec": merged(record.spec, change)}, entry)
        logged(entry)
        await self._changed()
        return record

    async def revoke(self, name: str, file_names: Iterable[str], actor: Actor) -> KeyRecord:
        await self._live(name, file_names)
        now = time.time()
        entry = self._done("key.revoke", name, actor, now)
        record = await self.store.update(name, {"revoked_at": now, "previous_digest": None,
                                                "previous_until": None}, entry)
        logged(entry)
        await self._changed()
        return record

    async def rotate(self, name: str, body: Any, file_names: Iterable[str],
                     actor: Actor) -> tuple[KeyRecord, str]:
        grace = _grace(body)
        record = await self._live(name, file_names)
        secret = new_secret()
        now = time.time()
        changes = {"digest": digest_hex(secret), "prefix": display_prefix(secret),
                   "previous_digest": record.digest if grace > 0 else None,
                   "previous_until": now + grace if grace > 0 else None}
        entry = self._done("key.rotate", name, actor, now, {"grace_seconds": grace})
        record = await self.store.update(name, changes, entry)
        logged(entry)
        await self._changed()
        return record, secret

    async def record(self, action: str, name: str | None, actor: Actor,
                     detail: dict[str, Any] | None = None) -> None:
        """An audit row for an admin action that changes no key (a config reload)."""
        entry = self._done(action, name, actor, time.time(), detail)
        await self.store.audit(entry)
        logged(entry)

    async def _live(self, name: str, file_names: Iterable[str]) -> KeyRecord:
        """The live (not revoked) API key of that name."""
        if name in set(file_names):
            raise FileKey(name)
        record = await self.store.get(name) if NAME.match(name) else None
        if record is None or record.revoked_at is not None:
            raise KeyNotFound(name)
        return record

    @staticmethod
    def _done(action: str, name: str | None, actor: Actor, at: float,
              detail: dict[str, Any] | None = None) -> AuditEntry:
        """The audit row of an action; the store writes it in the change's transaction
        and the log line follows it (`logged`)."""
        return AuditEntry(action=action, key_name=name, admin=actor.admin, source=actor.source,
                          at=at, detail=detail or {})


def logged(entry: AuditEntry) -> None:
    log.info(f"{entry.action} {entry.key_name or ''} by {entry.admin} from "
             f"{entry.source}".replace("  ", " "),
             extra={"fields": {"action": entry.action, "key": entry.key_name,
                               "admin": entry.admin, "source": entry.source, **entry.detail}})


def _grace(body: Any) -> float:
    if body is None:
        return ROTATE_GRACE_S
    if not isinstance(body, dict) or set(body) - {"grace_seconds"}:
        raise KeyProblems(["the body may only hold grace_seconds"])
    value = body.get("grace_seconds", ROTATE_GRACE_S)
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not 0 <= value <= MAX_GRACE_S:
        raise KeyProblems([f"grace_seconds: must be a number of seconds from 0 to "
                           f"{MAX_GRACE_S:g}, got {value!r}"])
    return float(value)
