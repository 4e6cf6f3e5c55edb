"""`GET /v1/models` and `/v1/models/{id}` in Anthropic's shape, for requests that
carry `anthropic-version` (Anthropic's SDKs always send it).

The configured model names a key may use, as `{"type": "model", "id",
"display_name", "created_at", ...}`, paged the way Anthropic pages them
(`limit` 1-1000, default 20; `after_id` / `before_id`; `has_more`,
`first_id`, `last_id`). Context window and output limit come from the model
table for the model's first target, when known.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import orjson
from aiohttp import web

from proxy.core.errors import bad_request, model_not_found
from proxy.server.anthropic_api import client_key
from proxy.server.gateway import GATEWAY

_JSON = "application/json"


def _entry(gateway: Any, name: str) -> dict[str, Any]:
    created = gateway.model_entries[name]["created"]
    entry: dict[str, Any] = {
        "type": "model", "id": name, "display_name": name,
        "created_at": datetime.fromtimestamp(created, timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%SZ"),
        "lifecycle": "active"}
    targets = gateway.config.models[name].targets
    if targets:
        info = targets[0].info
        if info.context_window:
            entry["max_input_tokens"] = info.context_window
        if info.max_output:
            entry["max_tokens"] = info.max_output
    return entry


async def list_models(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    key = client_key(gateway, request.headers)
    names = [n for n in gateway.model_entries if key is None or not key.models
             or key.allows(n)]
    query = request.query
    raw_limit = query.get("limit", "20")
    # isdigit() alone takes '²', which int() refuses
    if not (raw_limit.isascii() and raw_limit.isdigit()) or not 1 <= int(raw_limit) <= 1000:
        raise bad_request("limit: Input should be an integer from 1 to 1000", param="limit")
    limit = int(raw_limit)
    before, after = query.get("before_id"), query.get("after_id")
    if before is not None and after is not None:
        raise bad_request("Only one of before_id and after_id may be given.",
                          param="before_id")
    if after is not None:
        start = names.index(after) + 1 if after in names else len(names)
        page = names[start:start + limit]
        more = start + limit < len(names)
    elif before is not None:
        end = names.index(before) if before in names else 0
        page = names[max(0, end - limit):end]
        more = end - limit > 0
    else:
        page = names[:limit]
        more = limit < len(names)
    body = {"data": [_entry(gateway, n) for n in page], "has_more": more,
            "first_id": page[0] if page else None, "last_id": page[-1] if page else None}
    return web.Response(body=orjson.dumps(body), content_type=_JSON)


async def retrieve_model(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    key = client_key(gateway, request.headers)
    name = request.match_info["model"]
    if name not in gateway.model_entries or (key is not None and key.models
                                             and not key.allows(name)):
        raise model_not_found(name)
    return web.Response(body=orjson.dumps(_entry(gateway, name)), content_type=_JSON)
