"""Responses API input items: checked, normalized for storage, and turned into
chat messages (for upstreams reached through chat completions) or replayed
as input to a native Responses upstream.

Normalized items are what `GET /v1/responses/{id}/input_items` lists and what
`previous_response_id` replays: messages with `input_text` / `input_image` /
`input_file` parts (assistant ones with `output_text`), `function_call`,
`function_call_output` and `reasoning` items, each with an id.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from proxy.core.errors import GatewayError, bad_request
from proxy.server.requests import json_type

ROLES = ("user", "system", "developer", "assistant")
DETAILS = ("low", "high", "auto", "original")


@dataclass(frozen=True, slots=True)
class Problem:
    """Something only an upstream serving the Responses API natively can do."""

    param: str
    what: str  # the feature, as the start of a sentence
    code: str = "unsupported_parameter"

    def error(self, provider: str, kind: str) -> GatewayError:
        return GatewayError(
            400, f"{self.what} needs an upstream that serves the Responses API natively; "
                 f"provider '{provider}' ({kind}) is reached through chat completions.",
            "invalid_request_error", param=self.param, code=self.code)


def new_id(prefix: str) -> str:
    """OpenAI-shaped ids: a prefix and 50 hex digits."""
    return f"{prefix}_{secrets.token_hex(25)}"


#: reasoning items the gateway made from a translated upstream's reasoning: no
#: Responses upstream knows them, so they never go to one
OWN_REASONING = "rs_gw"


def own_reasoning_id() -> str:
    return f"{OWN_REASONING}{secrets.token_hex(24)}"


def foreign_to_native(item: Any) -> bool:
    """A reasoning item a native upstream would refuse: ours, and not encrypted."""
    return (isinstance(item, dict) and item.get("type") == "reasoning"
            and not item.get("encrypted_content")
            and str(item.get("id") or "").startswith(OWN_REASONING))


def _bad(param: str, message: str, code: str = "invalid_value") -> GatewayError:
    return bad_request(message, param=param, code=code)


def _type(param: str, value: Any, expected: str) -> GatewayError:
    return _bad(param, f"Invalid type for '{param}': expected {expected}, but got "
                       f"{json_type(value)} instead.", "invalid_type")


def _str(item: dict[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if value is None:
        raise _bad(f"{where}.{key}", f"Missing required parameter: '{where}.{key}'.",
                   "missing_required_parameter")
    if not isinstance(value, str):
        raise _type(f"{where}.{key}", value, "a string")
    return value


def _item_id(item: dict[str, Any], prefix: str) -> str:
    given = item.get("id")
    return given if isinstance(given, str) and 0 < len(given) <= 128 else new_id(prefix)


# --- checking and normalizing ---------------------------------------------------------

def normalize_input(value: Any, max_items: int, problems: list[Problem]) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [user_message(value)]
    if not isinstance(value, list):
        raise _type("input", value, "a string or an array of input items")
    if not value:
        raise _bad("input", "Invalid 'input': empty array. Expected an array with minimum "
                            "length 1, but got an empty array instead.", "empty_array")
    if len(value) > max_items:
        raise _bad("input", f"Invalid 'input': array too long. Expected an array with maximum "
                            f"length {max_items}, but got an array with length {len(value)} "
                            "instead.", "array_above_max_length")
    return [_item(item, f"input[{i}]", problems) for i, item in enumerate(value)]


def user_message(text: str) -> dict[str, Any]:
    return {"id": new_id("msg"), "type": "message", "role": "user", "status": "completed",
            "content": [{"type": "input_text", "text": text}]}


def _item(item: Any, where: str, problems: list[Problem]) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise _type(where, item, "an object")
    kind = item.get("type")
    if kind == "message" or (kind is None and "role" in item):
        return _message(item, where, problems)
    if kind == "function_call":
        return {"id": _item_id(item, "fc"), "type": "function_call",
                "call_id": _str(item, "call_id", where), "name": _str(item, "name", where),
                "arguments": _str(item, "arguments", where), "status": "completed"}
    if kind == "function_call_output":
        output = item.get("output")
        if isinstance(output, list):
            parts = [_part(p, f"{where}.output[{j}]", problems) for j, p in enumerate(output)]
            if any(p["type"] != "input_text" for p in parts):
                problems.append(Problem(f"{where}.output", "A function_call_output with "
                                        "images or files"))
            output = parts
        elif not isinstance(output, str):
            raise _type(f"{where}.output", output, "a string or an array")
        return {"id": _item_id(item, "fco"), "type": "function_call_output",
                "call_id": _str(item, "call_id", where), "output": output,
                "status": "completed"}
    if kind == "reasoning":
        summary = item.get("summary")
        if not isinstance(summary, list):
            raise _type(f"{where}.summary", summary, "an array")
        return {**item, "id": _item_id(item, "rs")}
    if not isinstance(kind, str):
        raise _bad(f"{where}.type", f"Missing required parameter: '{where}.type'.",
                   "missing_required_parameter")
    problems.append(Problem(where, f"An input item of type '{kind}'"))
    return dict(item)


def _message(item: dict[str, Any], where: str, problems: list[Problem]) -> dict[str, Any]:
    role = item.get("role")
    if role not in ROLES:
        raise _bad(f"{where}.role", f"Invalid value: '{role}'. Supported values are: "
                   "'user', 'system', 'developer', and 'assistant'.")
    content = item.get("content")
    if isinstance(content, str):
        parts = [{"type": "output_text" if role == "assistant" else "input_text",
                  "text": content}]
    elif isinstance(content, list):
        parts = [_part(p, f"{where}.content[{j}]", problems, role == "assistant")
                 for j, p in enumerate(content)]
    else:
        raise _type(f"{where}.content", content, "a string or an array")
    if role == "assistant":
        parts = [{"type": "output_text", "text": p["text"], "annotations": []}
                 if p["type"] in ("input_text", "output_text") else p for p in parts]
    return {"id": _item_id(item, "msg"), "type": "message", "role": role,
            "status": "completed", "content": parts}


def _part(part: Any, where: str, problems: list[Problem], assistant: bool = False) -> dict:
    if not isinstance(part, dict):
        raise _type(where, part, "an object")
    kind = part.get("type")
    if kind in ("input_text", "output_text") and (kind == "input_text" or assistant):
        return {"type": kind, "text": _str(part, "text", where)}
    if kind == "refusal" and assistant:
        return {"type": "refusal", "refusal": _str(part, "refusal", where)}
    if kind == "input_image" and not assistant:
        detail = part.get("detail") or "auto"
        if detail not in DETAILS:
            raise _bad(f"{where}.detail", f"Invalid value: '{detail}'. Supported values are: "
                       "'low', 'high', 'auto', and 'original'.")
        url, file_id = part.get("image_url"), part.get("file_id")
        if not isinstance(url, str) and not isinstance(file_id, str):
            raise _bad(f"{where}.image_url", f"Missing required parameter: "
                       f"'{where}.image_url'.", "missing_required_parameter")
        if not isinstance(url, str):
            problems.append(Problem(where, "An image given by 'file_id'"))
        return {k: v for k, v in (("type", kind), ("detail", detail), ("image_url", url),
                                  ("file_id", file_id)) if v is not None}
    if kind == "input_file" and not assistant:
        out = {"type": kind}
        for key in ("file_data", "file_id", "file_url", "filename"):
            if part.get(key) is not None:
                out[key] = _str(part, key, where)
        if "file_data" not in out:
            problems.append(Problem(where, "A file given by 'file_id' or 'file_url'"))
        return out
    allowed = "'output_text' and 'refusal'" if assistant else \
        "'input_text', 'input_image', and 'input_file'"
    raise _bad(f"{where}.type", f"Invalid value: '{kind}'. Supported values are: {allowed}.")


# --- to chat completions ----------------------------------------------------------------

def to_chat_messages(instructions: str | None, history: list[dict[str, Any]],
                     items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation as chat messages. Items only OpenAI's platform understands
    (built-in tool calls of an earlier native turn, reasoning) do not replay."""
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    for item in history:
        _to_chat(item, messages)
    for item in items:
        _to_chat(item, messages)
    return messages


