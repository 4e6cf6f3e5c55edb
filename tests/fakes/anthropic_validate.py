"""Request validation for the fake Anthropic Messages API, as strict as the real one.

Each check answers what the API answers (status 400, `invalid_request_error`,
the API's own wording where known: wire-spec §2). `validate` returns None for
a good request, else (status, error type, message).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

TOP_LEVEL = frozenset({
    "model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream",
    "temperature", "top_p", "top_k", "tools", "tool_choice", "thinking", "output_config",
    "service_tier", "container", "cache_control", "inference_geo", "speed", "diagnostics",
})
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
# Models that refuse temperature and top_p together (observed on the 4.5 generation).
NO_TEMP_AND_TOP_P = ("claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1")

#: count_tokens takes the prompt only: no output settings
COUNT_FIELDS = frozenset({"model", "messages", "system", "tools", "tool_choice", "thinking",
                          "output_config", "cache_control", "mcp_servers",
                          "context_management"})
CACHE_TTLS = ("5m", "1h")
THINKING_IN_TOOL_TURN = (
    "Expected `thinking` or `redacted_thinking`, but found `{found}`. When `thinking` is "
    "enabled, a final `assistant` message must start with a thinking block (preceeding the "
    "lastmost set of `tool_use` and `tool_result` blocks). We recommend you include "
    "thinking blocks from previous turns. To avoid this requirement, disable `thinking`.")

Problem = tuple[int, str, str]


def signature_for(thinking: str) -> str:
    """The fake's signature of a thinking text: it can tell a block replayed unchanged."""
    return "sig_" + hashlib.sha256(thinking.encode()).hexdigest()[:32]


def validate_count(body: Any) -> Problem | None:
    """count_tokens: the prompt fields only (max_tokens and the like are refused)."""
    if not isinstance(body, dict):
        return bad("Input should be a valid dictionary")
    for key in body:
        if key not in COUNT_FIELDS:
            return bad(f"{key}: Extra inputs are not permitted")
    return validate({**body, "max_tokens": 1 << 20}, counting=True)


def bad(message: str) -> Problem:
    return 400, "invalid_request_error", message


def validate(body: Any, counting: bool = False) -> Problem | None:
    if not isinstance(body, dict):
        return bad("Input should be a valid dictionary")
    for key in body:
        if key not in TOP_LEVEL and not (counting and key in COUNT_FIELDS):
            return bad(f"{key}: Extra inputs are not permitted")
    if not isinstance(body.get("model"), str):
        return bad("model: Field required")
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        return bad("max_tokens: Field required")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 0:
        return bad("max_tokens: Input should be a valid integer")
    for name, high in (("temperature", 1), ("top_p", 1)):
        value = body.get(name)
        if value is not None:
            if not isinstance(value, (int, float)) or value < 0:
                return bad(f"{name}: Input should be greater than or equal to 0")
            if value > high:
                return bad(f"{name}: Input should be less than or equal to {high}")
    if ("temperature" in body and "top_p" in body
            and body["model"].startswith(NO_TEMP_AND_TOP_P)):
        return bad("`temperature` and `top_p` cannot both be specified for this model. "
                   "Please use only one.")
    return (_system(body.get("system")) or _stop(body.get("stop_sequences"))
            or _metadata(body.get("metadata")) or _tools(body.get("tools"), body.get("tool_choice"))
            or _thinking(body.get("thinking"), max_tokens) or _output(body.get("output_config"))
            or _messages(body.get("messages")) or _cache_control(body)
            or _thinking_turn(body))


def _cache_control(body: dict) -> Problem | None:
    """At most 4 breakpoints, each `{"type": "ephemeral", "ttl"?: "5m" | "1h"}`."""
    marks = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "cache_control" in node and node["cache_control"] is not None:
                marks.append(node["cache_control"])
            for key, value in node.items():
                if key not in ("cache_control", "input_schema", "input"):
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({k: v for k, v in body.items() if k in ("system", "messages", "tools")})
    for mark in marks:
        if not isinstance(mark, dict) or mark.get("type") != "ephemeral" or \
                mark.get("ttl", "5m") not in CACHE_TTLS:
            return bad("cache_control: Input tag does not match the expected tag 'ephemeral'")
    if len(marks) > 4:
        return bad(f"A maximum of 4 blocks with cache_control may be provided. Found "
                   f"{len(marks)}.")
    return None


