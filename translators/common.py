"""Pieces the translators share: reading OpenAI requests and upstream answers.

Data-URL parsing, tool-call ids made safe for stricter upstreams, tool
arguments parsed (a 400 on invalid JSON), system/developer extraction and
the text of a message's content. Errors are 400s that name the offending
field by its path in the client's request (`messages[2].content[0]`).
An upstream's answer is parsed once, by `upstream_json` (a protocol error if
it is not a JSON object) or `json_or_none` (error bodies).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterator
from typing import Any, NamedTuple

import orjson

from proxy.core.errors import bad_request, upstream_protocol

SYSTEM_ROLES = frozenset({"system", "developer"})
_SAFE_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")
_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+)((?:;[\w.+-]+=[^;,]*)*);base64,(.*)$", re.DOTALL)


class DataURL(NamedTuple):
    media_type: str
    data: str  # base64, without the prefix


def parse_data_url(url: str, where: str) -> DataURL:
    """`data:<mime>;base64,<b64>` → its parts; anything malformed is a 400 at `where`."""
    match = _DATA_URL.match(url)
    if match is None:
        raise bad_request(f"Invalid '{where}': expected a base64 data URL "
                          "('data:<media type>;base64,<data>').", param=where,
                          code="invalid_image_url")
    data = match.group(3).strip()
    try:
        base64.b64decode(data[:4096 - 4096 % 4] if len(data) > 4096 else data, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"Invalid '{where}': the data URL's payload is not valid base64.",
                          param=where, code="invalid_image_url") from None
    return DataURL(match.group(1).lower(), data)


def safe_tool_id(tool_id: Any, where: str) -> str:
    """A tool-call id matching `^[a-zA-Z0-9_-]+$`, deterministic so a call and its
    result map to the same id; ids that needed changing get a hash suffix so two
    distinct ids never collide."""
    if not isinstance(tool_id, str) or not tool_id:
        raise bad_request(f"Invalid '{where}': expected a non-empty string.", param=where,
                          code="invalid_value")
    if _SAFE_ID.match(tool_id):
        return tool_id
    digest = hashlib.sha256(tool_id.encode()).hexdigest()[:8]
    return f"{_UNSAFE.sub('_', tool_id)}_{digest}"


def parse_arguments(arguments: Any, where: str) -> dict[str, Any]:
    """OpenAI's JSON-string tool arguments → an object (`""` is `{}`)."""
    if isinstance(arguments, dict):
        return arguments
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    if not isinstance(arguments, str):
        raise bad_request(f"Invalid '{where}': expected a JSON string.", param=where,
                          code="invalid_value")
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        raise bad_request(f"Invalid '{where}': the tool call's arguments are not valid JSON.",
                          param=where, code="invalid_value") from None
    if not isinstance(parsed, dict):
        raise bad_request(f"Invalid '{where}': the tool call's arguments must be a JSON "
                          "object.", param=where, code="invalid_value")
    return parsed


def content_parts(content: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """A message's content as (path, part) pairs; a string is one text part."""
    if content is None:
        return
    if isinstance(content, str):
        yield where, {"type": "text", "text": content}
        return
    if not isinstance(content, list):
        raise bad_request(f"Invalid '{where}': expected a string or an array of content "
                          "parts.", param=where, code="invalid_type")
    for j, part in enumerate(content):
        path = f"{where}[{j}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise bad_request(f"Invalid '{path}': expected a content part object with a "
                              "'type'.", param=path, code="invalid_type")
        yield path, part


def text_of(content: Any, where: str) -> str:
    """The text of content that may only hold text (system, developer, tool messages)."""
    if isinstance(content, str):
        return content
    texts = []
    for path, part in content_parts(content, where):
        if part["type"] != "text":
            raise bad_request(f"Invalid '{path}': only text parts are supported here, got "
                              f"'{part['type']}'.", param=path, code="invalid_value")
        texts.append(part_text(part, path))
    return "\n".join(texts)


