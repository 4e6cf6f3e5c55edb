"""Anthropic message turns → OpenAI chat messages (for non-Anthropic upstreams).

A mid-conversation `system` turn stays a system message in its place.

User turns: text, images and PDF documents become content parts; each
`tool_result` becomes a `tool` message before the turn's other content (an
error result travels as `{"error": ...}`, the convention Gemini also uses),
and images inside a result, which no chat API takes in a tool message, follow
in a user message that names the call. Assistant turns: text and `tool_use`
blocks become `content` and `tool_calls`; thinking blocks are left out (no
chat upstream takes them back). Whatever has no chat form (server-tool blocks,
Files API sources, search results) is a `Problems.strict` entry: fine for an
Anthropic upstream, a 400 for any other.
"""

from __future__ import annotations

from typing import Any

import orjson

from proxy.core.errors import GatewayError, bad_request

THINKING = frozenset({"thinking", "redacted_thinking"})


class Problems:
    """What the chat body could not carry: `strict` stops any non-Anthropic
    upstream; `optional` was left out, a 400 unless the model drops it."""

    __slots__ = ("optional", "strict")

    def __init__(self) -> None:
        self.strict: GatewayError | None = None
        self.optional: GatewayError | None = None

    def cannot(self, where: str, why: str) -> None:
        if self.strict is None:
            self.strict = _refusal(where, why)

    def left_out(self, where: str, why: str) -> None:
        if self.optional is None:
            self.optional = _refusal(where, why, droppable=True)


def _refusal(where: str, why: str, droppable: bool = False) -> GatewayError:
    tail = (" The model's config can set drop_unsupported: true to leave it out."
            if droppable else "")
    return bad_request(f"{where}: {why} This model's upstream is not Anthropic, so the "
                       f"request cannot be translated.{tail}", param=where,
                       code="unsupported_parameter")


def map_messages(messages: list[Any], problems: Problems) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict):
            problems.cannot(where, "expected an object.")
            continue
        role = message.get("role")
        content = message.get("content")
        if role == "user" and isinstance(content, str) and content:
            out.append({"role": "user", "content": content})
            continue
        blocks = _blocks(content, f"{where}.content", problems)
        if role == "user":
            out += _user_turn(blocks, where, problems)
        elif role == "assistant":
            turn = _assistant_turn(blocks, where, problems)
            if turn is not None:
                out.append(turn)
        elif role == "system":  # a mid-conversation system turn (a beta): kept in place
            texts = [b.get("text") for b in blocks if b["type"] == "text"]
            if len(texts) != len(blocks) or not all(isinstance(t, str) for t in texts):
                problems.cannot(f"{where}.content", "a system turn holds text only.")
            elif texts:
                out.append({"role": "system", "content": "\n\n".join(texts)})
        else:
            problems.cannot(f"{where}.role", "expected 'user', 'assistant' or 'system'.")
    return out


def _blocks(content: Any, where: str, problems: Problems) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        problems.cannot(where, "expected a string or an array of content blocks.")
        return []
    good = []
    for j, block in enumerate(content):
        if isinstance(block, dict) and isinstance(block.get("type"), str):
            good.append(block)
        else:
            problems.cannot(f"{where}.{j}", "expected a content block with a 'type'.")
    return good


def _user_turn(blocks: list[dict[str, Any]], where: str,
               problems: Problems) -> list[dict[str, Any]]:
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    shown: list[dict[str, Any]] = []  # images returned by tools, with who returned them
    for j, block in enumerate(blocks):
        at = f"{where}.content.{j}"
        kind = block["type"]
        if kind == "tool_result":
            tools.append(_tool_result(block, at, shown, problems))
            continue
        part = content_part(block, at, problems)
        if part is not None:
            parts += part
    out = tools
    if shown or parts:
        out.append({"role": "user", "content": shown + parts})
    return out


def content_part(block: dict[str, Any], at: str,
                 problems: Problems) -> list[dict[str, Any]] | None:
    """A user content block as chat content parts (None when it has no chat form)."""
    kind = block["type"]
    if kind == "text":
        text = block.get("text")
        if not isinstance(text, str):
            problems.cannot(f"{at}.text", "expected a string.")
            return None
        return [{"type": "text", "text": text}] if text else []
    if kind == "image":
        url = _image_url(block.get("source"), at, problems)
        return [{"type": "image_url", "image_url": {"url": url}}] if url else None
    if kind == "document":
        return _document(block, at, problems)
    if kind in THINKING:
        problems.cannot(f"{at}.type", f"'{kind}' blocks belong in assistant turns.")
        return None
    problems.cannot(f"{at}.type", f"'{kind}' blocks have no equivalent in a chat request.")
    return None


