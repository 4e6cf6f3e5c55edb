"""The retry plan of one request, driven by the error class alone.

Order: the model's capable targets (as its strategy ranks them), then each
model of its `fallbacks` (or of the request's own `fallbacks`, which may only
name configured models the caller may use), with `context_window_fallbacks`
moved to the front after a context overflow. A failed target is retried in
place only when nothing untried is ready: rate-limited and overloaded targets
wait for their `retry-after` (never longer than `retry_after_cap`; a longer
ask is not waited for), other failures for an exponential backoff with
jitter. One deadline covers every attempt and wait, and a gateway-wide retry
budget caps retries at a share of recent requests. An exhausted quota or a
refused credential is never retried on the same target: the target cools down
for everyone for a long while (`quota_cooldown`, `auth_cooldown`) and the
request fails over. Bad requests and content filters end the request at once.
Fallback models (configured, or for a context overflow) are only those the
caller's key may use, unless the key says `any_fallback`.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from proxy.config.routing import RetryConfig
from proxy.core.errors import ErrorClass, GatewayError, UpstreamError, bad_request

if TYPE_CHECKING:
    from proxy.config.types import ModelConfig, TargetConfig
    from proxy.core.exchange import Exchange


class RetryBudget:
    """Gateway-wide: retries ≤ max(min_retries, ratio × requests) over a sliding window
    made of ten buckets, so a storm of failures cannot multiply upstream load."""

    def __init__(self, config: RetryConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.ratio = config.budget_ratio
        self.floor = config.budget_min_retries
        self._span = config.budget_window / 10
        self._clock = clock
        self._requests = [0] * 10
        self._retries = [0] * 10
        self._epoch = [0] * 10

    def _slot(self) -> int:
        epoch = int(self._clock() / self._span)
        i = epoch % 10
        if self._epoch[i] != epoch:
            self._epoch[i] = epoch
            self._requests[i] = self._retries[i] = 0
        return i

    def _live(self, counts: list[int]) -> int:
        oldest = int(self._clock() / self._span) - 9
        return sum(c for c, e in zip(counts, self._epoch) if e >= oldest)

    def request(self) -> None:
        self._requests[self._slot()] += 1

    def acquire(self) -> bool:
        """Take one retry if the budget allows it."""
        i = self._slot()
        allowed = max(self.floor, self.ratio * self._live(self._requests))
        if self._live(self._retries) >= allowed:
            return False
        self._retries[i] += 1
        return True


def backoff(config: RetryConfig, n: int, rng: random.Random = random._inst) -> float:
    """The n-th retry's wait (n from 0): exponential, capped, with full jitter over its top half."""
    ceiling = min(config.max_backoff, config.backoff * (2 ** n))
    return ceiling * (0.5 + rng.random() / 2)


def request_fallbacks(body: dict[str, Any], models: Any,
                      allowed: Callable[[str], bool]) -> list[str] | None:
    """Take the per-request `fallbacks` out of the body (it never goes upstream)."""
    value = body.pop("fallbacks", None)
    extra = body.get("extra_body")
    if isinstance(extra, dict) and "fallbacks" in extra:
        extra = dict(extra)
        value = extra.pop("fallbacks") if value is None else value
        if extra:
            body["extra_body"] = extra
        else:
            del body["extra_body"]
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_request("Invalid 'fallbacks': expected an array of model names.",
                          param="fallbacks", code="invalid_type")
    for name in value:
        if name not in models or not allowed(name):
            raise bad_request(f"Invalid 'fallbacks': the model `{name}` does not exist or you "
                              "do not have access to it.", param="fallbacks",
                              code="model_not_found")
    return value


@dataclass(slots=True)
class Candidate:
    model: "ModelConfig"
    target: "TargetConfig"
    tries: int = 0
    ready_at: float = 0.0


class Skips:
    """Why targets were not tried, for the answer when none was. (A plain class: one
    is made per request, and a dataclass's default factories cost a call each.)"""

    __slots__ = ("cooling", "deadline", "disabled", "gated", "missing", "open")

    def __init__(self) -> None:
        self.disabled: list[str] = []
        self.gated: list[float] = []
        self.cooling: list[tuple[float, str | None]] = []  # (wait, class)
        self.open: list[float] = []
        self.missing: set[str] = set()
        self.deadline = False


