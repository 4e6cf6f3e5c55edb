"""OpenAI chat request → Anthropic Messages request body.

Scalar parameters go through the table (`TABLE`, applied by translators.params);
the structural ones (messages, tools, tool_choice, max tokens, response_format,
reasoning_effort) are mapped here. docs/providers/anthropic.md explains the
choices. The client's request is never mutated.
"""

from __future__ import annotations

from typing import Any

from proxy.core.errors import GatewayError, bad_request
from translators import params
from translators.anthropic_thinking import split
from translators.common import (
    SYSTEM_ROLES,
    assistant_texts,
    content_parts,
    function_tools,
    max_output_tokens,
    parse_data_url,
    part_text,
    safe_tool_id,
    system_texts,
    text_of,
    tool_calls_of,
)
from translators.params import handled, ignored, rename, unsupported

IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
JSON_TOOL = "json_object"  # the forced tool that carries a json_object answer
DEFAULT_MAX_TOKENS = 4096
#: reasoning_effort → thinking budget_tokens (Anthropic's minimum is 1024)
THINKING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576,
                    "xhigh": 32768}


def _temperature_ok(value: Any) -> bool:
    # Anthropic takes 0..1; values OpenAI would itself refuse are left to the range check.
    return not isinstance(value, (int, float)) or value <= 1 or value > 2


TABLE: dict[str, params.Rule] = {
    "model": handled(), "messages": handled(), "stream": handled(),
    "stream_options": handled(), "tools": handled(), "tool_choice": handled(),
    "parallel_tool_calls": handled(), "max_tokens": handled(),
    "max_completion_tokens": handled(), "response_format": handled(),
    "reasoning_effort": handled(),
    "temperature": rename("temperature", params.number(0, 2), supported=_temperature_ok,
                          why="Anthropic accepts temperatures from 0 to 1."),
    "top_p": rename("top_p", params.number(0, 1)),
    "stop": rename("stop_sequences", params.string_list),
    "user": rename("metadata.user_id", params.string),
    "safety_identifier": rename("metadata.user_id", params.string),
    "n": unsupported("Anthropic returns one choice per request.", unless=lambda v: v == 1),
    "logprobs": unsupported("Anthropic does not return log probabilities.",
                            unless=lambda v: v is False),
    "top_logprobs": unsupported("Anthropic does not return log probabilities.",
                                unless=lambda v: v == 0),
    "logit_bias": unsupported("Anthropic has no logit bias.", unless=lambda v: v == {}),
    "frequency_penalty": unsupported("Anthropic has no frequency penalty.",
                                     unless=lambda v: v == 0),
    "presence_penalty": unsupported("Anthropic has no presence penalty.",
                                    unless=lambda v: v == 0),
    "seed": unsupported("Anthropic has no seed."),
    "modalities": unsupported("Anthropic answers in text only.",
                              unless=lambda v: v == ["text"]),
    "audio": unsupported("Anthropic answers in text only."),
    "prediction": unsupported("Anthropic has no predicted outputs."),
    "web_search_options": unsupported("Use a model whose provider offers web search."),
    "functions": unsupported("Use 'tools' instead of the deprecated 'functions'."),
    "function_call": unsupported("Use 'tool_choice' instead of the deprecated "
                                 "'function_call'."),
    "service_tier": unsupported("Anthropic's service tiers differ from OpenAI's.",
                                unless=lambda v: v in ("auto", "default")),
    # OpenAI-platform bookkeeping with no effect on the answer itself.
    "store": ignored(), "metadata": ignored(), "prompt_cache_key": ignored(),
}


