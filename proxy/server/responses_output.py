"""The Response object (`"object": "response"`) built from a chat completion.

The fields echo the request the way OpenAI's API does (defaults filled in);
output items are a `reasoning` item (an upstream's reasoning, as a summary),
a `message` with `output_text` / `refusal` parts, then one `function_call` per
tool call. Usage is OpenAI's Responses shape, with cached and reasoning tokens.
"""

from __future__ import annotations

import time
from typing import Any

from proxy.core.errors import ErrorClass, GatewayError, UpstreamError
from proxy.core.usage import Usage, token_count
from proxy.server.responses_items import new_id, own_reasoning_id
from proxy.server.responses_request import ResponsesRequest

#: chat finish reasons that leave a response incomplete, and the reason OpenAI gives
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def skeleton(req: ResponsesRequest, response_id: str, created_at: int,
             model: str) -> dict[str, Any]:
    """The response as `response.created` shows it: in progress, no output yet."""
    body = req.body
    text = body.get("text") or {}
    reasoning = body.get("reasoning") or {}
    return {
        "id": response_id, "object": "response", "created_at": created_at,
        "status": "in_progress", "background": False, "error": None,
        "incomplete_details": None, "instructions": req.instructions,
        "max_output_tokens": body.get("max_output_tokens"), "max_tool_calls": None,
        "model": model, "output": [],
        "parallel_tool_calls": _given(body, "parallel_tool_calls", True),
        "previous_response_id": req.previous_id,
        "prompt_cache_key": body.get("prompt_cache_key"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "safety_identifier": body.get("safety_identifier"), "service_tier": "default",
        "store": req.store, "temperature": _given(body, "temperature", 1.0),
        "text": {"format": text.get("format") or {"type": "text"},
                 "verbosity": text.get("verbosity") or "medium"},
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": [_echo_tool(t) for t in body.get("tools") or ()],
        "top_logprobs": 0, "top_p": _given(body, "top_p", 1.0),
        "truncation": body.get("truncation") or "disabled", "usage": None,
        "user": body.get("user"), "metadata": body.get("metadata") or {},
    }


def _given(body: dict[str, Any], name: str, default: Any) -> Any:
    value = body.get(name)
    return default if value is None else value


def _echo_tool(tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type") != "function":
        return tool
    return {"type": "function", "name": tool["name"], "description": tool.get("description"),
            "parameters": tool.get("parameters"), "strict": tool.get("strict")}


def finish(response: dict[str, Any], output: list[dict[str, Any]], finish_reason: str | None,
           usage: Usage | None) -> dict[str, Any]:
    """The skeleton completed: status, output, usage (a new dict)."""
    done = dict(response)
    reason = INCOMPLETE.get(finish_reason or "")
    done["status"] = "incomplete" if reason else "completed"
    done["incomplete_details"] = {"reason": reason} if reason else None
    done["output"] = output
    done["usage"] = usage_json(usage)
    if not reason:
        done["completed_at"] = int(time.time())
    return done


def failed(response: dict[str, Any], output: list[dict[str, Any]],
           err: GatewayError) -> dict[str, Any]:
    out = dict(response)
    out["status"] = "failed"
    out["output"] = output
    out["error"] = {"code": error_code(err), "message": err.message}
    return out


def error_code(err: GatewayError) -> str:
    """The code of a failed response (ResponseError.code's values)."""
    if isinstance(err, UpstreamError) and err.error_class is ErrorClass.RATE_LIMITED:
        return "rate_limit_exceeded"
    return "server_error"


def usage_json(usage: Usage | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    return {"input_tokens": usage.prompt_tokens,
            "input_tokens_details": {"cached_tokens": usage.cached_tokens,
                                     "cache_write_tokens": 0},
            "output_tokens": usage.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
            "total_tokens": usage.total_tokens}


def usage_from(raw: Any) -> Usage | None:
    """A Responses `usage` object (a native upstream's) as gatewise counts it."""
    if not isinstance(raw, dict):
        return None
    details = raw.get("input_tokens_details")
    out_details = raw.get("output_tokens_details")
    return Usage(prompt_tokens=token_count(raw.get("input_tokens")),
                 completion_tokens=token_count(raw.get("output_tokens")),
                 cached_tokens=token_count(details.get("cached_tokens"))
                 if isinstance(details, dict) else 0,
                 reasoning_tokens=token_count(out_details.get("reasoning_tokens"))
                 if isinstance(out_details, dict) else 0)


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def from_chat(req: ResponsesRequest, completion: dict[str, Any],
              usage: Usage | None) -> dict[str, Any]:
    """A chat.completion (from any translator) as the Response object."""
    created = completion.get("created")
    response = skeleton(req, new_id("resp"), created if isinstance(created, int)
                        else int(time.time()), str(completion.get("model") or req.model))
    # An OpenAI-compatible upstream's completion is as it sent it: what is not the shape
    # a completion has counts as absent, never a crash.
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    choice = choice if isinstance(choice, dict) else {}
    reason = choice.get("finish_reason")
    reason = reason if isinstance(reason, str) else None
    message = choice.get("message")
    return finish(response, output_items(message if isinstance(message, dict) else {}, reason),
                  reason, usage)


def _text(value: Any) -> str:
    if isinstance(value, list):  # some servers answer with parts
        value = "".join(p["text"] for p in value
                        if isinstance(p, dict) and isinstance(p.get("text"), str))
    return value if isinstance(value, str) else ""


def output_items(message: dict[str, Any], finish_reason: str | None) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    reasoning = _text(message.get("reasoning_content"))
    if reasoning:
        items.append({"id": own_reasoning_id(), "type": "reasoning",
                      "summary": [{"type": "summary_text", "text": reasoning}]})
    content = _text(message.get("content"))
    refusal = _text(message.get("refusal"))
    calls = message.get("tool_calls")
    calls = [c for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []
    parts = []
    if content or not (calls or items or refusal):
        parts.append(text_part(content or ""))
    if refusal:
        parts.append({"type": "refusal", "refusal": refusal})
    if parts:
        status = "incomplete" if finish_reason in INCOMPLETE else "completed"
        items.append({"id": new_id("msg"), "type": "message", "status": status,
                      "content": parts, "role": "assistant"})
    for call in calls:
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        call_id = call.get("id")
        items.append({"id": new_id("fc"), "type": "function_call", "status": "completed",
                      "arguments": _text(function.get("arguments")),
                      "call_id": call_id if isinstance(call_id, str) and call_id
                      else new_id("call"), "name": _text(function.get("name"))})
    return items