def _to_chat(item: dict[str, Any], messages: list[dict[str, Any]]) -> None:
    kind = item.get("type")
    if kind == "message":
        if item.get("role") == "assistant":
            text = "".join(p.get("text") or p.get("refusal") or ""
                           for p in item.get("content") or ())
            messages.append({"role": "assistant", "content": text})
        else:
            messages.append({"role": item["role"], "content": chat_content(item["content"])})
    elif kind == "function_call":
        last = messages[-1] if messages else None
        call = {"id": item["call_id"], "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]}}
        if last is not None and last["role"] == "assistant":
            last.setdefault("tool_calls", []).append(call)
            if not last.get("content"):
                last["content"] = None
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        output = item.get("output")
        if isinstance(output, list):
            output = "".join(p.get("text") or "" for p in output if isinstance(p, dict))
        messages.append({"role": "tool", "tool_call_id": item["call_id"],
                         "content": output if isinstance(output, str) else ""})


def chat_content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    if len(parts) == 1 and parts[0].get("type") == "input_text":
        return parts[0]["text"]
    out: list[dict[str, Any]] = []
    for part in parts:
        kind = part.get("type")
        if kind == "input_text":
            out.append({"type": "text", "text": part["text"]})
        elif kind == "input_image" and part.get("image_url"):
            image = {"url": part["image_url"]}
            if part.get("detail") in ("low", "high"):
                image["detail"] = part["detail"]
            out.append({"type": "image_url", "image_url": image})
        elif kind == "input_file" and part.get("file_data"):
            file = {"file_data": part["file_data"]}
            if part.get("filename"):
                file["filename"] = part["filename"]
            out.append({"type": "file", "file": file})
    return out


# --- replayed to a native Responses upstream --------------------------------------------

def native_history(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stored items as input another Responses upstream accepts: no ids (they name
    items it never stored), assistant text as plain messages, and reasoning only
    where it travels encrypted."""
    out: list[dict[str, Any]] = []
    for item in history:
        kind = item.get("type")
        if kind == "message":
            if item.get("role") == "assistant":
                text = "".join(p.get("text") or p.get("refusal") or ""
                               for p in item.get("content") or ())
                out.append({"role": "assistant", "content": text})
            else:
                out.append({"role": item["role"], "content": [
                    {k: v for k, v in p.items()} for p in item.get("content") or ()]})
        elif kind == "function_call":
            out.append({"type": "function_call", "call_id": item["call_id"],
                        "name": item["name"], "arguments": item["arguments"]})
        elif kind == "function_call_output":
            out.append({"type": "function_call_output", "call_id": item["call_id"],
                        "output": item["output"]})
        elif kind == "reasoning":
            if item.get("encrypted_content"):
                out.append({"type": "reasoning", "id": item["id"],
                            "summary": item.get("summary") or [],
                            "encrypted_content": item["encrypted_content"]})
        else:
            out.append(item)  # a built-in tool's item of an earlier native turn
    return out
