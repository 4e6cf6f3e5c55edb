"""Client keys made through the admin API: what is stored, and the store's interface.

Keys live in the ledger's database (the SQLite file of `state.ledger`, or its
PostgreSQL), beside the keys of the config file. A key is stored as the SHA-256
of its secret and a short display prefix — never the secret, which is shown
once, when it is made or rotated. A rotation keeps the previous secret's digest
valid until a grace moment. Keys are never deleted: a revoked key keeps its row
(and its name: names are never reused, so spend and audit stay unambiguous).
Every change bumps one sequence number, which each gatewise instance polls to
know when to re-read its snapshot; every admin action writes an audit row in
the same transaction as the change it records.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Any, Protocol

#: `gw-` + 32 random bytes as base64url (43 characters)
SECRET_PREFIX = "gw-"
SECRET_BYTES = 32
#: how much of a secret is kept to tell keys apart in listings ("gw-" + 6)
DISPLAY_CHARS = 9


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(SECRET_BYTES)


def digest_hex(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def display_prefix(secret: str) -> str:
    return secret[:DISPLAY_CHARS]


class KeyConflict(Exception):
    """A key of that name exists (or existed: names are never reused)."""


class KeyNotFound(Exception):
    pass


class KeyStoreDown(Exception):
    """The database refused or could not be reached: nothing was changed."""


@dataclass(slots=True)
class KeyRecord:
    name: str
    digest: str  # SHA-256 hex of the secret
    prefix: str
    spec: dict[str, Any]  # the validated settings (proxy/config/api_keys.py)
    created_at: float
    updated_at: float
    previous_digest: str | None = None  # the secret before the last rotation…
    previous_until: float | None = None  # …valid until then
    revoked_at: float | None = None
    last_used_at: float | None = None
    seq: int = 0  # the change that wrote this row last


@dataclass(slots=True)
class AuditEntry:
    action: str  # key.create | key.update | key.revoke | key.rotate | config.reload
    key_name: str | None
    admin: str  # who: the admin key's id ("admin:1a2b3c4d") or the shell ("cli:alice")
    source: str  # the caller's address, or "local" for the CLI
    at: float
    detail: dict[str, Any] = field(default_factory=dict)


class KeyStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def seq(self) -> int:
        """The number of the last change (0: none yet)."""

    async def all(self) -> list[KeyRecord]:
        """Every key, revoked ones too."""

    async def get(self, name: str) -> KeyRecord | None: ...

    async def create(self, record: KeyRecord, audit: AuditEntry) -> KeyRecord:
        """Raises KeyConflict when the name is taken."""

    async def update(self, name: str, changes: dict[str, Any], audit: AuditEntry,
                     live_only: bool = True) -> KeyRecord:
        """Set columns (spec, digest, prefix, previous_*, revoked_at); KeyNotFound for
        an unknown name, or (with `live_only`) one already revoked."""

    async def touch(self, used: dict[str, float]) -> None:
        """Last-used times, batched (never moved back)."""

    async def audit(self, entry: AuditEntry) -> None:
        """An audit row on its own (e.g. a config reload)."""

    async def audit_rows(self, limit: int, before: int | None,
                         key_name: str | None) -> list[dict[str, Any]]:
        """Newest first."""