def build_body(chat: dict[str, Any], model: str, default_max_tokens: int | None, *,
               stream: bool, drop_unsupported: bool) -> tuple[dict[str, Any], bool]:
    """The Anthropic request body, and whether json_object rides on a forced tool."""
    body: dict[str, Any] = {"model": model}
    params.apply(TABLE, chat, body, provider_type="anthropic",
                 drop_unsupported=drop_unsupported)
    messages = chat["messages"]
    system = [{"type": "text", "text": t} for t in system_texts(messages) if t]
    if system:
        body["system"] = system
    body["messages"] = map_messages(
        messages, thinking=_thinking(chat.get("reasoning_effort")) is not None)
    tools = map_tools(chat.get("tools"))
    max_tokens = max_output_tokens(chat)
    budget = _thinking(chat.get("reasoning_effort"))
    if max_tokens is None:
        max_tokens = (default_max_tokens or DEFAULT_MAX_TOKENS) + (budget or 0)
    elif budget is not None:
        budget = min(budget, max_tokens - 1)
        if budget < 1024:
            raise bad_request("'reasoning_effort' needs 'max_completion_tokens' above 1024 with "
                              "this model's provider (anthropic): thinking needs a budget of "
                              "at least 1024 tokens below the limit.",
                              param="reasoning_effort", code="unsupported_value")
    body["max_tokens"] = max_tokens
    if budget is not None:
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    json_tool = _response_format(chat.get("response_format"), body, tools, budget)
    if tools:
        body["tools"] = tools
    choice = map_tool_choice(chat.get("tool_choice"), chat.get("parallel_tool_calls"), tools)
    if json_tool:
        choice = {"type": "tool", "name": JSON_TOOL}
    if choice is not None:
        body["tool_choice"] = choice
    if stream:
        body["stream"] = True
    return body, json_tool


def _thinking(effort: Any) -> int | None:
    if effort is None or effort == "none":
        return None
    budget = THINKING_BUDGETS.get(effort) if isinstance(effort, str) else None
    if budget is None:
        raise bad_request(f"Invalid value for 'reasoning_effort': {effort!r}. Supported values "
                          f"are: {', '.join(['none', *THINKING_BUDGETS])}.",
                          param="reasoning_effort", code="invalid_value")
    return budget


def _response_format(fmt: Any, body: dict[str, Any], tools: list, budget: int | None) -> bool:
    if fmt is None:
        return False
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return False
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise bad_request("Invalid 'response_format.json_schema.schema': expected an object.",
                              param="response_format.json_schema.schema", code="invalid_value")
        body.setdefault("output_config", {})["format"] = {"type": "json_schema",
                                                          "schema": schema}
        return False
    if kind == "json_object":
        if tools or budget is not None:
            raise GatewayError(
                400, "Unsupported value: 'response_format' json_object cannot be combined with "
                "'tools' or 'reasoning_effort' with this model's provider (anthropic); use "
                "json_schema instead.", "invalid_request_error", param="response_format",
                code="unsupported_value")
        tools.append({"name": JSON_TOOL, "description": "Answer with one JSON object.",
                      "input_schema": {"type": "object"}})
        return True
    raise bad_request(f"Invalid value for 'response_format.type': {kind!r}.",
                      param="response_format.type", code="invalid_value")


# --- messages ----------------------------------------------------------------------

def map_messages(messages: list[dict[str, Any]], *,
                 thinking: bool = False) -> list[dict[str, Any]]:
    """OpenAI turns → Anthropic turns: system lifted out, tool results as user
    turns, consecutive same-role turns merged (tool results first). `thinking`:
    replay the thinking blocks that ride in tool call ids (translators/
    anthropic_thinking.py), as Anthropic requires when thinking is on."""
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        role = message["role"]
        if role in SYSTEM_ROLES:
            continue
        if role == "user":
            blocks = _user_blocks(message.get("content"), f"messages[{i}].content")
            if not blocks:
                raise bad_request(f"Invalid 'messages[{i}].content': this model's provider "
                                  "(anthropic) needs non-empty user content.",
                                  param=f"messages[{i}].content", code="invalid_value")
            _append(out, "user", blocks)
        elif role == "assistant":
            blocks = _assistant_blocks(message, i, thinking)
            if blocks:
                _append(out, "assistant", blocks)
        elif role == "tool":
            _append(out, "user", [_tool_result(message, i)])
        else:
            raise bad_request(f"Invalid 'messages[{i}].role': '{role}' is not supported by this "
                              "model's provider (anthropic).", param=f"messages[{i}].role",
                              code="invalid_value")
    return out


