"""Request validation of the fake OpenAI Responses upstream, as strict as the real API.

Each check returns OpenAI's error object for the first problem found, or None.
Parameters and item shapes follow openai-python's `response_create_params.py`
and `response_input_item_param.py`: an input message has a role and content
(a string or typed parts); `function_call` needs call_id, name and arguments;
`function_call_output` needs call_id and output; a `reasoning` item is only
accepted with its `encrypted_content` or when this upstream stored it.
"""

from __future__ import annotations

import re
from typing import Any

from tests.fakes.openai_validate import error

KNOWN = frozenset({
    "access_programs", "background", "background_options", "context_management",
    "conversation", "image", "include", "input", "instructions", "max_output_tokens",
    "max_tool_calls", "metadata", "model", "moderation", "parallel_tool_calls",
    "previous_response_id", "prompt", "prompt_cache_key", "prompt_cache_options",
    "prompt_cache_retention", "reasoning", "safety_identifier", "service_tier", "store",
    "stream", "stream_options", "temperature", "text", "tool_choice", "tools", "top_logprobs",
    "top_p", "truncation", "user"})
HOSTED = ("web_search", "web_search_preview", "file_search", "computer_use_preview",
          "code_interpreter", "image_generation", "mcp", "local_shell")
_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
Error = dict[str, Any]


def _missing(param: str) -> Error:
    return error(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


def _type(param: str, expected: str) -> Error:
    return error(f"Invalid type for '{param}': expected {expected}.", param, "invalid_type")


def validate(body: Any, stored: set[str]) -> Error | None:
    """`stored`: the ids of responses and reasoning items this upstream keeps."""
    if not isinstance(body, dict):
        return error("We could not parse the JSON body of your request. (HINT: This likely "
                     "means you aren't using your HTTP library correctly. The OpenAI API "
                     "expects a JSON payload, but what was sent was not valid JSON.)")
    for name in body:
        if name not in KNOWN:
            return error(f"Unknown parameter: '{name}'.", name, "unknown_parameter")
    if not isinstance(body.get("model"), str):
        return _missing("model")
    previous = body.get("previous_response_id")
    if previous is not None and not isinstance(previous, str):
        return _type("previous_response_id", "a string")
    if previous is not None and previous not in stored:
        return error(f"Previous response with id '{previous}' not found.",
                     "previous_response_id", "previous_response_not_found")
    cap = body.get("max_output_tokens")
    if cap is not None and (not isinstance(cap, int) or cap < 16):
        return error("Invalid 'max_output_tokens': integer below minimum value. Expected a "
                     f"value >= 16, but got {cap} instead.", "max_output_tokens",
                     "integer_below_min_value")
    for name in ("stream", "store", "parallel_tool_calls", "background"):
        if body.get(name) is not None and not isinstance(body[name], bool):
            return _type(name, "a boolean")
    if body.get("instructions") is not None and not isinstance(body["instructions"], str):
        return _type("instructions", "a string")
    return _input(body.get("input"), stored) or _tools(body)


def _input(value: Any, stored: set[str]) -> Error | None:
    if value is None or isinstance(value, str):
        return None
    if not isinstance(value, list):
        return _type("input", "a string or an array")
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            return _type(where, "an object")
        kind = item.get("type", "message")
        if kind == "message":
            if item.get("role") not in ("user", "system", "developer", "assistant"):
                return error(f"Invalid value: '{item.get('role')}'. Supported values are: "
                             "'assistant', 'system', 'developer', and 'user'.",
                             f"{where}.role", "invalid_value")
            content = item.get("content")
            if isinstance(content, list):
                for j, part in enumerate(content):
                    allowed = ("output_text", "refusal") if item["role"] == "assistant" \
                        else ("input_text", "input_image", "input_file")
                    if not isinstance(part, dict) or part.get("type") not in allowed:
                        return error(f"Invalid value: '{part.get('type') if isinstance(part, dict) else part}'. "
                                     f"Supported values are: {allowed}.",
                                     f"{where}.content[{j}].type", "invalid_value")
            elif not isinstance(content, str):
                return _missing(f"{where}.content")
            if item.get("role") == "assistant" and isinstance(content, list) \
                    and "id" not in item:
                return _missing(f"{where}.id")
        elif kind == "function_call":
            for key in ("call_id", "name", "arguments"):
                if not isinstance(item.get(key), str):
                    return _missing(f"{where}.{key}")
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                return _missing(f"{where}.call_id")
            if not isinstance(item.get("output"), (str, list)):
                return _missing(f"{where}.output")
        elif kind == "reasoning":
            if not isinstance(item.get("summary"), list):
                return _missing(f"{where}.summary")
            if item.get("id") is not None and not isinstance(item["id"], str):
                return _type(f"{where}.id", "a string")
            if not item.get("encrypted_content") and item.get("id") not in stored:
                return error(f"Item with id '{item.get('id')}' not found. Items are not "
                             "persisted when `store` is set to false.", "input", None)
        else:
            return error(f"Invalid value: '{kind}'.", f"{where}.type", "invalid_value")
    return None


def _tools(body: dict[str, Any]) -> Error | None:
    tools = body.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list):
        return _type("tools", "an array")
    for i, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind == "function":
            if not isinstance(tool.get("name"), str) or not _NAME.match(tool["name"]):
                return _missing(f"tools[{i}].name")
            if "function" in tool:  # the chat completions shape, nested
                return error(f"Unknown parameter: 'tools[{i}].function'.",
                             f"tools[{i}].function", "unknown_parameter")
        elif kind not in HOSTED:
            return error(f"Invalid value: '{kind}'.", f"tools[{i}].type", "invalid_value")
    return None
