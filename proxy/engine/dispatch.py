"""The end of the pipeline: send the exchange upstream and answer the client.

The request's plan (proxy/engine/plan.py) hands out targets: the model's
capable targets in its strategy's order (proxy/engine/routing.py), then its
fallback models. Before each attempt: the provider must be enabled, every
gate must let the target in (per-target limits), its circuit breaker must
admit it, and the retry budget must allow a retry. A stream is held back until
its first content chunk (proxy/engine/stream_relay.py), so a failure before that still
falls back and the client sees one clean stream.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from proxy.engine.breakers import PASS, Breakers
from proxy.engine.credentials import CredentialPool, PooledCredential
from proxy.engine.plan import (
    RequestPlan,
    RetryBudget,
    Skips,
    allowed_fallbacks,
    key_allows,
    all_cooling,
    all_open,
    deadline_exceeded,
    not_capable,
    request_fallbacks,
)
from proxy.engine.explain import gate_reason
from proxy.engine.routing import Needs, Router, View, lacks, request_needs
from proxy.engine.route_hooks import note, order_targets
from proxy.config.routing import RoutingConfig
from proxy.config.types import Timeouts
from proxy.core.errors import GatewayError, UpstreamError
from proxy.core.exchange import Attempt, Exchange
from proxy.engine.billing import bill, total_cost
from proxy.engine.relay import relay_json
from proxy.engine.stream_relay import StreamRelay
from proxy.state.route_stats import TokenLoad
from proxy.state.target_stats import MemoryStatsStore

if TYPE_CHECKING:
    from proxy.config.types import ModelConfig, ProviderConfig, TargetConfig
    from translators.base import Translator

__all__ = ["AttemptObserver", "Dispatcher", "TargetGate", "no_target_room",
           "provider_disabled"]

attempt_log = logging.getLogger("gatewise.attempt")
#: the capabilities `lacks` checks (proxy/engine/routing.py)
_NEEDED = frozenset({"tools", "vision", "json_schema"})


def provider_disabled(model: "ModelConfig", reasons: list[str]) -> GatewayError:
    """Only the operator can fix this (e.g. set the key and restart): no retry-after,
    which SDKs would wait out in vain, and no retry at all."""
    return GatewayError(
        503, f"Model '{model.name}' is unavailable: " + "; ".join(reasons) + ".",
        "server_error", code="provider_unavailable", headers={"x-should-retry": "false"})


# A gate says whether a target may be tried now: None, or seconds until it may
# (per-target rate limits, cool-downs). An observer learns each attempt's outcome
# (breakers, latency statistics, limit reconciliation).
TargetGate = Callable[[Exchange, "TargetConfig"], "float | None"]
AttemptObserver = Callable[[Exchange, Attempt], None]


def no_target_room(model: "ModelConfig", retry_after: float) -> GatewayError:
    seconds = max(1, int(retry_after + 0.999))
    return GatewayError(
        429, f"Every target of model '{model.name}' is at its configured rate limit; "
             f"retry in {seconds}s.", "rate_limit_exceeded", code="upstream_rate_limit",
        headers={"retry-after": str(seconds)})


class Dispatcher:
    """Terminal handler of the pipeline."""

    def __init__(self, providers: Mapping[str, "ProviderConfig"],
                 translators: Mapping[str, type["Translator"]],
                 transports: Mapping[str, Any], *,
                 models: Mapping[str, "ModelConfig"] | None = None,
                 routing: RoutingConfig | None = None,
                 timeouts: Timeouts | None = None,
                 provider_health: Callable[[str], "bool | None"] | None = None,
                 gates: Sequence[TargetGate] = (),
                 observers: Sequence[AttemptObserver] = (),
                 stats: MemoryStatsStore | None = None,
                 breakers: Breakers | None = None,
                 penalty: Callable[[str], float] | None = None,
                 tokens: TokenLoad | None = None,
                 pools: Mapping[str, CredentialPool] | None = None) -> None:
        """Everything the dispatcher consults is handed in here, once: the gates that
        may hold a target back, the observers told of each attempt, the statistics
        store (shared through Redis when several instances run), the breakers, a
        score factor per target for the adaptive strategy (an SLO breach halves it),
        and `tokens`, told of each attempt's estimated tokens when some strategy
        balances by tokens in flight."""
        self._providers = providers
        self._translators = translators
        self._transports = transports
        self.gates: tuple[TargetGate, ...] = tuple(gates)
        self.observers: tuple[AttemptObserver, ...] = tuple(observers)
        self.models: Mapping[str, "ModelConfig"] = models or {}
        self.routing = routing or RoutingConfig()
        self.deadline = self.routing.retry.deadline or (timeouts or Timeouts()).total
        self.stats = stats if stats is not None else MemoryStatsStore()
        self.breakers = breakers if breakers is not None else Breakers(self.routing.breaker)
        #: providers with several credentials (`api_keys`): proxy/engine/credentials.py
        self.pools: Mapping[str, CredentialPool] = pools or {}
        self.budget = RetryBudget(self.routing.retry)
        self.rng = random.Random()  # backoff jitter: one generator, not one seeding a request
        self.provider_health = provider_health or (lambda name: None)
        self.tokens = tokens
        #: every configured target has every capability a request may need: a request's
        #: body need not be searched for tools, images or JSON schemas
        self._all_capable = bool(self.models) and all(
            _NEEDED <= t.info.capabilities for m in self.models.values() for t in m.targets)
        self.router = Router(View(self.stats, self.health_score, penalty=penalty, tokens=tokens),
                             self.routing.weights, models=self.models,
                             affinity=self.routing.affinity)

    # --- planning ------------------------------------------------------------------

    def health_score(self, label: str) -> float:
        """1 healthy, 0.5 half-open, 0 open or failing its active check."""
        state = self.breakers.state(label)
        score = 1.0 if state == "closed" else 0.5 if state == "half-open" else 0.0
        if self.provider_health(label.split("/", 1)[0]) is False:
            return 0.0
        return score

    def order(self, ex: Exchange, model: "ModelConfig", needs: Needs | None = None,
              skips: Skips | None = None) -> list["TargetConfig"]:
        """The model's capable targets in routing order (proxy/engine/route_hooks.py)."""
        return order_targets(self, ex, model, needs, skips)

    # --- the attempt loop ------------------------------------------------------------

    async def __call__(self, ex: Exchange) -> None:
        retry = self.routing.retry
        clock = asyncio.get_running_loop().time
        self.budget.request()
        model = ex.model
        body = ex.body
        allowed = allowed_fallbacks(ex)
        # (without either key there is nothing to take out of the body)
        names = request_fallbacks(body, self.models, lambda n: key_allows(ex, n)) \
            if "fallbacks" in body or "extra_body" in body else None
        if names is None:
            names = [n for n in model.fallbacks if allowed(n)] if model.fallbacks else ()
        chain = [model] + [self.models[n] for n in dict.fromkeys(names) if n != model.name] \
            if names else [model]
        # The context-window check chooses among alternatives on an estimate. With one
        # target and nothing to fall back on, the upstream itself says whether the prompt
        # fits - better than refusing on a guess (and the estimate is not paid for).
        alone = len(chain) == 1 and len(model.targets) == 1 \
            and not model.context_window_fallbacks
        if self._all_capable and self.models.get(model.name) is model:
            # No configured target lacks a capability: only the size can rule one out.
            needs = None if alone else \
                request_needs(body, ex.estimated().prompt_tokens, capabilities=False)
        else:
            needs = request_needs(body, sized=False) if alone else \
                request_needs(body, ex.estimated().prompt_tokens)
        skips = Skips()

        def order(model: "ModelConfig", plan: RequestPlan) -> list["TargetConfig"]:
            targets = self.order(ex, model, needs, skips)
            if not targets and needs is not None and \
                    any(lacks(t, needs) == "context_window" for t in model.targets):
                plan.add_context_fallbacks(model)
            return targets

        plan = RequestPlan(retry, chain, order, self.models, clock, clock() + self.deadline,
                           self.rng, allowed)
        try:
            await self._run(ex, plan, skips)
        except GatewayError as err:
            if isinstance(err, UpstreamError) and (
                    not err.error_class.retryable or plan.attempts > 1):
                # A retry cannot fix it, or the gateway has retried already: an SDK
                # retrying on top would multiply upstream calls (3 × 3 for the
                # OpenAI SDK's default of 2 retries and attempts: 2 here).
                err.headers["x-should-retry"] = "false"
            err.headers.setdefault("x-gatewise-attempts", str(len(ex.attempts)))
            if ex.attempts:
                err.headers.setdefault("x-gatewise-target", ex.attempts[-1].target.label)
            if ex.strategy is not None:
                ex.route_headers(err.headers)
            raise
        finally:
            # What the upstreams billed, every attempt at its target's price: the
            # x-gatewise-cost header, logs and metrics read it (a budget policy settles
            # the same figure). An unpriced model leaves it unknown, not free.
            if ex.cost is None:
                ex.cost = total_cost(ex.attempts)

    async def _run(self, ex: Exchange, plan: RequestPlan, skips: Skips) -> None:
        last: UpstreamError | None = None
        switching = False  # the last attempt's credential failed: another one, at once
        while True:
            step = plan.next()
            if step is None:
                break
            if isinstance(step, float):
                await asyncio.sleep(step)
                continue
            target = step.target
            provider = self._providers[target.provider]
            if not provider.enabled:
                note(ex, target.label, "provider_disabled")
                skips.disabled.append(f"provider '{provider.name}' is disabled because "
                                      f"{provider.disabled_reason}")
                continue
            wait = self._gated(ex, target) if self.gates else None
            if wait is not None:
                skips.gated.append(wait)
                continue
            pool = self.pools.get(provider.name) if self.pools else None
            if pool is not None and pool.cooling() > 0:  # every key of it is resting
                note(ex, target.label, "credentials_cooling", pool.cooling())
                skips.gated.append(pool.cooling())
                continue
            ticket = self.breakers.admit(target.label)
            if type(ticket) is float:
                note(ex, target.label, "breaker_open", ticket)
                skips.open.append(ticket)
                continue
            cooling = self.stats.cooling(target.label) if not step.tries else 0.0
            if cooling > self.routing.retry.retry_after_cap:
                # Its upstream asked to be left alone for longer than the gateway would
                # ever wait (a long Retry-After, an exhausted quota, a refused key).
                self.breakers.record(target.label, ticket, None, settled=False)
                note(ex, target.label, "cooling", cooling)
                skips.cooling.append((cooling, self.stats.get(target.label).last_error_class))
                continue
            if plan.attempts and not switching and not self.budget.acquire():
                self.breakers.record(target.label, ticket, None, settled=False)
                note(ex, target.label, "retry_budget")
                break
            remaining = plan.remaining()
            if remaining <= 0:
                self.breakers.record(target.label, ticket, None, settled=False)
                note(ex, target.label, "deadline")
                skips.deadline = True
                break
            plan.attempts += 1
            switching = False
            credential = pool.pick() if pool is not None else None  # (one is ready: above)
            try:
                await self.attempt(ex, provider, target, model=step.model, ticket=ticket,
                                   deadline=remaining, credential=credential,
                                   last=plan.is_last(step) if ex.stream else True)
                return
            except UpstreamError as err:
                last = err
                if credential is not None and pool.failed(credential, err, self.routing.retry) \
                        and pool.cooling() == 0:
                    plan.again(step)  # the credential's fault: the provider's next key now
                    switching = True
                    continue
                cool = plan.failed(step, err)  # raises when the request must end
                if cool:
                    self.stats.cool_down(target.label, cool)
        raise self._no_answer(ex, last, skips, plan)

    def _no_answer(self, ex: Exchange, last: UpstreamError | None, skips: Skips,
                   plan: RequestPlan) -> GatewayError:
        if last is not None:
            return last
        if skips.deadline:
            return deadline_exceeded(self.deadline, plan.attempts)
        if skips.open:
            return all_open(ex.model, min(skips.open))
        if skips.cooling:
            return all_cooling(ex.model, *min(skips.cooling, key=lambda c: c[0]))
        if skips.gated:
            return no_target_room(ex.model, min(skips.gated))
        if skips.missing and not skips.disabled:
            return not_capable(ex.model, skips.missing)
        return provider_disabled(ex.model, skips.disabled or ["it has no targets"])

    def _gated(self, ex: Exchange, target: "TargetConfig") -> float | None:
        for gate in self.gates:
            wait = gate(ex, target)
            if wait is not None:
                note(ex, target.label, gate_reason(gate), wait)
                return wait
        return None

    # --- one attempt -----------------------------------------------------------------

    async def attempt(self, ex: Exchange, provider: "ProviderConfig", target: "TargetConfig",
                      *, model: "ModelConfig | None" = None, ticket: int = PASS,
                      deadline: float | None = None, last: bool = True,
                      credential: PooledCredential | None = None) -> None:
        """`last`: no other candidate is left, so a stream's first token may take
        `timeouts.first_token_last`. `credential`: the pooled key this attempt sends
        (its copy of the provider)."""
        model = model or ex.model
        label = target.label
        transport = self._transports[provider.name]
        budget = deadline if deadline is not None else self.deadline
        sends = provider if credential is None else credential.provider
        try:
            translator = self._translators[provider.type](sends)
            if translator.prepares:  # async pre-work, e.g. fetching image URLs
                await translator.prepare(ex.body)
            if ex.adapter is not None:
                translator = ex.adapter(translator)
            translator.drop_unsupported = model.drop_unsupported
            request = translator.request(ex.body, target, stream=ex.stream)
            # A free pooled connection, before the attempt's clock starts: waiting for
            # one is the gateway's time, never the upstream's (no breaker, no timeout).
            budget -= await transport.acquire(budget)
        except BaseException:
            self.breakers.record(label, ticket, None, settled=False)
            raise
        attempt = Attempt(target, time.perf_counter_ns(), model=model.name)
        if credential is not None:
            attempt.credential = credential.name
        ex.attempts.append(attempt)
        ex.served_model = model.name
        ex.usage = None  # from here on, this attempt's
        settled = False
        tokens = 0
        if self.tokens is not None:  # least_tokens: the estimate is kept on the exchange
            estimate = ex.estimated()
            tokens = estimate.prompt_tokens + estimate.output_for(target)
            self.tokens.add(label, tokens)
        self.stats.started(label)
        try:
            if ex.stream:
                first_token = min(provider.timeouts.first_token_for(last), budget)
                await StreamRelay(ex, attempt, translator, provider).run(
                    transport, request, first_token)
            else:
                await relay_json(ex, attempt, translator, transport, request, provider, budget)
            settled = True
        except UpstreamError as err:
            attempt.error_class = err.error_class
            if err.upstream_status is not None:  # (None: no answer came at all)
                attempt.status = err.upstream_status
            settled = True
            raise
        finally:
            transport.release()
            attempt.ended_ns = time.perf_counter_ns()
            bill(ex, attempt, translator)
            if tokens:
                self.tokens.done(label, tokens)
            self._settle(ex, attempt, model, ticket, settled)
            for observe in self.observers:
                observe(ex, attempt)

    def _settle(self, ex: Exchange, attempt: Attempt, model: "ModelConfig", ticket: int,
                settled: bool) -> None:
        label = attempt.target.label
        cls = attempt.error_class
        ok: bool | None = None
        latency = None
        if settled and cls is None:
            ok = True
            end = attempt.first_token_ns or attempt.ended_ns
            latency = (end - attempt.started_ns) / 1e6
        elif cls is not None and cls.counts_against_target:
            ok = False
        self.stats.finished(label, ok=ok, latency_ms=latency,
                            error_class=cls.value if cls is not None else None)
        if ex.task is not None:  # adaptive learns per task kind too
            self.router.view.tasks.learn(ex.task, label, ok, latency)
        self.breakers.record(label, ticket, cls, settled=settled)
        if attempt_log.isEnabledFor(logging.INFO):
            attempt_log.info("attempt", extra={"fields": {
                "request_id": ex.request_id, "model": model.name, "target": label,
                "attempt": len(ex.attempts), "status": attempt.status if settled else 499,
                "error_class": cls.value if cls is not None else None,
                "probe": ticket != PASS,
                "ms": round((attempt.ended_ns - attempt.started_ns) / 1e6, 3)}})