def _append(out: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    if out and out[-1]["role"] == role:
        out[-1]["content"].extend(blocks)
    else:
        out.append({"role": role, "content": blocks})


def _user_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    blocks = []
    for path, part in content_parts(content, where):
        kind = part["type"]
        if kind == "text":
            text = part_text(part, path)
            if text:
                blocks.append({"type": "text", "text": text})
        elif kind == "image_url":
            blocks.append(_image(part, path))
        else:
            raise bad_request(f"Invalid '{path}.type': '{kind}' parts are not supported by this "
                              "model's provider (anthropic).", param=f"{path}.type",
                              code="invalid_value")
    return blocks


def _image(part: dict[str, Any], where: str) -> dict[str, Any]:
    spec = part.get("image_url")
    url = spec.get("url") if isinstance(spec, dict) else spec
    path = f"{where}.image_url"
    if not isinstance(url, str):
        raise bad_request(f"Invalid '{path}.url': expected a string.", param=f"{path}.url",
                          code="invalid_type")
    if url.startswith("data:"):
        parsed = parse_data_url(url, f"{path}.url")
        if parsed.media_type not in IMAGE_TYPES:
            raise bad_request(f"Invalid '{path}.url': image type '{parsed.media_type}' is not "
                              "supported by this model's provider (anthropic); use jpeg, png, "
                              "gif or webp.", param=f"{path}.url", code="invalid_image_format")
        return {"type": "image", "source": {"type": "base64", "media_type": parsed.media_type,
                                            "data": parsed.data}}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise bad_request(f"Invalid '{path}.url': expected an https URL or a base64 data URL.",
                      param=f"{path}.url", code="invalid_image_url")


def _assistant_blocks(message: dict[str, Any], i: int,
                      thinking: bool = False) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}
                                    for text in assistant_texts(message, i) if text]
    for k, (call_id, name, args) in enumerate(tool_calls_of(message, i)):
        call_id, carried = split(call_id)
        if thinking and carried:
            at = len(blocks) if k else 0  # the first call's thinking came before the text
            blocks[at:at] = carried
        blocks.append({"type": "tool_use",
                       "id": safe_tool_id(call_id, f"messages[{i}].tool_calls[{k}].id"),
                       "name": name, "input": args})
    return blocks


def _tool_result(message: dict[str, Any], i: int) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": safe_tool_id(
        split(message.get("tool_call_id"))[0], f"messages[{i}].tool_call_id")}
    content = message.get("content")
    where = f"messages[{i}].content"
    if isinstance(content, list):
        parts = _user_blocks(content, where)
        if parts:
            block["content"] = parts
    else:
        text = text_of(content, where) if content is not None else ""
        if text:
            block["content"] = text
    return block


# --- tools -------------------------------------------------------------------------

def map_tools(tools: Any) -> list[dict[str, Any]]:
    if tools is None:
        return []
    out = []
    for fn in function_tools(tools):
        schema = fn.get("parameters")
        mapped: dict[str, Any] = {"name": fn["name"],
                                  "input_schema": schema if isinstance(schema, dict)
                                  else {"type": "object", "properties": {}}}
        if fn.get("description"):
            mapped["description"] = fn["description"]
        if fn.get("strict") is True:
            mapped["strict"] = True
        out.append(mapped)
    return out


def map_tool_choice(choice: Any, parallel: Any, tools: list) -> dict[str, Any] | None:
    if choice is not None and not tools:
        raise bad_request("Invalid value for 'tool_choice': 'tool_choice' is only allowed when "
                          "'tools' are specified.", param="tool_choice", code="invalid_value")
    if not tools:
        return None
    if choice is None or choice == "auto":
        mapped: dict[str, Any] = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}
    elif choice == "required":
        mapped = {"type": "any"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict) and \
            isinstance(choice["function"].get("name"), str):
        mapped = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise bad_request(f"Invalid value for 'tool_choice': {choice!r}.", param="tool_choice",
                          code="invalid_value")
    if parallel is False:
        mapped["disable_parallel_tool_use"] = True
    elif choice is None:
        return None  # Anthropic's default is the same auto
    return mapped
