"""The application object: everything a running gateway owns.

No mutable state lives outside it: config, the upstream session, one transport
per provider, the pipeline. Tests build as many as they like side by side.
"""

from __future__ import annotations

import logging
import time
from typing import Any, AsyncIterator

import orjson
from aiohttp import web

from proxy.config import GatewayConfig
from proxy.dispatch import Dispatcher
from proxy.pipeline import Pipeline, Policy
from proxy.upstream import HttpTransport, new_session
from translators import PROVIDER_TYPES
from translators.mock import MockTransport

log = logging.getLogger("gatewise")

REQUEST_ID = web.RequestKey("request_id", str)


class Gateway:
    def __init__(self, config: GatewayConfig, policies: list[Policy] | None = None) -> None:
        self.config = config
        self.transports: dict[str, Any] = {}
        self.session = None
        self.dispatcher = Dispatcher(config.providers, PROVIDER_TYPES, self.transports)
        self.policies: list[Policy] = list(policies) if policies is not None else []
        self.pipeline = Pipeline(self.policies, self.dispatcher)
        created = int(time.time())
        self.model_entries = {name: {"id": name, "object": "model", "created": created,
                                     "owned_by": "gatewise"} for name in config.models}
        self.models_body = orjson.dumps({"object": "list",
                                         "data": list(self.model_entries.values())})

    @property
    def session_open(self) -> bool:
        return self.session is not None and not self.session.closed

    def usable_models(self) -> list[str]:
        providers = self.config.providers
        return [name for name, model in self.config.models.items()
                if any(providers[t.provider].enabled for t in model.targets)]

    def warn_disabled(self) -> None:
        for provider in self.config.providers.values():
            if not provider.enabled:
                log.warning(f"provider '{provider.name}' is disabled: {provider.disabled_reason}; "
                            "its models answer 503 until it is set")

    async def lifespan(self, app: web.Application) -> AsyncIterator[None]:
        self.session = new_session()
        for name, provider in self.config.providers.items():
            if PROVIDER_TYPES[provider.type].in_process:
                self.transports[name] = MockTransport(provider)
            else:
                self.transports[name] = HttpTransport(self.session, provider)
        try:
            yield
        finally:
            await self.session.close()


GATEWAY = web.AppKey("gateway", Gateway)
