"""The `gatewise` command: serve, check."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

from proxy import __version__
from proxy.config import ConfigError, GatewayConfig, load_config

DEFAULT_CONFIG = os.environ.get("GATEWISE_CONFIG", "proxy.yaml")
log = logging.getLogger("gatewise")


def _load(path: str) -> GatewayConfig | None:
    try:
        return load_config(path)
    except ConfigError as err:
        print(f"gatewise: {path}: the config has {len(err.problems)} problem(s):", file=sys.stderr)
        for problem in err.problems:
            print(f"  {problem}", file=sys.stderr)
        return None


def cmd_check(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 2
    print(f"{args.config}: OK — {len(config.providers)} provider(s), {len(config.models)} model(s)")
    for provider in config.providers.values():
        status = "enabled" if provider.enabled else f"DISABLED ({provider.disabled_reason})"
        where = provider.base_url if provider.type != "mock" else "in-process"
        print(f"  provider {provider.name}: type {provider.type}, {where}, {status}")
    for model in config.models.values():
        targets = ", ".join(t.label for t in model.targets) or "(none)"
        line = f"  model {model.name} [{model.strategy}] -> {targets}"
        if model.fallbacks:
            line += f"; fallbacks: {', '.join(model.fallbacks)}"
        print(line)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 2
    from aiohttp import web

    from proxy.app import build_app
    from proxy.gateway import GATEWAY
    from proxy.logs import configure_logging

    configure_logging(config.telemetry.log_format, config.telemetry.log_level, config.secrets())
    host = args.host or config.server.host
    port = args.port if args.port is not None else config.server.port
    app = build_app(config)
    app[GATEWAY].warn_disabled()
    try:
        import uvloop  # optional: faster event loop where installed
        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    log.info(f"gatewise {__version__} serving {len(config.models)} model(s) from "
             f"{config.source} on http://{host}:{port}")
    runner_kwargs = {"loop": loop_factory()} if loop_factory else {}
    web.run_app(app, host=host, port=port, access_log=None, print=None,
                handler_cancellation=True, shutdown_timeout=10, **runner_kwargs)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gatewise", description="OpenAI-compatible LLM gateway")
    parser.add_argument("--version", action="version", version=f"gatewise {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the gateway")
    serve.add_argument("--config", default=DEFAULT_CONFIG, help="YAML config file")
    serve.add_argument("--host", default=None, help="override server.host")
    serve.add_argument("--port", type=int, default=None, help="override server.port")
    serve.set_defaults(func=cmd_serve)
    check = sub.add_parser("check", help="validate a config and print its models")
    check.add_argument("--config", default=DEFAULT_CONFIG, help="YAML config file")
    check.set_defaults(func=cmd_check)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
