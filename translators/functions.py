"""Legacy function calling on chat: `functions` / `function_call` in, the same out.

The request is converted once to `tools` / `tool_choice` (a 400 for what
cannot map); each attempt's chat translator sends it, and `LegacyFunctions`
brings the answer back as `function_call`. See docs/legacy-and-embeddings.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from proxy.core.errors import bad_request
from proxy.core.usage import Usage
from translators.base import Translator, UpstreamRequest
from translators.over_chat import OverChat


class LegacyFunctions(OverChat):
    """`functions` went up as `tools`: the answer comes back as `function_call`."""

    def __init__(self, chat: Translator, body: dict[str, Any]) -> None:
        super().__init__(chat)
        self.body = body  # the client's request with tools instead of functions

    def request(self, chat: dict[str, Any], target, *, stream: bool) -> UpstreamRequest:
        return self.chat_request(self.body, target, stream)

    def response(self, status: int, headers: Mapping[str, str],
                 body: bytes) -> tuple[bytes | dict[str, Any], Usage | None]:
        completion, usage = self.chat_response(status, headers, body)
        for choice in completion.get("choices") or ():
            message = choice.get("message") or {}
            calls = message.pop("tool_calls", None)
            if calls:
                function = calls[0].get("function") or {}
                message["function_call"] = {"name": function.get("name"),
                                            "arguments": function.get("arguments") or ""}
            if choice.get("finish_reason") == "tool_calls":
                choice["finish_reason"] = "function_call"
        return completion, usage

    def convert(self, chunks: list[bytes]) -> list[bytes]:
        out = []
        for raw in chunks:
            if b'"tool_calls"' not in raw:  # nothing to map: the upstream's bytes
                out.append(raw)
                continue
            chunk = orjson.loads(raw)
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta") or {}
                calls = delta.pop("tool_calls", None)
                for call in calls or ():
                    if (call.get("index") or 0) != 0:
                        continue  # the legacy shape holds one call: the first
                    function = call.get("function") or {}
                    mapped = {"arguments": function.get("arguments") or ""}
                    if function.get("name"):
                        mapped = {"name": function["name"], **mapped}
                    delta["function_call"] = mapped
                if choice.get("finish_reason") == "tool_calls":
                    choice["finish_reason"] = "function_call"
            out.append(orjson.dumps(chunk))
        return out


def functions_adapter(body: dict[str, Any]) -> Callable[[Translator], Translator] | None:
    """None for a chat request without legacy function calling (the usual case, cheap);
    else the adapter, with the request converted once to tools (400 for what cannot map)."""
    if "functions" not in body and "function_call" not in body:
        for m in body.get("messages") or ():  # (a loop: no generator per request)
            if isinstance(m, dict) and (m.get("role") == "function" or "function_call" in m):
                break
        else:
            return None
    chat = functions_to_tools(body)
    return lambda translator: LegacyFunctions(translator, chat)


def functions_to_tools(body: dict[str, Any]) -> dict[str, Any]:
    chat = {k: v for k, v in body.items()
            if k not in ("functions", "function_call", "fallbacks")}
    extra = chat.get("extra_body")
    if isinstance(extra, dict) and "fallbacks" in extra:
        chat["extra_body"] = {k: v for k, v in extra.items() if k != "fallbacks"}
    functions = body.get("functions")
    if functions is not None:
        if body.get("tools"):
            raise bad_request("Send either 'functions' or 'tools', not both.",
                              param="functions", code="invalid_value")
        if not isinstance(functions, list) or not all(
                isinstance(f, dict) and isinstance(f.get("name"), str) for f in functions):
            raise bad_request("Invalid 'functions': expected an array of objects with a "
                              "'name'.", param="functions", code="invalid_type")
        chat["tools"] = [{"type": "function", "function": f} for f in functions]
    choice = body.get("function_call")
    if choice is not None:
        if choice in ("none", "auto"):
            chat["tool_choice"] = choice
        elif isinstance(choice, dict) and isinstance(choice.get("name"), str):
            chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
        else:
            raise bad_request("Invalid 'function_call': expected 'none', 'auto' or "
                              "{\"name\": ...}.", param="function_call", code="invalid_value")
    chat["messages"] = _messages(body.get("messages") or [])
    return chat


def _messages(messages: list[Any]) -> list[Any]:
    """Assistant `function_call` → `tool_calls` with a made-up id; a `function` message →
    a `tool` message answering the latest call (the legacy shape has one at a time)."""
    out: list[Any] = []
    pending: str | None = None
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            out.append(message)
            continue
        call = message.get("function_call")
        if message.get("role") == "assistant" and call is not None:
            if not isinstance(call, dict) or not isinstance(call.get("name"), str):
                raise bad_request(f"Invalid 'messages[{i}].function_call': expected an object "
                                  "with 'name' and 'arguments'.",
                                  param=f"messages[{i}].function_call", code="invalid_type")
            pending = f"call_{i:024x}"
            mapped = {k: v for k, v in message.items() if k != "function_call"}
            mapped["tool_calls"] = [{"id": pending, "type": "function", "function": {
                "name": call["name"], "arguments": call.get("arguments") or "{}"}}]
            out.append(mapped)
        elif message.get("role") == "function":
            if pending is None:
                raise bad_request(f"Invalid 'messages[{i}]': a 'function' message must follow "
                                  "an assistant message with a 'function_call'.",
                                  param=f"messages[{i}]", code="invalid_value")
            content = message.get("content")
            out.append({"role": "tool", "tool_call_id": pending,
                        "content": content if content is not None else ""})
            pending = None
        else:
            out.append(message)
    return out
