"""The `gatewise` command: serve, check, spend, keys."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Sequence

from proxy import __version__
from proxy.core.errors import StartupError
from proxy.config.types import is_loopback
from proxy.server.configure import ConfigError, GatewayConfig, load_config

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
    for slo in config.slos:
        print(f"  slo {slo.id}: {slo.threshold:g}{' ms' if slo.objective != 'availability' else ''}")
    for sink in config.alerts.sinks:  # the host only: a webhook's path may be its token
        events = ", ".join(sink.events) or "every event"
        print(f"  alerts -> {sink.where} ({sink.format}, {events}"
              f"{', signed' if sink.secret else ''})")
    if config.admin_key and config.ui:
        print("  page: /ui (log in with the admin key)")
    for rule in config.routes:
        then = [f"model {rule.model}" if rule.model else "",
                f"targets {', '.join(sorted({t.label for ts in rule.subsets.values() for t in ts}))}"
                if rule.subsets is not None else "",
                f"strategy {rule.strategy.name}" if rule.strategy else "",
                f"task {rule.task}" if rule.task else ""]
        print(f"  route {rule.name} -> {'; '.join(t for t in then if t)}")
    return 0


def unauthenticated_refusal(config: GatewayConfig, host: str) -> str | None:
    """Why gatewise must not start open to the network (None: it may start)."""
    if config.keys or is_loopback(host) or config.server.allow_unauthenticated:
        return None
    from proxy.server.keys_cli import any_api_keys

    if any_api_keys(config):  # keys made through the API: callers must present one
        return None
    return (f"refusing to serve on {host} without client keys: anyone who reaches it could "
            "spend your provider credit. Add `keys:` (docs/keys-and-budgets.md), bind "
            "server.host to 127.0.0.1, or set server.allow_unauthenticated: true.")


def cmd_serve(args: argparse.Namespace) -> int:
    hangup = Hangup()  # from now on a SIGHUP is never fatal
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda _signum, _frame: hangup())
    config = _load(args.config)
    if config is None:
        return 2
    host = args.host or config.server.host
    port = args.port if args.port is not None else config.server.port
    refusal = unauthenticated_refusal(config, host)
    if refusal is not None:
        print(f"gatewise: {refusal}", file=sys.stderr)
        return 2
    from proxy.server.app import ADMIN_APP, build_app
    from proxy.server.gateway import GATEWAY
    from proxy.server.logs import configure_logging
    from proxy.server.serve import raise_fd_limit, run

    configure_logging(config.telemetry.log_format, config.telemetry.log_level, config.secrets())
    if args.workers > 1:
        from proxy.server import workers

        reason = workers.refusal(config, args.workers)
        if reason is not None:
            print(f"gatewise: {reason}", file=sys.stderr)
            return 2
        return workers.run(args.config, host, port, args.workers, watch=args.watch)
    app = build_app(config, watch=args.watch)
    app.on_startup.append(_freeze_heap)
    app.on_startup.append(hangup.open)
    gateway = app[GATEWAY]
    gateway.host = host  # (a reload must not open it to the network: reload_admin.py)
    gateway.warn_disabled()
    try:
        import uvloop  # a dependency on Linux and macOS; the stdlib loop elsewhere
        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    files = raise_fd_limit()
    log.info(f"gatewise {__version__} on http://{host}:{port} from {config.source}")
    for line in gateway.startup_lines():
        log.info(line)
    admin = None
    if ADMIN_APP in app:
        admin = (app[ADMIN_APP], config.server.admin_host, config.server.admin_port)
        log.info(f"admin routes and /metrics on http://{admin[1]}:{admin[2]}")
    if not config.keys:
        (log.info if is_loopback(host) else log.warning)(
            f"no client keys configured: serving WITHOUT authentication on {host}"
            + ("" if is_loopback(host) else " (server.allow_unauthenticated is set)"))
    if files < 2 * config.server.max_in_flight + 64:
        log.warning(f"the open-file limit is {files}: fewer than the 2 per request that "
                    f"server.max_in_flight ({config.server.max_in_flight}) needs; raise it "
                    "(ulimit -n) or lower max_in_flight")
    try:
        return run(app, host, port, reuse_port=args.reuse_port, admin=admin,
                   loop_factory=loop_factory, hangup=hangup)
    except StartupError as err:  # e.g. a ledger that cannot be opened: one line, no traceback
        print(f"gatewise: {err}", file=sys.stderr)
        return 2


def cmd_spend(args: argparse.Namespace) -> int:
    """Read the ledger directly (a SQLite file works while the server runs: WAL readers
    don't block; PostgreSQL is read over a connection of its own)."""
    config = _load(args.config)
    if config is None:
        return 2
    import time

    from proxy.server.admin import spend_table
    from proxy.state.ledger import period_start

    since = period_start(args.period, time.time())
    where = config.state.ledger
    try:
        if config.state.postgres is not None:
            import asyncio

            from proxy.state.ledger_pg import PostgresLedger, read_report

            where = PostgresLedger(config.state.postgres).where
            rows = asyncio.run(read_report(config.state.postgres, args.by, since))
        elif where is None:
            print("gatewise: state.ledger is not set: spend is not persisted", file=sys.stderr)
            return 2
        else:
            rows = _sqlite_report(where, args.by, since)
    except Exception as exc:  # noqa: BLE001 — one line, whatever the database said
        print(f"gatewise: cannot read the ledger {where}: {exc}", file=sys.stderr)
        return 2
    print(f"spend by {args.by}, period: {args.period} (UTC), ledger: {where}")
    print(spend_table(rows, args.by))
    return 0


def _sqlite_report(path: str, by: str, since: float) -> list[dict]:
    """A ledger file the server has not created yet holds no spend: an empty table."""
    from pathlib import Path

    from proxy.state.ledger import connect, query_report

    if not Path(path).exists():
        print(f"gatewise: no ledger file at {path} yet: nothing has been recorded",
              file=sys.stderr)
        return []
    conn = connect(path, readonly=True)
    try:
        return query_report(conn, by, since)
    finally:
        conn.close()


def cmd_keys(args: argparse.Namespace) -> int:
    """`gatewise keys …` (proxy/server/keys_cli.py), on the ledger's database."""
    config = _load(args.config)
    if config is None:
        return 2
    from proxy.server import keys_cli

    return keys_cli.run(config, args)


class Hangup:
    """SIGHUP, from the first line of `serve` on: reload the config, never die.

    Until the gateway has started, hangups are remembered as one (the reload reads the
    file as it is then) and honoured at start-up. One object takes the signal both
    before the event loop (a plain signal handler) and in it (serve.py), so a signal
    that lands while the two hand over is seen once, not twice.
    """

    def __init__(self) -> None:
        self.live: object | None = None
        self.pending = False

    def __call__(self) -> None:
        if self.live is None:
            self.pending = True
            return
        from proxy.server.reload_admin import on_hangup

        on_hangup(self.live)  # type: ignore[arg-type]

    async def open(self, app: object) -> None:
        """An on_startup hook: from now on a hangup reloads at once."""
        from proxy.server.gateway import GATEWAY

        self.live = app[GATEWAY]  # type: ignore[index]
        if self.pending:
            self.pending = False
            self()


async def _freeze_heap(app: object) -> None:
    """Everything built at start-up lives as long as the process: move it out of the
    cyclic GC's reach, so its collections stop re-scanning tens of thousands of
    long-lived objects (measured: about 40 µs of CPU per request on the benchmark)."""
    import gc

    gc.collect()
    gc.freeze()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gatewise", description="OpenAI-compatible LLM gateway")
    parser.add_argument("--version", action="version", version=f"gatewise {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the gateway")
    serve.add_argument("--config", default=DEFAULT_CONFIG, help="YAML config file")
    serve.add_argument("--host", default=None, help="override server.host")
    serve.add_argument("--port", type=int, default=None, help="override server.port")
    serve.add_argument("--workers", type=int, default=1,
                       help="processes serving the port (needs state.backend: redis)")
    serve.add_argument("--watch", action="store_true",
                       help="reload when the config file or a secret file it names changes")
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    serve.set_defaults(func=cmd_serve)
    check = sub.add_parser("check", help="validate a config and print its models")
    check.add_argument("--config", default=DEFAULT_CONFIG, help="YAML config file")
    check.set_defaults(func=cmd_check)
    spend = sub.add_parser("spend", help="print spend from the ledger as a table")
    spend.add_argument("--config", default=DEFAULT_CONFIG, help="YAML config file")
    spend.add_argument("--by", choices=("key", "model", "provider"), default="key")
    spend.add_argument("--period", choices=("day", "month", "total"), default="day")
    spend.set_defaults(func=cmd_spend)
    from proxy.server import keys_cli

    keys_cli.add_parser(sub, DEFAULT_CONFIG, cmd_keys)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
