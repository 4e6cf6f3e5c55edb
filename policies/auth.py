"""Client keys: who is calling, and which models they may use.

Keys are held only as SHA-256 digests; a presented key is hashed and compared
to every configured digest with `hmac.compare_digest`, without stopping at the
first match, so timing tells nothing about which key (if any) nearly matched.
Keys made through the admin API (proxy/state/key_index.py) are then found by
that digest in a dict: the lookup's timing depends on the digest, never on a
secret. A key past its `expires_at` is refused like an unknown one.
The handler identifies the caller before it reads the body (a stranger gets 401
before anything else); this policy checks the resolved model against the
key's allow-list (403 `model_not_allowed`).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping
from typing import Protocol

from proxy.config.policies import KeyConfig
from proxy.core.errors import GatewayError
from proxy.core.exchange import Exchange
from proxy.core.pipeline import CallNext

_MISSING = ("You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
_WRONG = "Incorrect API key provided. Ask the gateway's operator for a valid key."
_EXPIRED = "This API key has expired. Ask the gateway's operator for a new one."


def unauthorized(message: str) -> GatewayError:
    return GatewayError(401, message, "invalid_request_error", code="invalid_api_key")


def presented_key(headers: Mapping[str, str]) -> str | None:
    """`Authorization: Bearer <key>` (OpenAI) or `api-key: <key>` (Azure)."""
    value = headers.get("authorization")
    if value:
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    value = headers.get("api-key")
    return value.strip() if value and value.strip() else None


def token_digest(token: str) -> bytes:
    """SHA-256 of a presented key as its header's bytes: aiohttp hands bytes that are
    not UTF-8 over as surrogates, which a plain encode() refuses (a 500, not a 401)."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def digest_matches(digest: bytes, candidates: Iterable[tuple[bytes, object]]) -> object | None:
    """The value whose digest equals `digest`, comparing against every candidate."""
    found = None
    for candidate, value in candidates:
        if hmac.compare_digest(digest, candidate):
            found = value
    return found


class KeyLookup(Protocol):
    """The keys made through the admin API (proxy/state/key_index.py)."""

    @property
    def any(self) -> bool: ...

    def lookup(self, digest: bytes) -> KeyConfig | None: ...

    def knows(self, digest: bytes) -> bool: ...


class Auth:
    """Identifies callers (`identify`) and, as a policy, enforces model allow-lists."""

    def __init__(self, keys: Iterable[KeyConfig], api_keys: KeyLookup | None = None,
                 also: Iterable[KeyConfig] = ()) -> None:
        """`also`: identities recognised like keys that alone do not make a key
        necessary (the admin key on the data plane)."""
        self.keys = tuple(keys)
        self._required = bool(self.keys)
        self.keys += tuple(also)
        self._digests = tuple((k.digest, k) for k in self.keys)
        self.api_keys = api_keys
        #: `KeyConfig.allows`, remembered by (the key's globs, the model): a glob match
        #: costs more than a lookup, and the answer never changes
        self._allowed: dict[tuple[tuple[str, ...], str], bool] = {}

    @property
    def required(self) -> bool:
        """Keys in the file, or the key API ever used: callers must present a key."""
        return self._required or (self.api_keys is not None and self.api_keys.any)

    def identify(self, headers: Mapping[str, str]) -> KeyConfig:
        token = presented_key(headers)
        if token is None:
            raise unauthorized(_MISSING)
        digest = token_digest(token)
        key = digest_matches(digest, self._digests)
        if key is None and self.api_keys is not None:
            key = self.api_keys.lookup(digest)
        if key is None:
            raise unauthorized(_WRONG)
        expires = key.expires_at  # type: ignore[attr-defined]
        if expires is not None and expires <= time.time():
            raise unauthorized(_EXPIRED)
        return key  # type: ignore[return-value]

    async def __call__(self, ex: Exchange, call_next: CallNext) -> None:
        self.before(ex)
        await call_next(ex)

    def before(self, ex: Exchange) -> None:
        """The whole policy, before the call (the pipeline links it without a coroutine)."""
        key = ex.key
        if key is None:  # the handler identifies first; be safe if one did not
            if not self.required:
                return
            key = ex.key = self.identify(ex.http.headers)
            ex.key_name = key.name
        if key.models and not self._allows(key, ex.model.name):
            raise GatewayError(
                403, f"The key '{key.name}' is not allowed to use the model "
                     f"'{ex.model.name}'.", "invalid_request_error", param="model",
                code="model_not_allowed")


    def _allows(self, key: KeyConfig, model: str) -> bool:
        allowed = self._allowed
        pair = (key.models, model)
        ok = allowed.get(pair)
        if ok is None:
            if len(allowed) >= 4096:  # keys made through the API come and go: stay small
                allowed.clear()
            ok = allowed[pair] = key.allows(model)
        return ok


class AdminAuth:
    """The admin key alone opens `/admin/...`; a data-plane key gets 403."""

    def __init__(self, admin_key: str | None, client_digests: Iterable[bytes] = (),
                 api_keys: KeyLookup | None = None) -> None:
        self._digest = hashlib.sha256(admin_key.encode()).digest() if admin_key else None
        self._clients = tuple((d, True) for d in client_digests)
        self._api_keys = api_keys
        #: names the admin key in audit rows without revealing it
        self.id = f"admin:{self._digest.hex()[:8]}" if self._digest else None

    def check(self, headers: Mapping[str, str]) -> None:
        if self._digest is None:
            raise GatewayError(403, "The admin API is disabled: set admin.key in the gateway's "
                                    "config.", "invalid_request_error", code="admin_disabled")
        token = presented_key(headers)
        if token is None:
            raise unauthorized(_MISSING)
        digest = token_digest(token)
        if hmac.compare_digest(digest, self._digest):
            return
        if digest_matches(digest, self._clients) or (
                self._api_keys is not None and self._api_keys.knows(digest)):
            raise GatewayError(403, "This key may not use the admin API.",
                               "invalid_request_error", code="admin_only")
        raise unauthorized(_WRONG)
