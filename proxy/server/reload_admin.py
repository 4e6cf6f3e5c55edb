"""The ways to ask for a reload: `POST /admin/reload`, SIGHUP, `--watch`, and a
message from another instance (`POST /admin/reload?all=true` with the Redis backend).

`POST /admin/reload` answers 200 with what changed, or 422 with every problem
when the file is refused (the running config stays). With `?all=true` the
request is also published to every instance sharing the Redis state (each
reloads its own copy of the file and logs its own result); the answer says how
many instances heard it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable

import orjson
from aiohttp import web

from proxy.config.types import GatewayConfig, is_loopback
from proxy.core.errors import bad_request
from proxy.server.configure import load_config
from proxy.server.gateway import GATEWAY
from proxy.server.keyring import Actor
from proxy.server.live import Live
from proxy.server.reload import Loader
from proxy.server.reload_watch import watch_files
from proxy.state.api_keys import KeyStoreDown

log = logging.getLogger("gatewise.reload")
RELOAD_EVENT = "reload"


def file_loader(config: GatewayConfig) -> Loader | None:
    """Reading the file `config` came from again (with the process's environment)."""
    source = config.source
    if not source or source.startswith("<") or not Path(source).exists():
        return None
    return lambda: load_config(source)


def reload_checks(live: Live) -> list[Callable[[GatewayConfig], list[str]]]:
    """Problems of a valid config against what the running gateway holds."""
    def api_key_names(config: GatewayConfig) -> list[str]:
        keyring = live.current.keyring
        if keyring is None:
            return []
        return [f"keys[{i}].name: '{k.name}' is already the name of a key made through the "
                "admin API (names are unique across the file and the API)"
                for i, k in enumerate(config.keys) if keyring.index.has_name(k.name)]
    def stays_closed(config: GatewayConfig) -> list[str]:
        """A reload never opens a gateway bound beyond loopback to callers without a key
        (what start-up refuses too)."""
        host = live.host or config.server.host
        keyring = live.current.keyring
        if config.keys or config.server.allow_unauthenticated or is_loopback(host) \
                or (keyring is not None and keyring.index.any):
            return []
        return [f"keys: without client keys gatewise would serve {host} to anyone who "
                "reaches it; keep keys, bind server.host to 127.0.0.1 (a restart), or set "
                "server.allow_unauthenticated: true"]
    return [api_key_names, stays_closed]


async def reload(request: web.Request) -> web.Response:
    """POST /admin/reload[?all=true]"""
    live: Any = request.app[GATEWAY]
    live.admin_auth.check(request.headers)
    everywhere = request.query.get("all", "false")
    if everywhere not in ("true", "false", "1", "0"):
        raise bad_request("Invalid 'all': expected true or false.", param="all")
    result = await live.reloader.reload("admin API")
    body = result.json()
    if everywhere in ("true", "1"):
        events = live.current.shared.events if live.current.shared is not None else None
        body["instances_notified"] = await events.publish(RELOAD_EVENT) if events else 0
    keyring = live.current.keyring
    if keyring is not None:  # the audit log lives with the keys
        actor = Actor(live.admin_auth.id or "admin", request.remote or "unknown")
        try:
            await keyring.record("config.reload", None, actor, detail={
                "status": result.status, "generation": result.generation})
        except KeyStoreDown as exc:
            log.error(f"reload: the audit row was not written ({exc})")
    return web.Response(status=200 if result.ok else 422, body=orjson.dumps(body),
                        content_type="application/json")


def add_reload_routes(app: web.Application) -> None:
    app.router.add_post("/admin/reload", reload)


async def start_watching(live: Live) -> None:
    """`--watch`: poll the config file and its secret files."""
    live.spawn(watch_files(lambda: live.current.config.files, live.reloader.reload),
               name="gatewise-watch")
    log.info("watching " + ", ".join(live.current.config.files) + " for changes")


def on_hangup(live: Live) -> None:
    """SIGHUP: reload (under --workers the supervisor sends it to every worker)."""
    live.reloader.reload_soon("SIGHUP")


def listen_for_reloads(live: Live) -> None:
    """Reload when another instance publishes `?all=true` (Redis backend only)."""
    shared = live.current.shared
    if shared is None:
        return

    async def heard(message: dict) -> None:
        if message.get("origin") != shared.redis.instance_id:
            log.info(f"reload asked by instance {message.get('origin')} "
                     f"(pid {os.getpid()} reloads its own copy of the file)")
            await live.reloader.reload("another instance")

    shared.events.handlers[RELOAD_EVENT] = heard
