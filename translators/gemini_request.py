"""OpenAI chat request → Gemini `generateContent` request body.

Scalar parameters go through the table (`TABLE`, applied by translators.params)
into `generationConfig`; messages, tools, tool_choice, response_format and
reasoning_effort are mapped here. Tool call ids carry Gemini's thought
signature (see `call_id` / `split_call_id` and docs/providers/gemini.md).
The client's request is never mutated.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

import orjson

from proxy.core.errors import GatewayError, bad_request
from translators import params
from translators.common import (
    SYSTEM_ROLES,
    assistant_texts,
    content_parts,
    function_tools,
    max_output_tokens,
    parse_data_url,
    part_text,
    system_texts,
    text_of,
    tool_calls_of,
)
from translators.image_fetch import Image, image_url_of
from translators.params import handled, ignored, rename, unsupported

MAX_STOP = 5
#: the markers between a call id and the thought signature it carries: as the bytes
#: of standard base64, or as the text of anything else
SIG_MARK = "__ts_"
SIG_TEXT_MARK = "__tt_"
#: ids the gateway made up (Gemini sent none): never echoed back to Gemini as ids
SYNTHETIC_ID = re.compile(r"^call_[0-9a-f]{24}$")
#: reasoning_effort → thinkingBudget (Gemini 2.x); Gemini 3 takes thinkingLevel
THINKING_BUDGETS = {"none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576}
THINKING_LEVELS = frozenset({"minimal", "low", "medium", "high"})


def _stop(value: Any) -> list[str]:
    stops = params.string_list(value)
    if len(stops) > MAX_STOP:
        raise ValueError(f"Gemini accepts at most {MAX_STOP} stop sequences, got {len(stops)}.")
    return stops


TABLE: dict[str, params.Rule] = {
    "model": handled(), "messages": handled(), "stream": handled(),
    "stream_options": handled(), "tools": handled(), "tool_choice": handled(),
    "max_tokens": handled(), "max_completion_tokens": handled(),
    "response_format": handled(), "reasoning_effort": handled(),
    "parallel_tool_calls": unsupported("Gemini cannot be told to make one call at a time.",
                                       unless=lambda v: v is True),
    "temperature": rename("generationConfig.temperature", params.number(0, 2)),
    "top_p": rename("generationConfig.topP", params.number(0, 1)),
    "top_k": rename("generationConfig.topK", params.positive_int),  # not OpenAI's: from /v1/messages
    "stop": rename("generationConfig.stopSequences", _stop),
    "n": rename("generationConfig.candidateCount", params.positive_int),
    "seed": rename("generationConfig.seed", params.integer),
    "presence_penalty": rename("generationConfig.presencePenalty", params.number(-2, 2)),
    "frequency_penalty": rename("generationConfig.frequencyPenalty", params.number(-2, 2)),
    "logprobs": unsupported("Use a model whose provider returns log probabilities.",
                            unless=lambda v: v is False),
    "top_logprobs": unsupported("Use a model whose provider returns log probabilities.",
                                unless=lambda v: v == 0),
    "logit_bias": unsupported("Gemini has no logit bias.", unless=lambda v: v == {}),
    "modalities": unsupported("This gateway maps Gemini text answers only.",
                              unless=lambda v: v == ["text"]),
    "audio": unsupported("This gateway maps Gemini text answers only."),
    "prediction": unsupported("Gemini has no predicted outputs."),
    "web_search_options": unsupported("Use a model whose provider offers web search."),
    "functions": unsupported("Use 'tools' instead of the deprecated 'functions'."),
    "function_call": unsupported("Use 'tool_choice' instead of the deprecated "
                                 "'function_call'."),
    "service_tier": unsupported("Gemini's service tiers differ from OpenAI's.",
                                unless=lambda v: v in ("auto", "default")),
    # No Gemini field, no effect on the answer.
    "user": ignored(), "safety_identifier": ignored(), "store": ignored(),
    "metadata": ignored(), "prompt_cache_key": ignored(),
}


def build_body(chat: dict[str, Any], model: str, *, drop_unsupported: bool,
               images: Mapping[str, Image] | None = None) -> dict[str, Any]:
    """`images`: the https image URLs the translator fetched beforehand (by URL)."""
    body: dict[str, Any] = {}
    params.apply(TABLE, chat, body, provider_type="gemini", drop_unsupported=drop_unsupported)
    config: dict[str, Any] = body.pop("generationConfig", {})
    messages = chat["messages"]
    system = [{"text": t} for t in system_texts(messages) if t]
    body["contents"] = map_messages(messages, images or {})
    if system:
        body["systemInstruction"] = {"parts": system}
    tools = map_tools(chat.get("tools"))
    if tools:
        body["tools"] = [{"functionDeclarations": tools}]
    choice = map_tool_choice(chat.get("tool_choice"), tools)
    if choice is not None:
        body["toolConfig"] = {"functionCallingConfig": choice}
    max_tokens = max_output_tokens(chat)
    if max_tokens is not None:
        config["maxOutputTokens"] = max_tokens
    _response_format(chat.get("response_format"), config)
    thinking = thinking_config(chat.get("reasoning_effort"), model)
    if thinking is not None:
        config["thinkingConfig"] = thinking
    if config:
        body["generationConfig"] = config
    return body


def thinking_config(effort: Any, model: str) -> dict[str, Any] | None:
    """reasoning_effort → thinkingConfig: a level for Gemini 3, a budget before it.
    Thought summaries are asked for so they can stream as reasoning_content."""
    if effort is None:
        return None
    if model.startswith("gemini-3"):
        if not isinstance(effort, str) or effort not in THINKING_LEVELS:
            raise GatewayError(
                400, f"Unsupported value: 'reasoning_effort' does not support {effort!r} with "
                f"this model's provider (gemini); use one of {', '.join(sorted(THINKING_LEVELS))}.",
                "invalid_request_error", param="reasoning_effort", code="unsupported_value")
        return {"thinkingLevel": effort, "includeThoughts": True}
    budget = THINKING_BUDGETS.get(effort) if isinstance(effort, str) else None
    if budget is None:
        raise bad_request(f"Invalid value for 'reasoning_effort': {effort!r}. Supported values "
                          f"are: {', '.join(THINKING_BUDGETS)}.", param="reasoning_effort",
                          code="invalid_value")
    return {"thinkingBudget": budget, "includeThoughts": budget > 0}


def _response_format(fmt: Any, config: dict[str, Any]) -> None:
    if fmt is None:
        return
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return
    if kind == "json_object":
        config["responseMimeType"] = "application/json"
        return
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise bad_request("Invalid 'response_format.json_schema.schema': expected an object.",
                              param="response_format.json_schema.schema", code="invalid_value")
        config["responseMimeType"] = "application/json"
        config["responseJsonSchema"] = schema
        return
    raise bad_request(f"Invalid value for 'response_format.type': {kind!r}.",
                      param="response_format.type", code="invalid_value")


# --- tool call ids carrying thought signatures ----------------------------------------

def call_id(base: str, signature: str | None) -> str:
    """The OpenAI id for a call: `base`, plus the signature, carried exactly as Gemini
    sent it (signatures are opaque: one changed by a byte is refused). Standard base64
    that re-encodes to itself rides compactly as its bytes (`SIG_MARK`); anything else,
    as its UTF-8 text (`SIG_TEXT_MARK`); both base64url, so the id stays [A-Za-z0-9_-]."""
    if not signature:
        return base
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raw = None
    if raw is not None and base64.b64encode(raw).decode() == signature:
        return base + SIG_MARK + _b64url(raw)
    return base + SIG_TEXT_MARK + _b64url(signature.encode("utf-8", "surrogatepass"))


def split_call_id(value: str) -> tuple[str, str | None]:
    """An OpenAI call id → (Gemini's id or ours, the thought signature or None)."""
    for mark in (SIG_MARK, SIG_TEXT_MARK):
        base, found, carried = value.partition(mark)
        if not found:
            continue
        try:
            raw = base64.urlsafe_b64decode(carried + "=" * (-len(carried) % 4))
            if mark is SIG_MARK:
                return base, base64.b64encode(raw).decode()
            return base, raw.decode("utf-8", "surrogatepass")
        except (binascii.Error, ValueError):
            return base, None
    return value, None


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# --- messages ----------------------------------------------------------------------

def map_messages(messages: list[dict[str, Any]],
                 images: Mapping[str, Image] | None = None) -> list[dict[str, Any]]:
    """OpenAI turns → Gemini contents: roles user/model, tool results as
    functionResponse parts of a user turn, consecutive same-role turns merged."""
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # OpenAI call id → function name, from earlier assistant turns
    for i, message in enumerate(messages):
        role = message["role"]
        if role in SYSTEM_ROLES:
            continue
        if role == "user":
            parts = _user_parts(message.get("content"), f"messages[{i}].content", images or {})
            if not parts:
                raise bad_request(f"Invalid 'messages[{i}].content': this model's provider "
                                  "(gemini) needs non-empty user content.",
                                  param=f"messages[{i}].content", code="invalid_value")
            _append(out, "user", parts)
        elif role == "assistant":
            parts = _model_parts(message, i, names)
            if parts:
                _append(out, "model", parts)
        elif role == "tool":
            _append(out, "user", [_function_response(message, i, names)])
        else:
            raise bad_request(f"Invalid 'messages[{i}].role': '{role}' is not supported by this "
                              "model's provider (gemini).", param=f"messages[{i}].role",
                              code="invalid_value")
    if not out:
        raise bad_request("Invalid 'messages': this model's provider (gemini) needs at least "
                          "one user message.", param="messages", code="invalid_value")
    return out


def _append(out: list[dict[str, Any]], role: str, parts: list[dict[str, Any]]) -> None:
    if out and out[-1]["role"] == role:
        out[-1]["parts"].extend(parts)
    else:
        out.append({"role": role, "parts": parts})


def _user_parts(content: Any, where: str, images: Mapping[str, Image]) -> list[dict[str, Any]]:
    parts = []
    for path, part in content_parts(content, where):
        kind = part["type"]
        if kind == "text":
            text = part_text(part, path)
            if text:
                parts.append({"text": text})
        elif kind == "image_url":
            parts.append(_image(part, path, images))
        else:
            raise bad_request(f"Invalid '{path}.type': '{kind}' parts are not supported by this "
                              "model's provider (gemini).", param=f"{path}.type",
                              code="invalid_value")
    return parts


def _image(part: dict[str, Any], where: str, images: Mapping[str, Image]) -> dict[str, Any]:
    url = image_url_of(part)
    path = f"{where}.image_url.url"
    if not isinstance(url, str):
        raise bad_request(f"Invalid '{path}': expected a string.", param=path,
                          code="invalid_type")
    fetched = images.get(url)
    if fetched is not None:
        return {"inlineData": {"mimeType": fetched.media_type,
                               "data": base64.b64encode(fetched.data).decode("ascii")}}
    if url.startswith("data:"):
        parsed = parse_data_url(url, path)
        return {"inlineData": {"mimeType": parsed.media_type, "data": parsed.data}}
    raise bad_request(f"Invalid '{path}': this model's provider (gemini) takes images as base64 "
                      "data URLs ('data:<media type>;base64,<data>'); fetching image URLs is "
                      "not enabled for this provider.", param=path, code="invalid_image_url")


def _model_parts(message: dict[str, Any], i: int, names: dict[str, str]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"text": text} for text in assistant_texts(message, i) if text]
    for k, (openai_id, name, args) in enumerate(tool_calls_of(message, i)):
        if not isinstance(openai_id, str) or not openai_id:
            raise bad_request(f"Invalid 'messages[{i}].tool_calls[{k}].id': expected a "
                              "non-empty string.", param=f"messages[{i}].tool_calls[{k}].id",
                              code="invalid_value")
        names[openai_id] = name
        base, signature = split_call_id(openai_id)
        call: dict[str, Any] = {"name": name, "args": args}
        if not SYNTHETIC_ID.match(base):
            call["id"] = base
        mapped: dict[str, Any] = {"functionCall": call}
        if signature:
            mapped["thoughtSignature"] = signature
        parts.append(mapped)
    return parts