def _thinking_turn(body: dict) -> Problem | None:
    """With thinking on, an assistant turn whose tool calls are being answered must
    start with its thinking (replayed unchanged: the signature must match)."""
    thinking = body.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "adaptive"):
        return None
    messages = body["messages"]
    last = len(messages) - 1
    if last < 1 or messages[last].get("role") != "user":
        return None
    content = messages[last].get("content")
    if not (isinstance(content, list) and content
            and content[0].get("type") == "tool_result"):
        return None
    turn = messages[last - 1].get("content")
    first = turn[0] if isinstance(turn, list) and turn else {"type": "text"}
    if first.get("type") not in ("thinking", "redacted_thinking"):
        return bad(f"messages.{last - 1}.content.0.type: "
                   + THINKING_IN_TOOL_TURN.format(found=first.get("type")))
    return None


def _system(system: Any) -> Problem | None:
    if system is None or isinstance(system, str):
        return None
    if not isinstance(system, list):
        return bad("system: Input should be a valid string")
    for j, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text":
            return bad(f"system.{j}.type: Input should be 'text'")
        if not isinstance(block.get("text"), str) or not block["text"]:
            return bad("system: text content blocks must be non-empty")
    return None


def _stop(stop: Any) -> Problem | None:
    if stop is None:
        return None
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        return bad("stop_sequences: Input should be a valid list")
    return None


def _metadata(metadata: Any) -> Problem | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        return bad("metadata: Input should be a valid dictionary")
    for key in metadata:
        if key != "user_id":
            return bad(f"metadata.{key}: Extra inputs are not permitted")
    return None


def _tools(tools: Any, choice: Any) -> Problem | None:
    names = set()
    if tools is not None and not isinstance(tools, list):
        return bad("tools: Input should be a valid list")
    for k, tool in enumerate(tools or []):
        if not isinstance(tool, dict) or not TOOL_NAME.match(str(tool.get("name", ""))):
            return bad(f"tools.{k}.custom.name: String should match pattern "
                       "'^[a-zA-Z0-9_-]{1,128}$'")
        schema = tool.get("input_schema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            return bad(f"tools.{k}.custom.input_schema.type: Input should be 'object'")
        if any(key in schema for key in ("oneOf", "allOf", "anyOf")):
            return bad(f"tools.{k}.custom.input_schema: input_schema does not support oneOf, "
                       "allOf, or anyOf at the top level")
        for key in tool:
            if key not in ("name", "description", "input_schema", "strict", "cache_control",
                           "type"):
                return bad(f"tools.{k}.custom.{key}: Extra inputs are not permitted")
        names.add(tool["name"])
    if choice is None:
        return None
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind not in ("auto", "any", "tool", "none"):
        return bad("tool_choice: Input tag does not match any of the expected tags: "
                   "'auto', 'any', 'tool', 'none'")
    if kind == "tool" and not isinstance(choice.get("name"), str):
        return bad("tool_choice.tool.name: Input should be a valid string")
    if kind == "tool" and choice["name"] not in names:
        return bad(f"Tool '{choice.get('name')}' not found in provided tools")
    if kind == "none" and "disable_parallel_tool_use" in choice:
        return bad("tool_choice.none.disable_parallel_tool_use: Extra inputs are not permitted")
    return None


def _thinking(thinking: Any, max_tokens: int) -> Problem | None:
    if thinking is None:
        return None
    if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "disabled",
                                                                       "adaptive"):
        return bad("thinking: Input tag does not match any of the expected tags")
    if thinking["type"] == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or budget < 1024:
            return bad("thinking.enabled.budget_tokens: Input should be greater than or "
                       "equal to 1024")
        if budget >= max_tokens:
            return bad("`max_tokens` must be greater than `thinking.budget_tokens`.")
    return None


def _output(config: Any) -> Problem | None:
    if config is None:
        return None
    if not isinstance(config, dict):
        return bad("output_config: Input should be a valid dictionary")
    fmt = config.get("format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "json_schema"
                            or not isinstance(fmt.get("schema"), dict)):
        return bad("output_config.format: expected {'type': 'json_schema', 'schema': {...}}")
    return None


