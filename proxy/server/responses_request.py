"""Checking a Responses API request (`POST /v1/responses`) the way OpenAI does.

Everything is checked once, before any upstream is chosen, with OpenAI's own
messages and codes. What only OpenAI's platform can do (its built-in tools,
stored prompts, item references) is not an error yet: it is kept as a
`Problem`, raised only if an attempt's upstream is reached through chat
completions (proxy/server/responses_native.py). A request the gateway itself
cannot serve anywhere (background mode, the Conversations API) is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from proxy.core.errors import GatewayError, bad_request
from proxy.server.requests import MAX_OUTPUT_TOKENS, check_forbidden, json_type
from proxy.server.responses_items import Problem, normalize_input

#: every create parameter of the official SDK (openai-python's response_create_params)
#: plus `stream` and gatewise's own `fallbacks`
KNOWN = frozenset({
    "access_programs", "background", "background_options", "context_management",
    "conversation", "image", "include", "input", "instructions", "max_output_tokens",
    "max_tool_calls", "metadata", "model", "moderation", "parallel_tool_calls",
    "previous_response_id", "prompt", "prompt_cache_key", "prompt_cache_options",
    "prompt_cache_retention", "reasoning", "safety_identifier", "service_tier", "store",
    "stream", "stream_options", "temperature", "text", "tool_choice", "tools", "top_logprobs",
    "top_p", "truncation", "user", "fallbacks"})
#: parameters only OpenAI's platform acts on: fine natively, a Problem otherwise
NATIVE_ONLY = ("prompt", "max_tool_calls", "top_logprobs", "context_management", "image",
               "moderation", "access_programs", "prompt_cache_options",
               "prompt_cache_retention", "background_options")
INCLUDABLE = frozenset({
    "file_search_call.results", "web_search_call.results", "web_search_call.action.sources",
    "message.input_image.image_url", "computer_call_output.output.image_url",
    "code_interpreter_call.outputs", "reasoning.encrypted_content",
    "message.output_text.logprobs"})
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
MIN_OUTPUT_TOKENS = 16  # OpenAI's floor for max_output_tokens
_FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_ID = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")


@dataclass(slots=True)
class ResponsesRequest:
    """A checked request: the client's body as sent, and what it means."""

    body: dict[str, Any]
    model: str
    stream: bool
    store: bool
    previous_id: str | None
    instructions: str | None
    items: list[dict[str, Any]]  # this request's input, normalized, each with an id
    problems: list[Problem] = field(default_factory=list)  # native-only features used
    history: list[dict[str, Any]] = field(default_factory=list)  # previous_response_id's chain

    @property
    def problem(self) -> Problem | None:
        return self.problems[0] if self.problems else None


def invalid(param: str, message: str, code: str = "invalid_value") -> GatewayError:
    return bad_request(message, param=param, code=code)


def wrong_type(param: str, value: Any, expected: str) -> GatewayError:
    return invalid(param, f"Invalid type for '{param}': expected {expected}, but got "
                          f"{json_type(value)} instead.", "invalid_type")


def _optional(body: dict[str, Any], name: str, kind: type | tuple, expected: str) -> Any:
    value = body.get(name)
    if value is not None and (isinstance(value, bool) and kind is not bool
                              or not isinstance(value, kind)):
        raise wrong_type(name, value, expected)
    return value


