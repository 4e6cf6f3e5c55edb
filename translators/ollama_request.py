"""OpenAI chat request → Ollama `/api/chat` request body.

Sampling parameters go through the table into `options`; messages, tools,
tool_choice, response_format (`format`) and reasoning_effort (`think`) are
mapped here. The client's request is never mutated.
"""

from __future__ import annotations

from typing import Any

from proxy.core.errors import bad_request
from translators import params
from translators.common import (
    content_parts,
    function_tools,
    parse_data_url,
    part_text,
    text_of,
    tool_calls_of,
)
from translators.params import handled, ignored, rename, unsupported

THINK = {"none": False, "low": "low", "medium": "medium", "high": "high"}
IMAGE_TYPES = frozenset({"image/jpeg", "image/jpg", "image/png", "image/webp"})
_ROLES = frozenset({"system", "user", "assistant", "tool"})

#: OpenAI parameter → Ollama field (`options.*` for sampling)
TABLE: dict[str, params.Rule] = {
    "model": handled(), "messages": handled(), "stream": handled(),
    "stream_options": handled(), "tools": handled(), "tool_choice": handled(),
    "response_format": handled(), "reasoning_effort": handled(),
    "max_tokens": rename("options.num_predict", params.positive_int),
    "max_completion_tokens": rename("options.num_predict", params.positive_int),
    "temperature": rename("options.temperature", params.number(0, 2)),
    "top_p": rename("options.top_p", params.number(0, 1)),
    "top_k": rename("options.top_k", params.positive_int),  # from /v1/messages
    "seed": rename("options.seed", params.integer),
    "stop": rename("options.stop", params.string_list),
    "presence_penalty": rename("options.presence_penalty", params.number(-2, 2)),
    "frequency_penalty": rename("options.frequency_penalty", params.number(-2, 2)),
    "parallel_tool_calls": unsupported("Ollama cannot be told to make one call at a time.",
                                       unless=lambda v: v is True),
    "n": unsupported("Ollama returns one choice per request.", unless=lambda v: v == 1),
    "logprobs": unsupported("This gateway does not map Ollama log probabilities.",
                            unless=lambda v: v is False),
    "top_logprobs": unsupported("This gateway does not map Ollama log probabilities.",
                                unless=lambda v: v == 0),
    "logit_bias": unsupported("Ollama has no logit bias.", unless=lambda v: v == {}),
    "modalities": unsupported("Ollama answers in text only.", unless=lambda v: v == ["text"]),
    "audio": unsupported("Ollama answers in text only."),
    "prediction": unsupported("Ollama has no predicted outputs."),
    "web_search_options": unsupported("Use a model whose provider offers web search."),
    "functions": unsupported("Use 'tools' instead of the deprecated 'functions'."),
    "function_call": unsupported("Use 'tool_choice' instead of the deprecated "
                                 "'function_call'."),
    "service_tier": unsupported("Ollama has no service tiers.",
                                unless=lambda v: v in ("auto", "default")),
    "user": ignored(), "safety_identifier": ignored(), "store": ignored(),
    "metadata": ignored(), "prompt_cache_key": ignored(),
}


def build_body(chat: dict[str, Any], model: str, *, stream: bool, drop_unsupported: bool,
               keep_alive: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model}
    params.apply(TABLE, chat, body, provider_type="ollama", drop_unsupported=drop_unsupported)
    if chat.get("max_completion_tokens") is not None and "max_tokens" in chat:
        body.setdefault("options", {})["num_predict"] = chat["max_completion_tokens"]
    body["messages"] = map_messages(chat["messages"])
    tools = chat.get("tools")
    choice = chat.get("tool_choice")
    if choice is not None and not tools:
        raise bad_request("Invalid value for 'tool_choice': 'tool_choice' is only allowed when "
                          "'tools' are specified.", param="tool_choice", code="invalid_value")
    if tools and choice != "none":
        if choice not in (None, "auto") and not drop_unsupported:
            raise params.refusal("tool_choice", choice, params.unsupported(
                "Ollama cannot be made to call a tool."), "ollama")
        body["tools"] = _tools(tools)
    fmt = _format(chat.get("response_format"))
    if fmt is not None:
        body["format"] = fmt
    effort = chat.get("reasoning_effort")
    if effort is not None:
        if not isinstance(effort, str) or effort not in THINK:  # (a dict is unhashable)
            raise bad_request(f"Invalid value for 'reasoning_effort': {effort!r}. Supported "
                              f"values with this model's provider (ollama) are: "
                              f"{', '.join(THINK)}.", param="reasoning_effort",
                              code="invalid_value")
        body["think"] = THINK[effort]
    if keep_alive is not None:
        body["keep_alive"] = keep_alive
    body["stream"] = stream  # explicit: Ollama streams unless told otherwise
    return body