def _messages(messages: Any) -> Problem | None:
    if not isinstance(messages, list):
        return bad("messages: Field required")
    if not messages:
        return bad("messages: at least one message is required")
    pending: list[str] = []  # tool_use ids the next message must answer
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            return bad(f"messages.{i}: Input should be a valid dictionary")
        role = message.get("role")
        if role not in ("user", "assistant"):
            return bad(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        content = message.get("content")
        last = i == len(messages) - 1
        if isinstance(content, str):
            if not content and not (last and role == "assistant"):
                return bad(f"messages.{i}: all messages must have non-empty content except "
                           "for the optional final assistant message")
            blocks: list[Any] = [{"type": "text", "text": content}] if content else []
        elif isinstance(content, list):
            blocks = content
            if not blocks and not (last and role == "assistant"):
                return bad(f"messages.{i}: all messages must have non-empty content except "
                           "for the optional final assistant message")
        else:
            return bad(f"messages.{i}.content: Input should be a valid list")
        answered: list[str] = []
        uses: list[str] = []
        for j, block in enumerate(blocks):
            problem = _block(block, f"messages.{i}.content.{j}", role)
            if problem:
                return problem
            if block["type"] == "tool_result":
                if j != len(answered):
                    return bad(f"messages.{i}: tool_result blocks must come first in the "
                               "content array, before any other content.")
                if block["tool_use_id"] not in pending:
                    return bad(f"messages.{i}.content.{j}: unexpected `tool_use_id` found in "
                               f"`tool_result` blocks: {block['tool_use_id']}. Each "
                               "`tool_result` block must have a corresponding `tool_use` "
                               "block in the previous message.")
                answered.append(block["tool_use_id"])
            elif block["type"] == "tool_use":
                uses.append(block["id"])
        missing = [tool_id for tool_id in pending if tool_id not in answered]
        if missing:
            return bad(f"messages.{i}: `tool_use` ids were found without `tool_result` blocks "
                       f"immediately after: {', '.join(missing)}. Each `tool_use` block must "
                       "have a corresponding `tool_result` block in the next message.")
        pending = uses
    return None


def _block(block: Any, where: str, role: str) -> Problem | None:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        return bad(f"{where}: Input should be a valid dictionary")
    kind = block["type"]
    if kind == "text":
        if not isinstance(block.get("text"), str):
            return bad(f"{where}.text.text: Field required")
        if not block["text"]:
            return bad("messages: text content blocks must be non-empty")
    elif kind == "image":
        source = block.get("source")
        if not isinstance(source, dict):
            return bad(f"{where}.image.source: Field required")
        if source.get("type") == "base64":
            if not isinstance(source.get("media_type"), str) \
                    or source["media_type"] not in IMAGE_TYPES:
                return bad(f"{where}.image.source.base64.media_type: Input should be "
                           "'image/jpeg', 'image/png', 'image/gif' or 'image/webp'")
            if not isinstance(source.get("data"), str) or not source["data"]:
                return bad(f"{where}.image.source.base64.data: Field required")
        elif source.get("type") == "url":
            if not isinstance(source.get("url"), str):
                return bad(f"{where}.image.source.url.url: Field required")
        else:
            return bad(f"{where}.image.source: Input tag does not match any of the expected "
                       "tags: 'base64', 'url'")
    elif kind == "tool_use":
        if role != "assistant":
            return bad(f"{where}: tool_use blocks are only allowed in assistant messages")
        if not TOOL_ID.match(str(block.get("id", ""))):
            return bad(f"{where}.tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'")
        if not isinstance(block.get("input"), dict) or not isinstance(block.get("name"), str):
            return bad(f"{where}.tool_use.input: Input should be a valid dictionary")
    elif kind == "tool_result":
        if role != "user":
            return bad(f"{where}: tool_result blocks are only allowed in user messages")
        if not TOOL_ID.match(str(block.get("tool_use_id", ""))):
            return bad(f"{where}.tool_result.tool_use_id: String should match pattern "
                       "'^[a-zA-Z0-9_-]+$'")
        content = block.get("content")
        if isinstance(content, list):
            for k, inner in enumerate(content):
                problem = _block(inner, f"{where}.content.{k}", role)
                if problem:
                    return problem
    elif kind == "thinking":
        if role != "assistant":
            return bad(f"{where}: thinking blocks are only allowed in assistant messages")
        if not isinstance(block.get("thinking"), str):
            return bad(f"{where}.thinking.thinking: Field required")
        if not isinstance(block.get("signature"), str) or not block["signature"]:
            return bad(f"{where}.thinking.signature: Field required")
        if block["signature"] != signature_for(block["thinking"]):
            return bad(f"{where}: Invalid `signature` in `thinking` block")
    elif kind == "redacted_thinking":
        if not isinstance(block.get("data"), str) or not block["data"]:
            return bad(f"{where}.redacted_thinking.data: Field required")
    elif kind == "document":
        source = block.get("source")
        kinds = {"base64": "application/pdf", "text": "text/plain"}
        if not isinstance(source, dict) or source.get("type") not in ("base64", "text", "url",
                                                                      "content", "file"):
            return bad(f"{where}.document.source: Input tag does not match any of the "
                       "expected tags: 'base64', 'text', 'content', 'url', 'file'")
        if source["type"] in kinds and (source.get("media_type") != kinds[source["type"]]
                                        or not isinstance(source.get("data"), str)):
            return bad(f"{where}.document.source.{source['type']}.media_type: Input should "
                       f"be '{kinds[source['type']]}'")
    elif kind not in ("search_result", "server_tool_use", "web_search_tool_result"):
        return bad(f"{where}: Input tag '{kind}' found using 'type' does not match any of the "
                   "expected tags")
    return None
