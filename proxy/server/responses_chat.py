"""A Responses request as the one internal request: an OpenAI chat-completions
body (`Exchange.body`), and as the body a native Responses upstream gets.

The chat body is what routing, limits, budgets, the cache and every
translator read; it carries only parameters the translators know, so an
upstream refuses what it cannot do by the parameter's chat name.
"""

from __future__ import annotations

from typing import Any

from proxy.server.responses_items import foreign_to_native, native_history, to_chat_messages
from proxy.server.responses_request import ResponsesRequest

#: Responses parameters that keep their name in chat completions
_SAME = ("temperature", "top_p", "parallel_tool_calls", "user", "safety_identifier",
         "prompt_cache_key")


def chat_body(req: ResponsesRequest) -> dict[str, Any]:
    body = req.body
    chat: dict[str, Any] = {"model": req.model,
                            "messages": to_chat_messages(req.instructions, req.history,
                                                         req.items)}
    if req.stream:
        chat["stream"] = True
    for name in _SAME:
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("max_output_tokens") is not None:
        chat["max_completion_tokens"] = body["max_output_tokens"]
    tools = [_tool(t) for t in body.get("tools") or () if t.get("type") == "function"]
    if tools:
        chat["tools"] = tools
    choice = body.get("tool_choice")
    if isinstance(choice, str) and tools:
        chat["tool_choice"] = choice
    elif isinstance(choice, dict) and choice.get("type") == "function":
        chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    text = body.get("text") or {}
    fmt = text.get("format") or {}
    if fmt.get("type") == "json_object":
        chat["response_format"] = {"type": "json_object"}
    elif fmt.get("type") == "json_schema":
        schema = {"name": fmt["name"], "schema": fmt["schema"]}
        for key in ("strict", "description"):
            if fmt.get(key) is not None:
                schema[key] = fmt[key]
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    if text.get("verbosity") is not None:
        chat["verbosity"] = text["verbosity"]
    effort = (body.get("reasoning") or {}).get("effort")
    if effort is not None:
        chat["reasoning_effort"] = effort
    if body.get("fallbacks") is not None:
        chat["fallbacks"] = body["fallbacks"]  # taken out by the dispatcher
    return chat


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool["name"]}
    for key in ("description", "parameters", "strict"):
        if tool.get(key) is not None:
            function[key] = tool[key]
    return {"type": "function", "function": function}


def native_body(req: ResponsesRequest, model: str) -> dict[str, Any]:
    """The client's request as sent, for the target's model. A `previous_response_id`
    is the gateway's own: the stored conversation goes up as input instead. Reasoning
    items the gateway made from another upstream's reasoning stay behind."""
    body = {k: v for k, v in req.body.items() if k not in ("fallbacks", "previous_response_id")}
    body["model"] = model
    given = body["input"]
    if isinstance(given, list) and any(foreign_to_native(item) for item in given):
        given = [item for item in given if not foreign_to_native(item)]
        body["input"] = given
    if req.history:
        current = [{"role": "user", "content": given}] if isinstance(given, str) else given
        body["input"] = native_history(req.history) + current
    return body