def _function_response(message: dict[str, Any], i: int, names: dict[str, str]) -> dict[str, Any]:
    where = f"messages[{i}].tool_call_id"
    openai_id = message.get("tool_call_id")
    name = names.get(openai_id) if isinstance(openai_id, str) else None
    if name is None:
        raise bad_request(f"Invalid '{where}': no earlier assistant message has a tool call "
                          f"with this id; this model's provider (gemini) needs the function's "
                          "name for each tool result.", param=where, code="invalid_value")
    text = text_of(message.get("content"), f"messages[{i}].content") \
        if message.get("content") is not None else ""
    result: Any = None
    if text.startswith("{"):  # a JSON object result travels as that object
        try:
            result = orjson.loads(text)
        except orjson.JSONDecodeError:
            result = None
    if not isinstance(result, dict):
        result = {"output": text}  # the documented convention for non-object results
    response: dict[str, Any] = {"name": name, "response": result}
    base, _ = split_call_id(openai_id)
    if not SYNTHETIC_ID.match(base):
        response["id"] = base
    return {"functionResponse": response}


# --- tools -------------------------------------------------------------------------

def map_tools(tools: Any) -> list[dict[str, Any]]:
    """OpenAI function tools → functionDeclarations; schemas travel as full JSON
    Schema (`parametersJsonSchema`), so nothing is lost in a conversion."""
    if tools is None:
        return []
    out = []
    for fn in function_tools(tools):
        declaration: dict[str, Any] = {"name": fn["name"]}
        if fn.get("description"):
            declaration["description"] = fn["description"]
        schema = fn.get("parameters")
        if isinstance(schema, dict) and schema.get("properties") != {} and schema:
            declaration["parametersJsonSchema"] = schema
        out.append(declaration)
    return out


def map_tool_choice(choice: Any, tools: list) -> dict[str, Any] | None:
    if choice is not None and not tools:
        raise bad_request("Invalid value for 'tool_choice': 'tool_choice' is only allowed when "
                          "'tools' are specified.", param="tool_choice", code="invalid_value")
    if choice is None:
        return None
    if choice == "auto":
        return {"mode": "AUTO"}
    if choice == "none":
        return {"mode": "NONE"}
    if choice == "required":
        return {"mode": "ANY"}
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict) and \
            isinstance(choice["function"].get("name"), str):
        return {"mode": "ANY", "allowedFunctionNames": [choice["function"]["name"]]}
    raise bad_request(f"Invalid value for 'tool_choice': {choice!r}.", param="tool_choice",
                      code="invalid_value")
