"""A provider's pool of credentials (`api_keys:`): spread, cool-downs, failover.

Requests spread over the pool's credentials by weight (smooth weighted round
robin: deterministic, no bursts on one key). A failure that belongs to the
credential — its rate limit, an exhausted quota, a refused key — cools that
credential down, not the provider: the dispatcher moves the request at once
to another credential of the same provider, and only when none is left does
the failure count for the target (its cool-down, then fallbacks). Only the
error class decides, and the rests are the target's own settings: an
exhausted quota `quota_cooldown`, a refused key `auth_cooldown`, a rate limit
its `retry-after`. Each attempt sends its credential through a copy of the
provider's config whose `api_key` is that credential, so translators work as
they do with a single key.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

from proxy.config.routing import RetryConfig
from proxy.config.types import Credential, ProviderConfig
from proxy.core.errors import ErrorClass, UpstreamError

#: a credential's own rate limit without a Retry-After
RATE_LIMIT_COOLDOWN = 10.0


class PooledCredential:
    """One credential and its state; `provider` is what its attempts send."""

    __slots__ = ("credential", "index", "provider", "current", "cooling_until",
                 "last_error_class", "requests", "failures")

    def __init__(self, credential: Credential, index: int, provider: ProviderConfig) -> None:
        self.credential = credential
        self.index = index
        self.provider = dataclasses.replace(provider, api_key=credential.key)
        self.current = 0.0  # smooth weighted round robin's running score
        self.cooling_until = 0.0  # monotonic seconds
        self.last_error_class: str | None = None
        self.requests = 0
        self.failures = 0

    @property
    def name(self) -> str:
        return self.credential.name


class CredentialPool:
    def __init__(self, provider: ProviderConfig,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.provider = provider
        self.entries = [PooledCredential(c, i, provider)
                        for i, c in enumerate(provider.credentials)]
        self._clock = clock
        #: told of each cool-down: (provider, credential, error class, seconds)
        self.on_cool: Callable[[str, str, str, float], None] | None = None

    def follow(self, provider: ProviderConfig) -> "CredentialPool":
        """The same pool (its state) for an equal provider config of a reload, whose
        attempts carry that config's list of secrets to scrub from upstream errors."""
        self.provider = provider
        for entry in self.entries:
            entry.provider = dataclasses.replace(provider, api_key=entry.credential.key)
        return self

    def pick(self) -> PooledCredential | None:
        """The next credential by weight among those not cooling; None when all are."""
        now = self._clock()
        best: PooledCredential | None = None
        total = 0.0
        for entry in self.entries:
            if entry.cooling_until > now:
                continue
            weight = entry.credential.weight
            entry.current += weight
            total += weight
            if best is None or entry.current > best.current:
                best = entry
        if best is not None:
            best.current -= total
            best.requests += 1
        return best

    def cooling(self) -> float:
        """Seconds until some credential may be used (0: one may be now)."""
        now = self._clock()
        waits = [e.cooling_until - now for e in self.entries]
        return max(0.0, min(waits)) if waits else 0.0

    def failed(self, entry: PooledCredential, err: UpstreamError,
               retry: RetryConfig = RetryConfig()) -> bool:
        """Cool `entry` down if `err` is its own (rate limit, quota, refused key);
        True when it was, so the request should move to another credential."""
        seconds = credential_cooldown(err, retry)
        if seconds is None:
            return False
        entry.failures += 1
        entry.last_error_class = err.error_class.value
        entry.cooling_until = max(entry.cooling_until, self._clock() + seconds)
        if self.on_cool is not None:
            self.on_cool(self.provider.name, entry.name, err.error_class.value, seconds)
        return True

    def report(self) -> list[dict]:
        """For /admin/targets: by name and index, never the key."""
        now = self._clock()
        return [{"name": e.name, "index": e.index, "weight": e.credential.weight,
                 "state": "cooling" if e.cooling_until > now else "ready",
                 "cooling_s": round(max(0.0, e.cooling_until - now), 3),
                 "requests": e.requests, "failures": e.failures,
                 "last_error_class": e.last_error_class} for e in self.entries]


def credential_cooldown(err: UpstreamError, retry: RetryConfig) -> float | None:
    """How long the credential that got `err` should rest — the same settings as a
    whole target's (`policies.retry.quota_cooldown`, `auth_cooldown`); None when the
    error is not the credential's (a server error, a bad request, a timeout)."""
    cls = err.error_class
    if cls is ErrorClass.QUOTA:
        return retry.quota_cooldown
    if cls is ErrorClass.AUTH:
        return retry.auth_cooldown
    if cls is ErrorClass.RATE_LIMITED:
        asked = err.retry_after
        return min(asked, retry.quota_cooldown) if asked else RATE_LIMIT_COOLDOWN
    return None


def build_pools(providers: "dict[str, ProviderConfig] | object",
                keep: "dict[str, CredentialPool] | None" = None) -> dict[str, CredentialPool]:
    """A pool per provider with `api_keys`; a pool of `keep` whose provider config is
    unchanged is reused as it is (its cool-downs survive a reload)."""
    pools: dict[str, CredentialPool] = {}
    for name, provider in providers.items():  # type: ignore[attr-defined]
        if not provider.credentials:
            continue
        old = (keep or {}).get(name)
        pools[name] = old.follow(provider) if old is not None and old.provider == provider \
            else CredentialPool(provider)
    return pools
