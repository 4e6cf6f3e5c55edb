"""Health: optional active checks per provider, and the admin view of every target.

A provider with `health_check` in the config is probed in the background, all
providers at once, each result cached for its interval. The probe is the cheap
request each upstream type documents for listing its models (`PROBES`), sent
with the type's own credentials (`Translator.auth_headers`); or a one-token
chat request when the check names a `model`. A failing provider's targets go
to the back of every plan and count as unhealthy for `/health/ready`.
`targets_report` (for `GET /admin/targets`) shows each target's breaker state, success
rate, latency average, in-flight count and last error class, and the state of each
credential of its provider's key pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from proxy.config.routing import HealthCheck
from proxy.config.types import TargetConfig
from proxy.core.errors import GatewayError
from translators.base import UpstreamRequest

if TYPE_CHECKING:
    from proxy.config.types import GatewayConfig, ProviderConfig

log = logging.getLogger("gatewise.health")

#: provider type -> the path of its models list, below base_url
PROBES = {
    "openai": "/models",  # base_url ends in /v1: GET /v1/models
    "anthropic": "/v1/models",  # x-api-key and anthropic-version, like a message
    "gemini": "/v1beta/models",  # models.list, x-goog-api-key
    "ollama": "/api/tags",  # the local models
    "azure": "/openai/models?api-version={api_version}",  # Models - List (data plane)
}
AZURE_V1_PROBE = "/openai/v1/models"  # api_style: v1


@dataclass(slots=True)
class CheckResult:
    healthy: bool
    checked_at: float  # monotonic
    detail: str


class HealthChecker:
    def __init__(self, config: "GatewayConfig", translators: Mapping[str, Any],
                 transports: Mapping[str, Any], clock=time.monotonic) -> None:
        self.checks: Mapping[str, HealthCheck] = {
            name: check for name, check in config.routing.health.items()
            if name in config.providers}
        self._providers = config.providers
        self._translators = translators
        self._transports = transports
        self._clock = clock
        self.results: dict[str, CheckResult] = {}
        self._task: asyncio.Task | None = None

    def status(self, provider: str) -> bool | None:
        """The cached verdict: None when the provider has no check (or none ran yet)."""
        result = self.results.get(provider)
        return None if result is None else result.healthy

    async def run_once(self, force: bool = False) -> dict[str, CheckResult]:
        """Check every provider whose cached result is older than its interval, concurrently."""
        now = self._clock()
        due = [name for name, check in self.checks.items()
               if force or name not in self.results
               or now - self.results[name].checked_at >= check.interval]
        if due:
            results = await asyncio.gather(*(self._check(name) for name in due))
            for name, result in zip(due, results):
                previous = self.results.get(name)
                if previous is None or previous.healthy != result.healthy:
                    log.log(logging.INFO if result.healthy else logging.WARNING,
                            f"provider '{name}' is {'healthy' if result.healthy else 'unhealthy'}"
                            f": {result.detail}")
                self.results[name] = result
        return self.results

    async def _check(self, name: str) -> CheckResult:
        check = self.checks[name]
        provider = self._providers[name]
        translator_type = self._translators[provider.type]
        if not provider.enabled:
            return CheckResult(False, self._clock(), f"disabled: {provider.disabled_reason}")
        if translator_type.in_process:
            return CheckResult(True, self._clock(), "in-process")
        try:
            request = self._request(provider, translator_type, check)
            async with asyncio.timeout(check.timeout):
                async with self._transports[name].open(request, provider.timeouts) as resp:
                    await resp.read()
                    status = resp.status
        except TimeoutError:
            return CheckResult(False, self._clock(), f"no answer within {check.timeout:g}s")
        except GatewayError as err:
            return CheckResult(False, self._clock(), err.message)
        except Exception as exc:  # a check must never take the gateway down
            return CheckResult(False, self._clock(), type(exc).__name__)
        healthy = status < 400 or status == 429
        return CheckResult(healthy, self._clock(), f"HTTP {status}")

    @staticmethod
    def _request(provider: "ProviderConfig", translator_type: Any,
                 check: HealthCheck) -> UpstreamRequest:
        translator = translator_type(provider)
        if check.model:
            chat = {"model": check.model, "max_tokens": 1,
                    "messages": [{"role": "user", "content": "ping"}]}
            return translator.request(chat, TargetConfig(provider.name, check.model),
                                      stream=False)
        return UpstreamRequest("GET", provider.base_url + probe_path(provider, check),
                               translator.auth_headers(), b"", False)

    async def _loop(self) -> None:
        tick = max(0.05, min(check.interval for check in self.checks.values()) / 2)
        while True:
            try:
                await self.run_once()
            except Exception:  # pragma: no cover - logged, and the loop goes on
                log.exception("health check round failed")
            await asyncio.sleep(tick)

    def start(self) -> None:
        if self.checks and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def probe_path(provider: "ProviderConfig", check: HealthCheck) -> str:
    """The check's own path, else the documented models list of the provider's type."""
    if check.path is not None:
        return check.path
    options = provider.options
    if provider.type == "azure" and options.get("api_style") == "v1":
        return AZURE_V1_PROBE
    return PROBES.get(provider.type, "/models").format(
        api_version=options.get("api_version") or "2024-10-21")


def targets_report(config: "GatewayConfig", dispatcher: Any, health: HealthChecker) -> dict:
    """One row per target (provider/model), with the public models that use it."""
    rows: dict[str, dict] = {}
    for model in config.models.values():
        for target in model.targets:
            row = rows.get(target.label)
            if row is None:
                provider = config.providers[target.provider]
                row = rows[target.label] = {
                    "target": target.label, "provider": target.provider, "model": target.model,
                    "models": [], "provider_enabled": provider.enabled,
                    "provider_healthy": health.status(target.provider),
                    "breaker": dispatcher.breakers.state(target.label),
                    **dispatcher.stats.get(target.label).snapshot()}
                if target.tier is not None:
                    row["tier"] = target.tier
                if dispatcher.tokens is not None:  # least_tokens counts them
                    row["tokens_in_flight"] = dispatcher.tokens.get(target.label)
                pool = dispatcher.pools.get(target.provider)
                if pool is not None:  # a key pool: each credential by name, never the key
                    row["credentials"] = pool.report()
            row["models"].append(model.name)
    return {"object": "list", "data": list(rows.values())}