def part_text(part: dict[str, Any], where: str) -> str:
    text = part.get("text")
    if not isinstance(text, str):
        raise bad_request(f"Invalid '{where}.text': expected a string.", param=f"{where}.text",
                          code="invalid_type")
    return text


def assistant_texts(message: dict[str, Any], i: int) -> Iterator[Any]:
    """The texts of an assistant message's text and refusal parts, in order; any other
    part is a 400 naming it."""
    for path, part in content_parts(message.get("content"), f"messages[{i}].content"):
        kind = part["type"]
        text = part.get("refusal") if kind == "refusal" else (
            part_text(part, path) if kind == "text" else None)
        if text is None:
            raise bad_request(f"Invalid '{path}.type': assistant content may hold text or "
                              "refusal parts only.", param=f"{path}.type", code="invalid_value")
        yield text


def system_texts(messages: list[dict[str, Any]]) -> list[str]:
    """The texts of every system and developer message, in order (position is lost)."""
    return [text_of(m.get("content"), f"messages[{i}].content")
            for i, m in enumerate(messages) if m.get("role") in SYSTEM_ROLES]


def tool_calls_of(message: dict[str, Any], i: int) -> list[tuple[str, str, dict[str, Any]]]:
    """An assistant message's tool calls as (id, name, parsed arguments)."""
    calls = message.get("tool_calls") or []
    where = f"messages[{i}].tool_calls"
    if not isinstance(calls, list):
        raise bad_request(f"Invalid '{where}': expected an array.", param=where,
                          code="invalid_type")
    result = []
    for k, call in enumerate(calls):
        path = f"{where}[{k}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise bad_request(f"Invalid '{path}': expected a function call with a name.",
                              param=path, code="invalid_value")
        result.append((call.get("id"), fn["name"],
                       parse_arguments(fn.get("arguments"), f"{path}.function.arguments")))
    return result


def function_tools(tools: Any) -> list[dict[str, Any]]:
    """The `function` objects of an OpenAI `tools` list, checked: every upstream that
    maps tools needs the same 400s for a malformed list."""
    if not isinstance(tools, list):
        raise bad_request("Invalid 'tools': expected an array.", param="tools",
                          code="invalid_type")
    functions = []
    for k, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or tool.get("type") != "function" or not isinstance(
                fn.get("name"), str):
            raise bad_request(f"Invalid 'tools[{k}]': expected a function tool with a name.",
                              param=f"tools[{k}]", code="invalid_value")
        functions.append(fn)
    return functions


def max_output_tokens(chat: dict[str, Any]) -> int | None:
    """The client's output cap: `max_completion_tokens`, else `max_tokens` (the
    deprecated name), else None."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = chat.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise bad_request(f"Invalid '{name}': expected a positive integer.", param=name,
                              code="invalid_value")
        return value
    return None


def wants_usage(chat: dict[str, Any]) -> bool:
    """Did the client ask for a stream's usage chunk (`stream_options.include_usage`)?"""
    options = chat.get("stream_options")
    return bool(isinstance(options, dict) and options.get("include_usage"))


def upstream_json(provider: str, data: bytes, what: str = "the body") -> dict[str, Any]:
    """An upstream's answer (`what`: "the body", "a stream event"), parsed: a JSON object,
    or a protocol error (502) that says which it was not."""
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise upstream_protocol(provider, f"{what} is not JSON") from None
    if not isinstance(parsed, dict):
        raise upstream_protocol(provider, f"{what} is not an object")
    return parsed


def error_object(parsed: Any) -> dict[str, Any]:
    """The `error` object of a parsed error body, or an empty one."""
    error = parsed.get("error") if isinstance(parsed, dict) else None
    return error if isinstance(error, dict) else {}


def error_text(parsed: Any) -> Any:
    """The message of a parsed error body whose `error` may also be a bare string
    (OpenAI-compatible servers, Ollama)."""
    error = parsed.get("error") if isinstance(parsed, dict) else None
    return error.get("message") if isinstance(error, dict) else \
        error if isinstance(error, str) else None


def json_or_none(body: bytes) -> Any:
    """An upstream error body, parsed if it is JSON (error bodies often are not)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None