def _tools(tools: Any) -> list[dict[str, Any]]:
    function_tools(tools)  # the same 400s as every upstream
    return tools  # the same OpenAI shape


def _format(fmt: Any) -> Any:
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if fmt is None or kind == "text":
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if isinstance(schema, dict):
            return schema
        raise bad_request("Invalid 'response_format.json_schema.schema': expected an object.",
                          param="response_format.json_schema.schema", code="invalid_value")
    raise bad_request(f"Invalid value for 'response_format.type': {kind!r}.",
                      param="response_format.type", code="invalid_value")


def map_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for i, message in enumerate(messages):
        role = message["role"]
        where = f"messages[{i}].content"
        if role == "developer":
            role = "system"
        if role not in _ROLES:
            raise bad_request(f"Invalid 'messages[{i}].role': '{role}' is not supported by this "
                              "model's provider (ollama).", param=f"messages[{i}].role",
                              code="invalid_value")
        mapped: dict[str, Any] = {"role": role}
        if role == "user":
            texts, images = _user_content(message.get("content"), where)
            mapped["content"] = "\n".join(texts)
            if images:
                mapped["images"] = images
        elif role == "assistant":
            mapped["content"] = _assistant_text(message.get("content"), where)
            calls = tool_calls_of(message, i)
            if calls:
                mapped["tool_calls"] = [{"function": {"name": name, "arguments": args}}
                                        for _, name, args in calls]
                names.update((cid, name) for cid, name, _ in calls if isinstance(cid, str))
        elif role == "tool":
            call = message.get("tool_call_id")
            name = names.get(call) if isinstance(call, str) else None
            if name is None:
                raise bad_request(f"Invalid 'messages[{i}].tool_call_id': no earlier assistant "
                                  "message has a tool call with this id.",
                                  param=f"messages[{i}].tool_call_id", code="invalid_value")
            mapped["content"] = text_of(message.get("content") or "", where)
            mapped["tool_name"] = name
        else:
            mapped["content"] = text_of(message.get("content") or "", where)
        out.append(mapped)
    return out


def _user_content(content: Any, where: str) -> tuple[list[str], list[str]]:
    texts, images = [], []
    for path, part in content_parts(content, where):
        kind = part["type"]
        if kind == "text":
            texts.append(part_text(part, path))
        elif kind == "image_url":
            spec = part.get("image_url")
            url = spec.get("url") if isinstance(spec, dict) else spec
            at = f"{path}.image_url.url"
            if not isinstance(url, str) or not url.startswith("data:"):
                raise bad_request(f"Invalid '{at}': this model's provider (ollama) takes images "
                                  "as base64 data URLs only.", param=at, code="invalid_image_url")
            parsed = parse_data_url(url, at)
            if parsed.media_type not in IMAGE_TYPES:
                raise bad_request(f"Invalid '{at}': image type '{parsed.media_type}' is not "
                                  "supported by this model's provider (ollama); use jpeg, png "
                                  "or webp.", param=at, code="invalid_image_format")
            images.append(parsed.data)
        else:
            raise bad_request(f"Invalid '{path}.type': '{kind}' parts are not supported by this "
                              "model's provider (ollama).", param=f"{path}.type",
                              code="invalid_value")
    return texts, images


def _assistant_text(content: Any, where: str) -> str:
    texts = []
    for path, part in content_parts(content, where):
        if part["type"] == "refusal" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
        else:
            texts.append(text_of([part], where))
    return "".join(texts)