class RequestPlan:
    """Hands out the next (model, target) to try, or how long to wait for one."""

    def __init__(self, config: RetryConfig, chain: list["ModelConfig"],
                 order: Callable[["ModelConfig", "RequestPlan"], list["TargetConfig"]],
                 models: Any, clock: Callable[[], float], deadline: float,
                 rng: random.Random | None = None,
                 allowed: Callable[[str], bool] = lambda name: True) -> None:
        self.config = config
        self.models = models
        self.allowed = allowed  # which context-window fallbacks the caller may use
        self.clock = clock
        self.deadline = deadline  # clock time
        self.rng = rng or random.Random()
        self._order = order
        self._chain: deque["ModelConfig"] = deque(chain)
        self._first = chain  # its names start `_seen_models`, made when first needed
        self._seen: set[str] | None = None
        self._queue: deque[Candidate] = deque()
        self._waiting: list[Candidate] = []
        self.retries = 0  # in-place retries used
        self.attempts = 0

    def _fill(self) -> None:
        while not self._queue and self._chain:
            model = self._chain.popleft()
            # The plan is passed in, not captured by `order`: no reference cycle, so a
            # request's objects are freed by refcount, never left to the cyclic GC.
            queue = self._queue
            for target in self._order(model, self):
                queue.append(Candidate(model, target))

    def next(self) -> Candidate | float | None:
        """An untried candidate first; else the soonest retry (or the seconds until it is
        ready); None when nothing is left or the deadline would pass first."""
        self._fill()
        if self._queue:
            return self._queue.popleft()
        can_retry = self.retries < self.config.attempts
        eligible = [c for c in self._waiting if can_retry or not c.tries]
        if not eligible:
            return None
        now = self.clock()
        best = min(eligible, key=lambda c: c.ready_at)
        if best.ready_at >= self.deadline:
            return None
        if best.ready_at > now:
            return best.ready_at - now
        self._waiting.remove(best)
        if best.tries:
            self.retries += 1
        return best

    def is_last(self, candidate: Candidate) -> bool:
        """Nothing else is left to try after this candidate (only it, in place). A
        fallback model not yet expanded counts as something left, even if none of its
        targets turns out capable."""
        if self._queue or self._chain:
            return False
        if not self._waiting:
            return True
        can_retry = self.retries < self.config.attempts
        return all(c is candidate or (c.tries and not can_retry) for c in self._waiting)

    def again(self, candidate: Candidate) -> None:
        """Try this candidate next, at once (e.g. with another of its provider's keys);
        not a retry: the upstream refused the credential, not the request."""
        self._queue.appendleft(candidate)

    def later(self, candidate: Candidate, wait: float) -> None:
        """Try this candidate again after `wait` seconds, if the plan allows it."""
        candidate.ready_at = self.clock() + wait
        self._waiting.append(candidate)

    def failed(self, candidate: Candidate, err: UpstreamError) -> float | None:
        """Plan around a failure; raises it when the request must end now. Returns the
        seconds for which the target should cool down for everyone (rate limits)."""
        cls = err.error_class
        candidate.tries += 1
        if cls is ErrorClass.CONTEXT_WINDOW:
            self._context_overflow(candidate)
            return None
        if cls is ErrorClass.QUOTA:
            return self.config.quota_cooldown  # never again here: fail over
        if cls is ErrorClass.AUTH:
            return self.config.auth_cooldown
        if not cls.retryable:
            raise err
        if cls in (ErrorClass.RATE_LIMITED, ErrorClass.OVERLOADED):
            asked = err.retry_after
            if asked is not None:
                if asked <= self.config.retry_after_cap:
                    self.later(candidate, asked)
                return min(asked, self.config.quota_cooldown)
            wait = backoff(self.config, candidate.tries - 1, self.rng)
            self.later(candidate, wait)
            return wait
        self.later(candidate, backoff(self.config, candidate.tries - 1, self.rng))
        return None

    def _context_overflow(self, failed: Candidate) -> None:
        """Skip targets no bigger than the one that overflowed; the model's
        context_window_fallbacks go next."""
        window = failed.target.info.context_window
        self._queue = deque(c for c in self._queue if c.model is not failed.model or (
            window is not None and (c.target.info.context_window or 0) > window))
        self.add_context_fallbacks(failed.model)

    def add_context_fallbacks(self, model: "ModelConfig") -> None:
        seen = self._seen_models
        names = [n for n in model.context_window_fallbacks
                 if n not in seen and self.allowed(n)]
        seen.update(names)
        self._chain.extendleft(self.models[n] for n in reversed(names))

    @property
    def _seen_models(self) -> set[str]:
        """The models already in the plan (none is added twice)."""
        seen = self._seen
        if seen is None:
            seen = self._seen = {m.name for m in self._first}
        return seen

    def remaining(self) -> float:
        return self.deadline - self.clock()


