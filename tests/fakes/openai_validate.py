"""Request validation of the fake OpenAI upstream, as strict as the real API.

Each check returns OpenAI's error object (message, type, param, code) for the
first problem found, worded as api.openai.com words it, or None. Parameters
follow openai-python's `completion_create_params.py` (wire-spec §1).
"""

from __future__ import annotations

import re
from typing import Any

KNOWN_PARAMS = frozenset({
    "messages", "model", "audio", "frequency_penalty", "function_call", "functions",
    "logit_bias", "logprobs", "max_completion_tokens", "max_tokens", "metadata", "modalities",
    "n", "parallel_tool_calls", "prediction", "presence_penalty", "prompt_cache_key",
    "prompt_cache_retention", "reasoning_effort", "response_format", "safety_identifier",
    "seed", "service_tier", "stop", "store", "stream", "stream_options", "temperature",
    "tool_choice", "tools", "top_logprobs", "top_p", "user", "verbosity", "web_search_options",
})
ROLES = ("system", "assistant", "user", "function", "tool", "developer")
USER_PARTS = ("text", "image_url", "input_audio", "file")
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

Error = dict[str, Any]


def error(message: str, param: str | None = None, code: str | None = None,
          type_: str = "invalid_request_error") -> Error:
    return {"message": message, "type": type_, "param": param, "code": code}


def _invalid_value(value: Any, choices: tuple[str, ...], param: str) -> Error:
    quoted = [f"'{c}'" for c in choices]
    listed = ", ".join(quoted[:-1]) + f", and {quoted[-1]}" if len(quoted) > 2 else \
        " and ".join(quoted)
    return error(f"Invalid value: '{value}'. Supported values are: {listed}.", param,
                 "invalid_value")


def _invalid_type(param: str, expected: str, value: Any) -> Error:
    return error(f"Invalid type for '{param}': expected {expected}, but got "
                 f"{_kind(value)} instead.", param, "invalid_type")


def _missing(param: str) -> Error:
    return error(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            int: "an integer", float: "a decimal", type(None): "null"}.get(type(value), "a value")


def validate(body: Any) -> Error | None:
    """The first problem with a chat completions request body, or None."""
    if not isinstance(body, dict):
        return error("We could not parse the JSON body of your request. (HINT: This likely "
                     "means you aren't using your HTTP library correctly. The OpenAI API "
                     "expects a JSON payload, but what was sent was not valid JSON.)")
    for name in body:
        if name not in KNOWN_PARAMS:
            return error(f"Unrecognized request argument supplied: {name}")
    if "model" not in body:
        return error("you must provide a model parameter")
    if not isinstance(body["model"], str):
        return _invalid_type("model", "a string", body["model"])
    if "messages" not in body:
        return _missing("messages")
    return (_messages(body["messages"]) or _tools(body) or _stream(body) or _n(body)
            or _stop(body))


def _messages(messages: Any) -> Error | None:
    if not isinstance(messages, list):
        return _invalid_type("messages", "an array", messages)
    if not messages:
        return error("Invalid 'messages': empty array. Expected an array with minimum length 1, "
                     "but got an empty array instead.", "messages", "empty_array")
    open_calls: set[str] = set()
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            return _invalid_type(where, "an object", message)
        role = message.get("role")
        if role is None:
            return _missing(f"{where}.role")
        if role not in ROLES:
            return _invalid_value(role, ROLES, f"{where}.role")
        problem = _message(message, role, where, open_calls)
        if problem:
            return problem
    return None


def _message(message: dict, role: str, where: str, open_calls: set[str]) -> Error | None:
    content = message.get("content")
    if role == "assistant":
        calls = message.get("tool_calls")
        if calls is not None:
            problem = _tool_calls(calls, f"{where}.tool_calls")
            if problem:
                return problem
            open_calls.clear()
            open_calls.update(c["id"] for c in calls)
        if content is None:
            if calls or message.get("function_call"):
                return None
            return error("Invalid value for 'content': expected a string, got null.",
                         f"{where}.content")
        return _content(content, f"{where}.content", ("text", "refusal"))
    if role == "tool":
        call_id = message.get("tool_call_id")
        if call_id is None:
            return _missing(f"{where}.tool_call_id")
        if not isinstance(call_id, str):
            return _invalid_type(f"{where}.tool_call_id", "a string", call_id)
        if call_id not in open_calls:
            return error("Invalid parameter: messages with role 'tool' must be a response to a "
                         "preceeding message with 'tool_calls'.", f"{where}.role")
    elif role == "function" and not isinstance(message.get("name"), str):
        return _missing(f"{where}.name")
    if content is None:
        if role == "function":
            return None
        return _missing(f"{where}.content")
    parts = USER_PARTS if role == "user" else ("text",)
    return _content(content, f"{where}.content", parts)


