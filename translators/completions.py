"""Legacy `/v1/completions` on any upstream.

On OpenAI's own completion models the request goes to `{base_url}/completions`
as sent and the answer passes through byte for byte. Everywhere else the
prompt is one user message (translators over chat, see over_chat.py) and the
chat answer comes back as a `text_completion`: the usage, `echo`, and legacy
chunks. See docs/legacy-and-embeddings.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from proxy.core.errors import GatewayError, upstream_protocol
from proxy.core.framing import Event
from proxy.core.usage import Usage
from translators.base import Translator, UpstreamRequest
from translators.common import upstream_json
from translators.openai import request_usage, without_null_usage
from translators.over_chat import OverChat

#: models OpenAI serves on /v1/completions itself (everything else is chat-only there)
NATIVE_COMPLETIONS = re.compile(r"^(gpt-3\.5-turbo-instruct|davinci-002|babbage-002)")
_LEGACY_FINISH = frozenset({"stop", "length", "content_filter"})


class CompletionsTranslator(OverChat):
    """One attempt of a legacy completion: native on an OpenAI provider's completion
    models, else through the attempt's chat translator."""

    def __init__(self, chat: Translator, legacy: LegacyRequest) -> None:
        super().__init__(chat)
        self.legacy = legacy
        self.native = False
        self._echoed: set[int] = set()

    def request(self, chat: dict[str, Any], target, *, stream: bool) -> UpstreamRequest:
        if self.provider.type == "openai" and NATIVE_COMPLETIONS.match(target.model):
            self.native = True
            return self._native_request(chat, target, stream)
        if self.legacy.problem is not None:
            raise self.legacy.problem
        return self.chat_request(self.legacy.chat, target, stream)

    def response(self, status: int, headers: Mapping[str, str],
                 body: bytes) -> tuple[bytes | dict[str, Any], Usage | None]:
        if self.native:
            return _native_body(self.provider.name, body)
        chat, usage = self.chat_response(status, headers, body)
        choices = []
        for choice in chat.get("choices") or ():
            message = choice.get("message") or {}
            index = choice.get("index") or 0
            choices.append({"text": self._echo(index) + (message.get("content") or ""),
                            "index": index, "logprobs": None,
                            "finish_reason": _finish(choice.get("finish_reason"))})
        completion = _head(chat)
        completion["choices"] = choices
        if usage is not None:
            completion["usage"] = legacy_usage(usage)
        return completion, usage

    def stream(self, event: Event) -> tuple[list[bytes], Usage | None]:
        return self._native_stream(event) if self.native else super().stream(event)

    def end_of_stream(self) -> list[bytes]:
        if not self.native:
            return super().end_of_stream()
        if self.state.finish_reason:  # OpenAI's stream ended after its finish reason
            self.state.complete = True
        return []

    def partial_usage(self) -> Usage | None:
        return None if self.native else super().partial_usage()

    # -- native: OpenAI's own /v1/completions --

    def _native_request(self, body: dict[str, Any], target, stream: bool) -> UpstreamRequest:
        body = dict(body)
        body["model"] = target.model
        body.pop("fallbacks", None)
        if stream:
            self.include_usage = request_usage(body)
        return UpstreamRequest("POST", self.provider.base_url + "/completions",
                               self.json_headers(), orjson.dumps(body), stream)

    def _native_stream(self, event: Event) -> tuple[list[bytes], Usage | None]:
        data = event.data
        state = self.state
        if data == b"[DONE]":
            state.complete = True
            return [], None
        chunk = upstream_json(self.provider.name, data, "a stream event")
        if chunk.get("error") or event.name == "error":
            raise self.classify(200, chunk, None)
        usage = Usage.from_openai(chunk.get("usage")) if chunk.get("usage") else None
        choices = chunk.get("choices")
        if not choices:
            return ([data] if usage is not None and self.include_usage else []), usage
        for choice in choices:
            if choice.get("finish_reason"):
                state.finish_reason = choice["finish_reason"]
                state.has_content = True
            elif choice.get("text"):
                state.has_content = True
        return [data if self.include_usage else without_null_usage(data)], usage

    # -- over chat: chat answers → legacy ones --

    def _echo(self, index: int) -> str:
        if not self.legacy.echo or index in self._echoed:
            return ""
        self._echoed.add(index)
        return self.legacy.prompt

    def convert(self, chunks: list[bytes]) -> list[bytes]:
        out = []
        for raw in chunks:
            chunk = orjson.loads(raw)
            choices = chunk.get("choices") or []
            legacy = _head(chunk)
            if not choices:  # the usage chunk (only sent when the client asked for it)
                if chunk.get("usage"):
                    legacy["choices"] = []
                    legacy["usage"] = legacy_usage(Usage.from_openai(chunk["usage"]))
                    out.append(orjson.dumps(legacy))
                continue
            converted = []
            for choice in choices:
                index = choice.get("index") or 0
                text = (choice.get("delta") or {}).get("content") or ""
                finish = choice.get("finish_reason")
                text = self._echo(index) + text
                if text or finish:
                    converted.append({"text": text, "index": index, "logprobs": None,
                                      "finish_reason": _finish(finish) if finish else None})
            if converted:
                legacy["choices"] = converted
                if "usage" in chunk:
                    legacy["usage"] = None
                out.append(orjson.dumps(legacy))
        return out


def _native_body(provider: str, body: bytes) -> tuple[bytes, Usage | None]:
    """A native legacy completion passes through as the upstream's own bytes."""
    parsed = upstream_json(provider, body)
    if not isinstance(parsed.get("choices"), list):
        raise upstream_protocol(provider, "no choices in the completion")
    return body, Usage.from_openai(parsed.get("usage"))


def _head(chat: dict[str, Any]) -> dict[str, Any]:
    """id, object, created, model (and system_fingerprint) of a legacy object."""
    ident = str(chat.get("id") or "")
    ident = "cmpl-" + ident.removeprefix("chatcmpl-").removeprefix("cmpl-")
    head: dict[str, Any] = {"id": ident, "object": "text_completion",
                            "created": chat.get("created"), "model": chat.get("model")}
    if chat.get("system_fingerprint"):
        head["system_fingerprint"] = chat["system_fingerprint"]
    return head


def _finish(reason: Any) -> str:
    return reason if reason in _LEGACY_FINISH else "stop"


def legacy_usage(usage: Usage | None) -> dict[str, int] | None:
    if usage is None:
        return None
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens}


class LegacyRequest:
    """A legacy request converted once: the chat body, and what chat cannot honour."""

    __slots__ = ("chat", "echo", "problem", "prompt")

    def __init__(self, chat: dict[str, Any], prompt: str, echo: bool,
                 problem: GatewayError | None) -> None:
        self.chat = chat
        self.prompt = prompt
        self.echo = echo
        self.problem = problem

    def translator(self, chat: Translator) -> Translator:
        """The Exchange hook: this request's translator for an attempt."""
        return CompletionsTranslator(chat, self)
