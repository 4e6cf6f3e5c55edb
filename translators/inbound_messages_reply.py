"""Answers to a `/v1/messages` client in Anthropic's shapes: a chat completion as
a `message`, usage, stop reasons, tool-call ids, and errors in Anthropic's
envelope with its status codes.

Errors: `{"type": "error", "error": {"type", "message"}, "request_id"}`. The
status is the gateway's own, except that an overloaded upstream (and the
gateway's own 503s: no target can serve now) is Anthropic's 529
`overloaded_error`, and the 502 of a failed upstream is Anthropic's 500
`api_error`, so an Anthropic SDK retries exactly what it would retry against
Anthropic.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Any

import orjson

from proxy.core.errors import ErrorClass, GatewayError, UpstreamError
from proxy.core.usage import Usage

#: OpenAI finish_reason → Anthropic stop_reason
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                "function_call": "tool_use", "content_filter": "refusal"}
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
               403: "permission_error", 404: "not_found_error", 413: "request_too_large",
               429: "rate_limit_error", 500: "api_error", 504: "timeout_error",
               529: "overloaded_error"}
_STATUS = {502: 500, 503: 529}
_SAFE_ID = re.compile(r"[a-zA-Z0-9_-]+")
_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")


# --- errors -----------------------------------------------------------------------

def error_status(err: GatewayError) -> int:
    if isinstance(err, UpstreamError) and err.error_class is ErrorClass.OVERLOADED:
        return 529
    return _STATUS.get(err.status, err.status)


def error_payload(err: GatewayError, request_id: str | None) -> dict[str, Any]:
    status = error_status(err)
    kind = ERROR_TYPES.get(status) or ("api_error" if status >= 500
                                       else "invalid_request_error")
    payload: dict[str, Any] = {"type": "error", "error": {"type": kind,
                                                          "message": err.message}}
    if request_id:
        payload["request_id"] = request_id
    return payload


def error_body(err: GatewayError, request_id: str | None) -> bytes:
    return orjson.dumps(error_payload(err, request_id))


# --- ids, usage, stop reasons -------------------------------------------------------

def message_id(chat_id: Any) -> str:
    text = chat_id if isinstance(chat_id, str) else ""
    return "msg_" + (text.removeprefix("chatcmpl-") or secrets.token_hex(12))


def tool_id(value: Any) -> str:
    """An id matching `^[a-zA-Z0-9_-]+$`, as Anthropic clients (and Anthropic, when the
    conversation later goes there) require: kept when it fits; else made fit the same
    way every time, with a hash so two ids never collide; made up when missing."""
    if not isinstance(value, str) or not value:
        return "toolu_" + secrets.token_hex(12)
    if _SAFE_ID.fullmatch(value):
        return value
    return f"{_UNSAFE.sub('_', value)}_{hashlib.sha256(value.encode()).hexdigest()[:8]}"


def usage_of(usage: Usage | None) -> dict[str, int]:
    """OpenAI-side usage in Anthropic's terms: input_tokens excludes cache reads and
    writes, which have their own fields."""
    if usage is None:
        return {"input_tokens": 0, "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0, "output_tokens": 0}
    fresh = max(0, usage.prompt_tokens - usage.cached_tokens - usage.cache_write_tokens)
    return {"input_tokens": fresh, "cache_creation_input_tokens": usage.cache_write_tokens,
            "cache_read_input_tokens": usage.cached_tokens,
            "output_tokens": usage.completion_tokens}


def stop_reason(finish: Any, has_calls: bool) -> str:
    reason = STOP_REASONS.get(finish, "end_turn") if isinstance(finish, str) else "end_turn"
    return "tool_use" if has_calls and reason == "end_turn" else reason


def tool_input(arguments: Any) -> dict[str, Any]:
    """JSON-string arguments as the object Anthropic sends; arguments that are not a
    JSON object (a reply cut off mid-call) become {}."""
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = orjson.loads(arguments) if isinstance(arguments, str) and arguments else {}
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


# --- a whole answer ---------------------------------------------------------------

def to_message(completion: dict[str, Any], usage: Usage | None) -> dict[str, Any]:
    """An OpenAI chat.completion → an Anthropic `message` (first choice)."""
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices \
        and isinstance(choices[0], dict) else {}
    reply = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    content: list[dict[str, Any]] = []
    reasoning = reply.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    for field in ("content", "refusal"):
        text = reply.get(field)
        if isinstance(text, str) and text:
            content.append({"type": "text", "text": text})
    calls = reply.get("tool_calls")
    calls = [c for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []
    for call in calls:
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        content.append({"type": "tool_use", "id": tool_id(call.get("id")),
                        "name": str(function.get("name") or ""),
                        "input": tool_input(function.get("arguments"))})
    reason = stop_reason(choice.get("finish_reason"), bool(calls))
    if isinstance(reply.get("refusal"), str) and reply["refusal"]:
        reason = "refusal"
    return {"id": message_id(completion.get("id")), "type": "message", "role": "assistant",
            "model": str(completion.get("model") or ""), "content": content,
            "stop_reason": reason, "stop_sequence": None, "usage": usage_of(usage)}