def deadline_exceeded(seconds: float, attempts: int) -> GatewayError:
    return UpstreamError(
        ErrorClass.TIMEOUT, 504,
        f"The request's deadline of {seconds:g}s passed after {attempts} upstream "
        f"attempt{'s' if attempts != 1 else ''}.", "server_error", code="upstream_timeout")


def all_cooling(model: "ModelConfig", retry_in: float, why: str | None) -> GatewayError:
    """Every target is cooling down after its upstream refused it (`why`: the error
    class that cooled the soonest one, when known here): answered at once, without
    calling an upstream that asked to be left alone."""
    seconds = max(1, math.ceil(retry_in))
    headers = {"retry-after": str(seconds)}
    if seconds > 60 or why in ("auth", "quota_exhausted"):
        # nothing a client's retry fixes soon (no SDK waits more than a minute)
        headers["x-should-retry"] = "false"
    if why == "auth":
        return GatewayError(
            502, f"Every target of model '{model.name}' is cooling down: its upstream refused the "
                 f"gateway's credentials, and it is not tried again for {seconds}s. The operator "
                 "must check this provider's api_key.", "server_error",
            code="upstream_cooling_down", headers=headers)
    if why == "quota_exhausted":
        return GatewayError(
            429, f"Every target of model '{model.name}' is cooling down: its upstream account "
                 f"is out of quota or credit, and it is not tried again for {seconds}s.",
            "insufficient_quota", code="upstream_cooling_down", headers=headers)
    return GatewayError(
        429, f"Every target of model '{model.name}' is cooling down after its upstream asked to "
             f"be left alone; retry in {seconds}s.", "rate_limit_exceeded",
        code="upstream_cooling_down", headers=headers)


def all_open(model: "ModelConfig", retry_in: float) -> GatewayError:
    seconds = max(1, math.ceil(retry_in))
    return GatewayError(
        503, f"Every target of model '{model.name}' is failing (circuit open); retry in "
             f"{seconds}s.", "server_error", code="circuit_open",
        headers={"retry-after": str(seconds)})


def not_capable(model: "ModelConfig", missing: set[str]) -> GatewayError:
    if missing == {"context_window"}:
        return bad_request(
            f"This model's maximum context length is too small for the request: no target of "
            f"model '{model.name}' has a context window for its prompt plus max_tokens.",
            param="messages", code="context_length_exceeded")
    what = ", ".join(sorted(missing))
    return bad_request(f"No target of model '{model.name}' supports what this request needs "
                       f"({what}).", code="unsupported_capability")


def key_allows(ex: "Exchange", model: str) -> bool:
    """The caller's key allow-list (policies/auth.py) decides; no key: any model."""
    return ex.key is None or ex.key.allows(model)


def allowed_fallbacks(ex: "Exchange") -> Callable[[str], bool]:
    """Which configured fallback models may serve this caller: those its key may ask
    for by name, or any with the key's explicit `any_fallback: true`."""
    key = ex.key
    if key is None or key.any_fallback or not key.models:
        return lambda name: True
    return key.allows