def _content(content: Any, where: str, parts: tuple[str, ...]) -> Error | None:
    if isinstance(content, str):
        return None
    if not isinstance(content, list):
        return _invalid_type(where, "one of a string or array of objects", content)
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        if not isinstance(part, dict):
            return _invalid_type(at, "an object", part)
        kind = part.get("type")
        if kind is None:
            return _missing(f"{at}.type")
        if kind not in parts:
            return _invalid_value(kind, parts, f"{at}.type")
        field = {"text": "text", "image_url": "image_url", "input_audio": "input_audio",
                 "file": "file", "refusal": "refusal"}[kind]
        if field not in part:
            return _missing(f"{at}.{field}")
        value = part[field]
        if kind in ("text", "refusal") and not isinstance(value, str):
            return _invalid_type(f"{at}.{field}", "a string", value)
        if kind == "image_url" and not (isinstance(value, dict)
                                        and isinstance(value.get("url"), str)):
            return _missing(f"{at}.image_url.url")
        if kind == "input_audio" and not (isinstance(value, dict) and "data" in value
                                          and value.get("format") in ("wav", "mp3")):
            return error(f"Invalid '{at}.input_audio': expected data and format 'wav' or 'mp3'.",
                         f"{at}.input_audio", "invalid_value")
        if kind == "file" and not isinstance(value, dict):
            return _invalid_type(f"{at}.file", "an object", value)
    return None


def _tool_calls(calls: Any, where: str) -> Error | None:
    if not isinstance(calls, list):
        return _invalid_type(where, "an array", calls)
    for k, call in enumerate(calls):
        at = f"{where}[{k}]"
        if not isinstance(call, dict):
            return _invalid_type(at, "an object", call)
        for key in ("id", "type", "function"):
            if key not in call:
                return _missing(f"{at}.{key}")
        if call["type"] != "function":
            return _invalid_value(call["type"], ("function",), f"{at}.type")
        fn = call["function"]
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            return _missing(f"{at}.function.name")
        if not isinstance(fn.get("arguments"), str):
            return _invalid_type(f"{at}.function.arguments", "a string", fn.get("arguments"))
    return None


def _tools(body: dict) -> Error | None:
    tools = body.get("tools")
    names: set[str] = set()
    if tools is not None:
        if not isinstance(tools, list):
            return _invalid_type("tools", "an array", tools)
        if len(tools) > 128:
            return error(f"Invalid 'tools': array too long. Expected an array with maximum "
                         f"length 128, but got an array with length {len(tools)} instead.",
                         "tools", "array_above_max_length")
        for i, tool in enumerate(tools):
            at = f"tools[{i}]"
            if not isinstance(tool, dict):
                return _invalid_type(at, "an object", tool)
            if tool.get("type") not in ("function", "custom"):
                return _invalid_value(tool.get("type"), ("function", "custom"), f"{at}.type")
            fn = tool.get(tool["type"])
            if not isinstance(fn, dict):
                return _missing(f"{at}.{tool['type']}")
            name = fn.get("name")
            if not isinstance(name, str) or not _TOOL_NAME.match(name):
                return error(f"Invalid '{at}.{tool['type']}.name': string does not match "
                             "pattern. Expected a string that matches the pattern "
                             "'^[a-zA-Z0-9_-]+$'.", f"{at}.{tool['type']}.name",
                             "invalid_value")
            if "parameters" in fn and not isinstance(fn["parameters"], dict):
                return _invalid_type(f"{at}.function.parameters", "an object", fn["parameters"])
            names.add(name)
    choice = body.get("tool_choice")
    if choice is None:
        return None
    if not tools:
        return error("Invalid value for 'tool_choice': 'tool_choice' is only allowed when "
                     "'tools' are specified.", "tool_choice")
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            return _invalid_value(choice, ("none", "auto", "required"), "tool_choice")
        return None
    if not isinstance(choice, dict):
        return _invalid_type("tool_choice", "an object", choice)
    if choice.get("type") == "allowed_tools":
        return None
    if choice.get("type") != "function":
        return _invalid_value(choice.get("type"), ("function", "allowed_tools", "custom"),
                              "tool_choice.type")
    name = (choice.get("function") or {}).get("name")
    if name not in names:
        return error(f"Invalid value for 'tool_choice': tool '{name}' is not in 'tools'.",
                     "tool_choice")
    return None


def _stream(body: dict) -> Error | None:
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        return _invalid_type("stream", "a boolean", stream)
    options = body.get("stream_options")
    if options is None:
        return None
    if not stream:
        return error("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                     "stream_options")
    if not isinstance(options, dict):
        return _invalid_type("stream_options", "an object", options)
    for key, value in options.items():
        if key not in ("include_usage", "include_obfuscation"):
            return error(f"Unrecognized request argument supplied: stream_options.{key}")
        if not isinstance(value, bool):
            return _invalid_type(f"stream_options.{key}", "a boolean", value)
    return None


def _n(body: dict) -> Error | None:
    n = body.get("n")
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, int):
        return _invalid_type("n", "an integer", n)
    if n < 1:
        return error(f"Invalid 'n': integer below minimum value. Expected a value >= 1, but got "
                     f"{n} instead.", "n", "integer_below_min_value")
    if n > 128:
        return error(f"Invalid 'n': integer above maximum value. Expected a value <= 128, but "
                     f"got {n} instead.", "n", "integer_above_max_value")
    return None


def _stop(body: dict) -> Error | None:
    stop = body.get("stop")
    if isinstance(stop, list) and len(stop) > 4:
        return error(f"Invalid 'stop': array too long. Expected an array with maximum length 4, "
                     f"but got an array with length {len(stop)} instead.", "stop",
                     "array_above_max_length")
    return None
