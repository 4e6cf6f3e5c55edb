"""Rate limits: per client key (a policy) and per upstream target (a dispatcher gate).

A caller over its limit is answered 429 at once, never queued: the check is
`has_capacity()`, not `await acquire()`. Tokens are taken at an estimate before
the call (prompt characters / 4 + the most output the request allows) and
reconciled with the real usage after it. Upstream targets with `rpm`/`tpm` in
the config are skipped by routing while full, rather than waited on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from proxy.config.policies import KeyConfig
from proxy.config.types import TargetConfig
from proxy.core.errors import GatewayError
from proxy.core.exchange import Attempt, Exchange
from proxy.core.pipeline import CallNext
from proxy.state.stores import (
    CounterStore,
    MemoryCounterStore,
    MemoryRateStore,
    RateStore,
    Window,
)


def go_duration(seconds: float) -> str:
    """OpenAI's reset format: `20ms`, `1s`, `7.66s`, `6m0s`."""
    if seconds < 1:
        return f"{max(0, int(seconds * 1000))}ms"
    if seconds < 60:
        return f"{round(seconds, 2):g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{round(rest, 2):g}s"


def window_headers(requests: Window | None, tokens: Window | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    if requests is not None:
        headers["x-ratelimit-limit-requests"] = str(requests.limit)
        headers["x-ratelimit-remaining-requests"] = str(requests.remaining)
        headers["x-ratelimit-reset-requests"] = go_duration(requests.reset_s)
    if tokens is not None:
        headers["x-ratelimit-limit-tokens"] = str(tokens.limit)
        headers["x-ratelimit-remaining-tokens"] = str(tokens.remaining)
        headers["x-ratelimit-reset-tokens"] = go_duration(tokens.reset_s)
    return headers


def rate_limited(message: str, retry_after: float | None, headers: dict[str, str]) -> GatewayError:
    """429 from the gateway itself; `retry_after` None means waiting cannot help."""
    headers = dict(headers)
    if retry_after is None:
        headers["x-should-retry"] = "false"
    else:
        headers["retry-after"] = str(max(1, math.ceil(retry_after)))
        headers["retry-after-ms"] = str(max(1, math.ceil(retry_after * 1000)))
    return GatewayError(429, message, "rate_limit_exceeded", code="gateway_rate_limit",
                        headers=headers)


class ClientRateLimit:
    """Policy: rpm, tpm and max concurrent requests per client key."""

    def __init__(self, rates: RateStore | None = None,
                 counters: CounterStore | None = None) -> None:
        self.rates = rates or MemoryRateStore()
        self.counters = counters or MemoryCounterStore()
        self.remote = getattr(self.rates, "remote", False)  # Redis: the checks await
        self._names: dict[str, tuple[str, str, str]] = {}  # key name: its store names

    def _names_of(self, name: str) -> tuple[str, str, str]:
        names = self._names.get(name)
        if names is None:
            names = self._names[name] = (f"rpm:{name}", f"tpm:{name}", f"cc:{name}")
        return names

    async def _take(self, name: str, limit: int, amount: float) -> tuple[bool, Window]:
        return await self.rates.take_async(name, limit, amount)

    async def __call__(self, ex: Exchange, call_next: CallNext) -> None:
        key: KeyConfig | None = ex.key
        if key is None or not key.limited:
            await call_next(ex)
            return
        name = key.name
        rpm_name, tpm_name, cc_name = self._names_of(name)
        tokens = ex.estimated().tokens(ex.model) if key.tpm else 0
        req_window = tok_window = None
        if key.tpm and tokens > key.tpm:
            raise rate_limited(
                f"Request too large for key '{name}': about {tokens} tokens (prompt plus "
                f"max output) exceed its limit of {key.tpm} tokens per minute. Lower "
                f"max_tokens or shorten the prompt.", None,
                window_headers(None, self.rates.peek(tpm_name, key.tpm)))
        if key.max_concurrent and not (
                (await self.counters.acquire_async(cc_name, key.max_concurrent))
                if self.remote else self.counters.acquire(cc_name, key.max_concurrent)):
            raise rate_limited(
                f"Too many concurrent requests for key '{name}': limit "
                f"{key.max_concurrent}. Retry when one finishes.", 1.0, {})
        try:
            if key.rpm and key.tpm:
                # Both buckets in one step (shared state: one round trip), both or
                # neither taken.
                ok, req_window, tok_window = (await self.rates.take_pair_async(
                    (rpm_name, key.rpm, 1), (tpm_name, key.tpm, tokens))) if self.remote \
                    else self.rates.take_pair((rpm_name, key.rpm, 1), (tpm_name, key.tpm, tokens))
                if not ok:
                    tpm_refused = req_window.retry_after_s == 0
                    refused = tok_window if tpm_refused else req_window
                    what = (f"tokens per min (TPM): Limit {key.tpm}, Requested {tokens}"
                            if tpm_refused else f"requests per min (RPM): Limit {key.rpm}")
                    raise rate_limited(
                        f"Rate limit reached for key '{name}' on {what}. Please try again in "
                        f"{go_duration(refused.retry_after_s)}.", refused.retry_after_s,
                        window_headers(req_window, tok_window))
            elif key.rpm:
                ok, req_window = (await self._take(rpm_name, key.rpm, 1)) if self.remote \
                    else self.rates.take(rpm_name, key.rpm, 1)
                if not ok:
                    raise rate_limited(
                        f"Rate limit reached for key '{name}' on requests per min (RPM): "
                        f"Limit {key.rpm}. Please try again in "
                        f"{go_duration(req_window.retry_after_s)}.", req_window.retry_after_s,
                        window_headers(req_window, self._peek_tokens(key)))
            elif key.tpm:
                ok, tok_window = (await self._take(tpm_name, key.tpm, tokens)) \
                    if self.remote else self.rates.take(tpm_name, key.tpm, tokens)
                if not ok:
                    raise rate_limited(
                        f"Rate limit reached for key '{name}' on tokens per min (TPM): "
                        f"Limit {key.tpm}, Requested {tokens}. Please try again in "
                        f"{go_duration(tok_window.retry_after_s)}.", tok_window.retry_after_s,
                        window_headers(req_window, tok_window))
            headers = window_headers(req_window, tok_window)
            ex.extra_headers = {**ex.extra_headers, **headers} if ex.extra_headers else headers
            try:
                await call_next(ex)
            finally:
                if key.tpm:
                    used = 0 if ex.usage is None or ex.cache_hit else ex.usage.total_tokens
                    self.rates.adjust(tpm_name, key.tpm, used - tokens)
        finally:
            if key.max_concurrent:
                self.counters.release(cc_name)

    def _peek_tokens(self, key: KeyConfig) -> Window | None:
        return self.rates.peek(f"tpm:{key.name}", key.tpm) if key.tpm else None

    def usage(self, key: KeyConfig) -> dict[str, int]:
        """Current use, for /admin/keys."""
        out: dict[str, int] = {}
        if key.rpm:
            out["requests_remaining"] = self.rates.peek(f"rpm:{key.name}", key.rpm).remaining
        if key.tpm:
            out["tokens_remaining"] = self.rates.peek(f"tpm:{key.name}", key.tpm).remaining
        if key.max_concurrent:
            out["concurrent"] = self.counters.current(f"cc:{key.name}")
        return out


class TargetRateLimit:
    """Dispatcher gate + observer: per-target rpm/tpm from the config."""

    skip_reason = "rate_limit"  # what an explanation says of a target this gate held back

    def __init__(self, rates: RateStore | None = None) -> None:
        self.rates = rates or MemoryRateStore()
        self._names: dict[str, tuple[str, str]] = {}  # target label: its store names

    def _names_of(self, label: str) -> tuple[str, str]:
        names = self._names.get(label)
        if names is None:
            names = self._names[label] = (f"rpm:{label}", f"tpm:{label}")
        return names

    @staticmethod
    def needed(targets: Iterable[TargetConfig]) -> bool:
        return any(t.rpm or t.tpm for t in targets)

    def gate(self, ex: Exchange, target: TargetConfig) -> float | None:
        """None (and the room taken) if the target may be tried now, else seconds to wait."""
        if not (target.rpm or target.tpm):
            return None
        label = target.label
        rpm_name, tpm_name = self._names_of(label)
        if not target.tpm:
            ok, window = self.rates.take(rpm_name, target.rpm, 1)
            return None if ok else window.retry_after_s
        est = ex.estimated()
        tokens = est.prompt_tokens + est.output_for(target)
        if tokens > target.tpm:
            return 60.0  # never fits this target: let routing move on
        if target.rpm:  # both in one step, both or neither
            ok, requests, window = self.rates.take_pair((rpm_name, target.rpm, 1),
                                                        (tpm_name, target.tpm, tokens))
            if not ok:
                return (window if requests.retry_after_s == 0 else requests).retry_after_s
        else:
            ok, window = self.rates.take(tpm_name, target.tpm, tokens)
            if not ok:
                return window.retry_after_s
        taken = ex.target_tokens
        if taken is None:
            taken = ex.target_tokens = {}
        taken[label] = tokens
        return None

    def observe(self, ex: Exchange, attempt: Attempt) -> None:
        """Reconcile the target's token estimate with what this attempt really used."""
        target = attempt.target
        if not target.tpm:
            return
        tokens = ex.target_tokens
        if not tokens:
            return
        label = target.label
        taken = tokens.pop(label, None)
        if taken is None:
            return
        used = ex.usage.total_tokens if (ex.usage is not None and ex.target is target) else 0
        self.rates.adjust_local(self._names_of(label)[1], target.tpm, used - taken)
