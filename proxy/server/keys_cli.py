"""`gatewise keys create|list|show|update|revoke|rotate`: the key API from the shell.

It works on the same database as the running gateway (the ledger's SQLite file,
or its PostgreSQL), through the same operations, checks and audit rows as
`/admin/keys`; running gateways pick the change up within a second. The audit
rows name the shell user (`cli:USER`, source `local`). Tables for people,
`--json` for scripts; a new secret is printed once.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import time
from typing import Any, Awaitable, Callable

import orjson

from proxy.server.configure import GatewayConfig
from proxy.server.key_views import api_key_view, file_key_view
from proxy.server.keyring import Actor, FileKey, KeyProblems, KeyRing, build_store
from proxy.state.api_keys import KeyConflict, KeyNotFound, KeyStoreDown


def add_parser(sub: Any, config_default: str, handler: Callable) -> None:
    keys = sub.add_parser("keys", help="client keys in the ledger's database (the key API)")
    actions = keys.add_subparsers(dest="action", required=True)

    def action(name: str, help_: str, named: bool = True, settings: bool = False):
        p = actions.add_parser(name, help=help_)
        p.add_argument("--config", default=config_default, help="YAML config file")
        p.add_argument("--json", action="store_true", help="print JSON")
        if named:
            p.add_argument("name")
        if settings:
            p.add_argument("--models", help="comma-separated model names or globs")
            p.add_argument("--rpm", type=int)
            p.add_argument("--tpm", type=int)
            p.add_argument("--max-concurrent", type=int)
            p.add_argument("--budget-usd", type=float)
            p.add_argument("--budget-per", choices=("day", "month", "total"), default="day")
            p.add_argument("--expires-at", help="ISO 8601 date-time, or seconds since the epoch")
            p.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE")
            p.add_argument("--clear", action="append", default=[], metavar="FIELD",
                           help="remove a setting (update only)")
        p.set_defaults(func=handler)
        return p

    action("create", "make a key; its secret is printed once", settings=True)
    listing = action("list", "list the file's and the API's keys", named=False)
    listing.add_argument("--all", action="store_true", help="revoked keys too")
    action("show", "one key")
    action("update", "change a key's settings", settings=True)
    action("revoke", "revoke a key (refused everywhere within a second)")
    rotate = action("rotate", "a new secret; the old one works for --grace seconds")
    rotate.add_argument("--grace", type=float, default=None,
                        help="seconds the old secret keeps working (default 3600)")


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if args.models is not None:
        body["models"] = [m.strip() for m in args.models.split(",") if m.strip()]
    for name in ("rpm", "tpm", "max_concurrent"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    if args.budget_usd is not None:
        body["budget"] = {"usd": args.budget_usd, "per": args.budget_per}
    if args.expires_at is not None:
        at = args.expires_at
        body["expires_at"] = float(at) if at.replace(".", "", 1).isdigit() else at
    if args.metadata:
        body["metadata"] = dict(item.partition("=")[::2] for item in args.metadata)
    for name in args.clear:
        body[name] = None
    return body


def any_api_keys(config: GatewayConfig) -> bool:
    """Whether the key database holds any key (then callers must present one); False
    when there is none or it cannot be read (the caller refuses to start open)."""
    store = build_store(config)
    if store is None:
        return False

    async def look() -> bool:
        await store.open()
        try:
            return bool(await store.all())
        finally:
            await store.close()
    try:
        return asyncio.run(look())
    except (KeyStoreDown, OSError):
        return False


def run(config: GatewayConfig, args: argparse.Namespace) -> int:
    store = build_store(config)
    if store is None:
        print("gatewise: the key API needs the ledger in a file or on PostgreSQL "
              "(state.ledger: sqlite:PATH or postgresql://…)", file=sys.stderr)
        return 2
    return asyncio.run(_run(config, KeyRing(store), args))


async def _run(config: GatewayConfig, ring: KeyRing, args: argparse.Namespace) -> int:
    actor = Actor(f"cli:{getpass.getuser()}", "local")
    files = {k.name for k in config.keys}
    try:
        await ring.store.open()
        try:
            return await _act(config, ring, args, actor, files)
        finally:
            await ring.store.close()
    except (KeyProblems, KeyConflict, KeyNotFound, FileKey, KeyStoreDown) as err:
        what = {KeyNotFound: "no live key named", FileKey: "this key is in the config file:"
                }.get(type(err), "")
        print(f"gatewise: {what} {err}".replace("  ", " "), file=sys.stderr)
        return 1


async def _act(config: GatewayConfig, ring: KeyRing, args: argparse.Namespace, actor: Actor,
               files: set[str]) -> int:
    action = args.action
    secret = None
    if action == "list":
        views = [file_key_view(k) for k in config.keys]
        views += [api_key_view(r) for r in await ring.store.all()
                  if args.all or r.revoked_at is None]
        _print(views, args.json)
        return 0
    if action == "show":
        found = [file_key_view(k) for k in config.keys if k.name == args.name]
        record = None if found else await ring.store.get(args.name)
        if not found and record is None:
            raise KeyNotFound(args.name)
        _print(found or [api_key_view(record)], args.json, one=True)
        return 0
    steps: dict[str, Callable[[], Awaitable[Any]]] = {
        "create": lambda: ring.create({"name": args.name, **_settings(args)}, files, actor),
        "update": lambda: ring.update(args.name, _settings(args), files, actor),
        "revoke": lambda: ring.revoke(args.name, files, actor),
        "rotate": lambda: ring.rotate(args.name, None if args.grace is None
                                      else {"grace_seconds": args.grace}, files, actor)}
    outcome = await steps[action]()
    record, secret = outcome if isinstance(outcome, tuple) else (outcome, None)
    view = api_key_view(record)
    if secret is not None:
        view["key"] = secret
    _print([view], args.json, one=True)
    if secret is not None and not args.json:
        print(f"\nkey: {secret}\n(shown once: store it now; gatewise keeps only its hash)")
    return 0


def _when(moment: float | None) -> str:
    return "-" if moment is None else time.strftime("%Y-%m-%d %H:%M", time.gmtime(moment))


def _print(views: list[dict[str, Any]], as_json: bool, one: bool = False) -> None:
    if as_json:
        out = views[0] if one else {"object": "list", "data": views}
        sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    head = ["name", "source", "prefix", "status", "models", "rpm", "tpm", "conc", "budget",
            "expires", "last_used"]
    rows = [[v["name"], v["source"], v["prefix"] or "-", v["status"], ",".join(v["models"]),
             str(v["rpm"] or "-"), str(v["tpm"] or "-"), str(v["max_concurrent"] or "-"),
             f"${v['budget']['usd']:g}/{v['budget']['per']}" if v["budget"] else "-",
             _when(v["expires_at"]), _when(v["last_used_at"])] for v in views]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for row in [head, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