def _image_url(source: Any, at: str, problems: Problems) -> str | None:
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "base64":
        media, data = source.get("media_type"), source.get("data")
        if isinstance(media, str) and isinstance(data, str) and media and data:
            return f"data:{media};base64,{data}"
        problems.cannot(f"{at}.source", "expected 'media_type' and base64 'data'.")
    elif kind == "url":
        url = source.get("url")
        if isinstance(url, str) and url.startswith(("https://", "http://")):
            return url
        problems.cannot(f"{at}.source.url", "expected an http(s) URL.")
    elif kind == "file":
        problems.cannot(f"{at}.source", "Files API sources can only be read by Anthropic.")
    else:
        problems.cannot(f"{at}.source", "expected a 'base64' or 'url' source.")
    return None


def _document(block: dict[str, Any], at: str,
              problems: Problems) -> list[dict[str, Any]] | None:
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    title = block.get("title") if isinstance(block.get("title"), str) else None
    if kind == "base64" and source.get("media_type") == "application/pdf" \
            and isinstance(source.get("data"), str) and source["data"]:
        return [{"type": "file", "file": {
            "filename": (title or "document") + ("" if (title or "").endswith(".pdf")
                                                 else ".pdf"),
            "file_data": "data:application/pdf;base64," + source["data"]}}]
    if kind == "text" and isinstance(source.get("data"), str):
        text = f"{title}\n\n{source['data']}" if title else source["data"]
        return [{"type": "text", "text": text}] if text else []
    if kind == "content" and isinstance(source.get("content"), (str, list)):
        parts: list[dict[str, Any]] = []
        for k, inner in enumerate(_blocks(source["content"], f"{at}.source.content", problems)):
            if inner["type"] not in ("text", "image"):
                problems.cannot(f"{at}.source.content.{k}", "expected text or image blocks.")
                continue
            parts += content_part(inner, f"{at}.source.content.{k}", problems) or []
        return parts
    problems.cannot(f"{at}.source", "only base64 PDF, text and content document sources "
                                    "can be translated (URL and Files API sources cannot).")
    return None


def _tool_result(block: dict[str, Any], at: str, shown: list[dict[str, Any]],
                 problems: Problems) -> dict[str, Any]:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        problems.cannot(f"{at}.tool_use_id", "expected a non-empty string.")
        call_id = str(call_id)
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    for k, inner in enumerate(_blocks(block.get("content") or "", f"{at}.content", problems)):
        kind = inner["type"]
        if kind not in ("text", "image"):
            problems.cannot(f"{at}.content.{k}.type", f"'{kind}' blocks inside a tool result "
                                                      "have no chat form.")
            continue
        part = content_part(inner, f"{at}.content.{k}", problems) or []
        if kind == "text":
            texts += [p["text"] for p in part]
        else:
            images += part
    text = "\n".join(texts)
    if images:
        shown.append({"type": "text", "text": f"The result of tool call {call_id} includes "
                                              f"{len(images)} image(s):"})
        shown += images
        text = text or f"(the result is {len(images)} image(s), sent in the next message)"
    if block.get("is_error") is True:
        text = orjson.dumps({"error": text}).decode()
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def _assistant_turn(blocks: list[dict[str, Any]], where: str,
                    problems: Problems) -> dict[str, Any] | None:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        at = f"{where}.content.{j}"
        kind = block["type"]
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "tool_use":
            call = _tool_call(block, at, problems)
            if call is not None:
                calls.append(call)
        elif kind not in THINKING:  # thinking is for Anthropic alone: left out
            problems.cannot(f"{at}.type", f"'{kind}' blocks have no equivalent in a chat "
                                          "request.")
    if not texts and not calls:
        return None
    turn: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        turn["tool_calls"] = calls
    return turn


def _tool_call(block: dict[str, Any], at: str, problems: Problems) -> dict[str, Any] | None:
    call_id, name, args = block.get("id"), block.get("name"), block.get("input")
    if not isinstance(call_id, str) or not call_id or not isinstance(name, str) or not name:
        problems.cannot(at, "a tool_use block needs a string 'id' and 'name'.")
        return None
    if not isinstance(args, dict):
        problems.cannot(f"{at}.input", "expected an object.")
        return None
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": orjson.dumps(args).decode()}}
