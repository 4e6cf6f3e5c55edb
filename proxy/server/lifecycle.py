"""A Gateway generation's life: the first opens what the process uses, a reload's
takes over from the running one, a retired one closes what it alone held, the
last one closes everything (proxy/server/gateway.py builds them; live.py and
reload.py decide when); and what it can serve now, for the start-up lines.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from policies.budget_carry import adopt as adopt_budget
from policies.budget_carry import keys_changed
from proxy.core.errors import StartupError
from proxy.engine.mock_upstream import MockTransport
from proxy.engine.transport import HttpTransport, new_session
from proxy.state.api_keys import KeyStoreDown
from translators import PROVIDER_TYPES

log = logging.getLogger("gatewise")


class Lifecycle:
    """Mixed into Gateway: its start, hand-over and stop (it has every attribute used)."""

    config: Any
    transports: dict[str, Any]
    _tasks: set[asyncio.Task]

    def _keys_changed(self, names: set[str]) -> None:
        """Keys changed through the admin API: budgets read theirs again."""
        if self.budget is not None:
            task = asyncio.get_running_loop().create_task(keys_changed(self.budget, names))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def usable_models(self) -> list[str]:
        """Models that can answer now: a target of their own, or of one of their
        fallback models, whose provider is enabled, not failing its health check,
        and whose circuit breaker is not open."""
        providers, models = self.config.providers, self.config.models
        breakers, health = self.dispatcher.breakers, self.health

        def live(name: str) -> bool:
            return any(providers[t.provider].enabled and health.status(t.provider) is not False
                       and not breakers.is_open(t.label) for t in models[name].targets)

        alive = {name for name in models if live(name)}
        return [name for name, model in models.items()
                if name in alive or any(f in alive for f in model.fallbacks)]

    def why_unavailable(self, name: str) -> str:
        """Why a model cannot answer now: each of its targets' reasons, once."""
        providers, breakers = self.config.providers, self.dispatcher.breakers
        reasons: dict[str, None] = {}
        for target in self.config.models[name].targets:
            provider = providers[target.provider]
            if not provider.enabled:
                reasons[f"provider '{provider.name}' is disabled ({provider.disabled_reason})"] \
                    = None
            elif self.health.status(target.provider) is False:
                reasons[f"provider '{provider.name}' fails its health check"] = None
            elif breakers.is_open(target.label):
                reasons[f"target {target.label} is failing (circuit open)"] = None
        return "; ".join(reasons) or "no target can answer"

    def startup_lines(self) -> list[str]:
        """Which models can answer, and for the others why not."""
        usable = self.usable_models()
        models = self.config.models
        lines = [f"{len(usable)} of {len(models)} model(s) can answer: "
                 + (", ".join(usable) or "none")]
        lines += [f"model '{name}' cannot answer: {self.why_unavailable(name)}"
                  for name in models if name not in usable]
        return lines

    def warn_disabled(self) -> None:
        for provider in self.config.providers.values():
            if not provider.enabled:
                log.warning(f"provider '{provider.name}' is disabled: {provider.disabled_reason}; "
                            "its models answer 503 until it is set")

    def _open_transports(self) -> None:
        """A transport for each provider that has none yet (a reload carries over
        those of unchanged providers, with their pooled connections)."""
        for name, provider in self.config.providers.items():
            if name in self.transports:
                continue
            if PROVIDER_TYPES[provider.type].in_process:
                self.transports[name] = MockTransport(provider)
            else:  # one pool per provider, `max_connections` at most
                self.transports[name] = HttpTransport(provider)

    def bind(self) -> None:
        """Point what outlives a generation (metrics, the page, the alerts' redaction,
        the shared state's hooks) at this one."""
        config = self.config
        labels = [t.label for m in config.models.values() for t in m.targets]
        self.metrics.track_targets(labels)
        self.metrics.watch_breakers(self.dispatcher.breakers.state)
        self.metrics.follow(self.live.observe_request if self.watching else None,
                            [self.slo.gauges] if config.slos else ())
        self.live.follow(labels, config.models)
        self.watch.follow(config, self.slo, self.dispatcher, self.health, self.budget)
        self.alerts.redact.add(config.secrets())
        if self.shared is not None:
            self.shared.bind(config, self.dispatcher.stats, self.budget)
        if self.keyring is not None:
            self.keyring.index.on_change = self._keys_changed

    async def start(self, app: web.Application) -> None:
        """The first generation opens everything the process will use."""
        self.bind()
        self.session = new_session()  # the gateway's own calls (alert webhooks)
        self._open_transports()
        self.health.start()
        self.alerts.start()
        self.watch.start()
        self._lag = asyncio.get_running_loop().create_task(self.metrics.watch_loop(),
                                                           name="gatewise-loop-lag")
        if self.shared is not None:
            await self.shared.start()
        if self.budget is not None:
            if self.config.state.ledger is None and self.config.state.postgres is None:
                log.warning("budgets are kept in memory only: set state.ledger (sqlite:PATH) "
                            "so a restart forgets no spend")
            await self.budget.start()
        if self.keyring is not None:
            try:
                await self.keyring.start()
            except KeyStoreDown as exc:
                raise StartupError(f"cannot open the client keys beside the spend ledger: "
                                   f"{exc}") from None
            if self.budget is not None:  # the API keys' budgets, from the ledger too
                await keys_changed(self.budget, set(self.keyring.index.records))
        await self.responses.open()

    async def begin(self, previous: "Lifecycle") -> None:
        """A reload's generation takes over from `previous`: only what is new opens."""
        self._open_transports()
        if self.budget is not None:
            await adopt_budget(self.budget, previous.budget)
        self._lag, previous._lag = previous._lag, None  # the one loop-lag sampler
        self.health.start()
        self.bind()

    async def retire(self, others: "list[Lifecycle]") -> None:
        """After its last request: close what none of `others` (the generations still
        serving) holds — transports of providers that changed or went away."""
        await self.health.stop()
        held = {id(t) for g in others for t in g.transports.values()}
        for transport in self.transports.values():
            if id(transport) not in held and isinstance(transport, HttpTransport):
                await transport.close()

    async def close(self) -> None:
        """The process stops: close everything (the last generation owns it all)."""
        if self._lag is not None:
            self._lag.cancel()
        await self.watch.stop()
        if self.keyring is not None:
            await self.keyring.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.responses.close()
        if self.budget is not None:
            await self.budget.stop()
        elif self.spare_ledger is not None:
            await self.spare_ledger.close()
        await self.alerts.stop()
        if self.shared is not None:
            await self.shared.close()
        await self.health.stop()
        for transport in self.transports.values():
            if isinstance(transport, HttpTransport):
                await transport.close()
        if self.session is not None:
            await self.session.close()
        if self.tracing is not None:
            self.tracing.shutdown()  # flushes the OTLP batch