def parse_request(body: dict[str, Any], max_items: int) -> ResponsesRequest:
    check_forbidden(body)
    for name in body:
        if name not in KNOWN:
            raise invalid(name, f"Unknown parameter: '{name}'.", "unknown_parameter")
    model = body.get("model")
    if model is None:
        raise invalid("model", "Missing required parameter: 'model'.",
                      "missing_required_parameter")
    if not isinstance(model, str):
        raise wrong_type("model", model, "a string")
    stream = bool(_optional(body, "stream", bool, "a boolean"))
    if body.get("stream_options") is not None:
        if not stream:
            raise invalid("stream_options", "The 'stream_options' parameter is only allowed "
                          "when 'stream' is enabled.")
        _optional(body, "stream_options", dict, "an object")
    store = _optional(body, "store", bool, "a boolean")
    if body.get("background"):
        raise invalid("background", "Background responses are not served by this gateway: "
                      "send the request without 'background' (stream it instead).",
                      "unsupported_parameter")
    if body.get("conversation") is not None:
        raise invalid("conversation", "The Conversations API is not served by this gateway: "
                      "continue a conversation with 'previous_response_id'.",
                      "unsupported_parameter")
    previous = _optional(body, "previous_response_id", str, "a string")
    if previous is not None and not _ID.match(previous):
        raise invalid("previous_response_id", f"Previous response with id '{previous[:128]}' "
                      "not found.", "previous_response_not_found")
    instructions = _optional(body, "instructions", str, "a string")
    if "input" not in body or body["input"] is None:
        raise invalid("input", "Missing required parameter: 'input'.",
                      "missing_required_parameter")
    problems: list[Problem] = []
    items = normalize_input(body["input"], max_items, problems)
    _check_numbers(body)
    _check_strings(body)
    _check_tools(body, problems)
    _check_text(body.get("text"))
    _check_reasoning(body.get("reasoning"))
    _check_include(body.get("include"))
    truncation = body.get("truncation")
    if truncation not in (None, "auto", "disabled"):
        raise invalid("truncation", f"Invalid value: '{truncation}'. Supported values are: "
                      "'auto' and 'disabled'.")
    if truncation == "auto":
        problems.append(Problem("truncation", "'truncation': 'auto' (dropping items to fit)"))
    tier = body.get("service_tier")
    if tier not in (None, "auto", "default"):
        problems.append(Problem("service_tier", f"'service_tier': {tier!r}"))
    for name in NATIVE_ONLY:
        if body.get(name) is not None:
            problems.append(Problem(name, f"'{name}'"))
    return ResponsesRequest(body, model, stream, True if store is None else store, previous,
                            instructions, items, problems)


def _check_numbers(body: dict[str, Any]) -> None:
    cap = body.get("max_output_tokens")
    if cap is not None:
        if isinstance(cap, bool) or not isinstance(cap, int):
            raise wrong_type("max_output_tokens", cap, "an integer")
        if cap < MIN_OUTPUT_TOKENS:
            raise invalid("max_output_tokens", "Invalid 'max_output_tokens': integer below "
                          f"minimum value. Expected a value >= {MIN_OUTPUT_TOKENS}, but got "
                          f"{cap} instead.", "integer_below_min_value")
        if cap > MAX_OUTPUT_TOKENS:
            raise invalid("max_output_tokens", "Invalid 'max_output_tokens': integer above "
                          f"maximum value. Expected a value <= {MAX_OUTPUT_TOKENS}, but got "
                          f"{cap} instead.", "integer_above_max_value")
    for name, top in (("temperature", 2), ("top_p", 1)):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong_type(name, value, "a decimal")
        if value < 0 or value > top:
            side, bound, code = ("below minimum", ">= 0", "decimal_below_min_value") \
                if value < 0 else ("above maximum", f"<= {top}", "decimal_above_max_value")
            raise invalid(name, f"Invalid '{name}': decimal {side} value. Expected a value "
                          f"{bound}, but got {value} instead.", code)
    _optional(body, "parallel_tool_calls", bool, "a boolean")


def _check_strings(body: dict[str, Any]) -> None:
    for name in ("user", "safety_identifier", "prompt_cache_key"):
        value = _optional(body, name, str, "a string")
        if value is not None and len(value) > 512:
            raise invalid(name, f"Invalid '{name}': string too long. Expected a string with "
                          f"maximum length 512, but got a string with length {len(value)} "
                          "instead.", "string_above_max_length")
    metadata = _optional(body, "metadata", dict, "an object")
    if metadata is None:
        return
    if len(metadata) > 16:
        raise invalid("metadata", "Invalid 'metadata': too many properties. Expected an object "
                      f"with at most 16 properties, but got {len(metadata)} instead.",
                      "object_above_max_properties")
    for key, value in metadata.items():
        if len(key) > 64:
            raise invalid("metadata", "Invalid 'metadata': keys can be at most 64 characters.")
        if not isinstance(value, str):
            raise wrong_type(f"metadata.{key}", value, "a string")
        if len(value) > 512:
            raise invalid(f"metadata.{key}", f"Invalid 'metadata.{key}': string too long. "
                          "Expected a string with maximum length 512, but got a string with "
                          f"length {len(value)} instead.", "string_above_max_length")


#: tools OpenAI runs itself (plus any type it adds later): a chat upstream cannot
BUILT_IN = "is run by OpenAI itself"


def _check_tools(body: dict[str, Any], problems: list[Problem]) -> None:
    tools = _optional(body, "tools", list, "an array")
    names: set[str] = set()
    for i, tool in enumerate(tools or ()):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise wrong_type(where, tool, "an object")
        kind = tool.get("type")
        if not isinstance(kind, str):
            raise invalid(f"{where}.type", f"Missing required parameter: '{where}.type'.",
                          "missing_required_parameter")
        if kind != "function":
            problems.append(Problem(where, f"The tool '{kind}' {BUILT_IN}: it",
                                    code="unsupported_tool"))
            continue
        name = tool.get("name")
        if not isinstance(name, str):
            raise invalid(f"{where}.name", f"Missing required parameter: '{where}.name'.",
                          "missing_required_parameter")
        if not _FUNCTION_NAME.match(name):
            raise invalid(f"{where}.name", f"Invalid '{where}.name': string does not match "
                          "pattern. Expected a string that matches the pattern "
                          "'^[a-zA-Z0-9_-]+$' of at most 64 characters.")
        if name in names:
            raise invalid("tools", f"Duplicate function name '{name}' in 'tools'.")
        names.add(name)
        for key, kinds, expected in (("parameters", dict, "an object"),
                                     ("strict", bool, "a boolean"),
                                     ("description", str, "a string")):
            value = tool.get(key)
            if value is not None and not isinstance(value, kinds):
                raise wrong_type(f"{where}.{key}", value, expected)
    choice = body.get("tool_choice")
    if choice is None or choice in ("auto", "none", "required"):
        if choice == "required" and not tools:
            raise invalid("tool_choice", "Tool choice 'required' must be specified with "
                          "'tools' parameter.")
        return
    if not isinstance(choice, dict) or not isinstance(choice.get("type"), str):
        raise invalid("tool_choice", f"Invalid value for 'tool_choice': {choice!r}.")
    if choice["type"] == "function":
        if not isinstance(choice.get("name"), str) or choice["name"] not in names:
            raise invalid("tool_choice", f"Tool choice '{choice.get('name')}' not found in "
                          "'tools' parameter.")
    else:
        problems.append(Problem("tool_choice", f"'tool_choice' of type '{choice['type']}'"))


def _check_text(text: Any) -> None:
    if text is None:
        return
    if not isinstance(text, dict):
        raise wrong_type("text", text, "an object")
    verbosity = text.get("verbosity")
    if verbosity not in (None, "low", "medium", "high"):
        raise invalid("text.verbosity", f"Invalid value: '{verbosity}'. Supported values are: "
                      "'low', 'medium', and 'high'.")
    fmt = text.get("format")
    if fmt is None:
        return
    if not isinstance(fmt, dict):
        raise wrong_type("text.format", fmt, "an object")
    kind = fmt.get("type")
    if kind in ("text", "json_object"):
        return
    if kind != "json_schema":
        raise invalid("text.format.type", f"Invalid value: '{kind}'. Supported values are: "
                      "'text', 'json_object', and 'json_schema'.")
    name = fmt.get("name")
    if not isinstance(name, str):
        raise invalid("text.format.name", "Missing required parameter: 'text.format.name'.",
                      "missing_required_parameter")
    if not _FUNCTION_NAME.match(name):
        raise invalid("text.format.name", "Invalid 'text.format.name': string does not match "
                      "pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'.")
    if not isinstance(fmt.get("schema"), dict):
        raise invalid("text.format.schema", "Missing required parameter: "
                      "'text.format.schema'.", "missing_required_parameter")
    if fmt.get("strict") is not None and not isinstance(fmt["strict"], bool):
        raise wrong_type("text.format.strict", fmt["strict"], "a boolean")


def _check_reasoning(reasoning: Any) -> None:
    if reasoning is None:
        return
    if not isinstance(reasoning, dict):
        raise wrong_type("reasoning", reasoning, "an object")
    effort = reasoning.get("effort")
    if effort is not None and effort not in EFFORTS:
        raise invalid("reasoning.effort", f"Invalid value: '{effort}'. Supported values are: "
                      + ", ".join(f"'{e}'" for e in EFFORTS) + ".")
    for key in ("summary", "generate_summary"):
        summary = reasoning.get(key)
        if summary not in (None, "auto", "concise", "detailed"):
            raise invalid(f"reasoning.{key}", f"Invalid value: '{summary}'. Supported values "
                          "are: 'auto', 'concise', and 'detailed'.")


def _check_include(include: Any) -> None:
    if include is None:
        return
    if not isinstance(include, list):
        raise wrong_type("include", include, "an array")
    for i, value in enumerate(include):
        if not isinstance(value, str) or value not in INCLUDABLE:
            raise invalid(f"include[{i}]", f"Invalid value: '{value}'. Supported values are: "
                          + ", ".join(f"'{v}'" for v in sorted(INCLUDABLE)) + ".")
