"""Adapters that let legacy OpenAI clients use any chat translator.

The dispatcher wraps each attempt's translator with `Exchange.adapter`, so
routing, fallback, breakers, limits, the ledger and metrics work unchanged.
`LegacyCompletions`: `/v1/completions` over chat (`chat.completion` →
`text_completion`, chunks → legacy chunks), or natively on OpenAI's real
completions models. `LegacyFunctions`: `functions` go up as `tools`, the
answer comes back as `function_call`. See docs/legacy-and-embeddings.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from proxy.core.errors import GatewayError, UpstreamError, bad_request, upstream_protocol
from proxy.core.framing import Event
from proxy.core.usage import Usage
from translators.base import StreamState, Translator, UpstreamRequest
from translators.common import upstream_json

#: models OpenAI serves on /v1/completions itself (everything else is chat-only there)
NATIVE_COMPLETIONS = re.compile(r"^(gpt-3\.5-turbo-instruct|davinci-002|babbage-002)")
_LEGACY_FINISH = frozenset({"stop", "length", "content_filter"})


class Adapter(Translator):
    """Delegates everything to the wrapped translator; subclasses map the answers."""

    def __init__(self, inner: Translator) -> None:  # no super().__init__: state is inner's
        self.inner = inner
        self.provider = inner.provider
        self.include_usage = False

    @property  # type: ignore[override]
    def framing(self) -> str:
        return self.inner.framing

    @property  # type: ignore[override]
    def state(self) -> StreamState:
        return self.inner.state

    @property  # type: ignore[override]
    def drop_unsupported(self) -> bool:
        return self.inner.drop_unsupported

    @drop_unsupported.setter
    def drop_unsupported(self, value: bool) -> None:  # set by the dispatcher on the wrapper
        self.inner.drop_unsupported = value

    def request(self, chat: dict[str, Any], target, *, stream: bool) -> UpstreamRequest:
        return self.inner.request(chat, target, stream=stream)

    def response(self, status: int, headers: Mapping[str, str],
                 body: bytes) -> tuple[bytes | dict[str, Any], Usage | None]:
        return self.inner.response(status, headers, body)

    def stream(self, event: Event) -> tuple[list[bytes], Usage | None]:
        return self.inner.stream(event)

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        return self.inner.error(status, headers, body)

    def classify(self, status: int, parsed: Any,
                 headers: Mapping[str, str] | None) -> UpstreamError:
        return self.inner.classify(status, parsed, headers)

    def auth_headers(self) -> dict[str, str]:
        return self.inner.auth_headers()

    def end_of_stream(self) -> list[bytes]:
        return self.inner.end_of_stream()

    def partial_usage(self) -> Usage | None:
        return self.inner.partial_usage()


def _as_dict(out: bytes | dict[str, Any]) -> dict[str, Any]:
    return orjson.loads(out) if isinstance(out, bytes) else out


# --- legacy text completions -----------------------------------------------------------

class LegacyCompletions(Adapter):
    """One attempt of a legacy completion: native on OpenAI completion models, else chat."""

    def __init__(self, inner: Translator, legacy: LegacyRequest) -> None:
        super().__init__(inner)
        self.legacy = legacy
        self.native = False
        self._own = StreamState()
        self._echoed: set[int] = set()

    @property  # type: ignore[override]
    def state(self) -> StreamState:
        return self._own if self.native else self.inner.state

    def request(self, chat: dict[str, Any], target, *, stream: bool) -> UpstreamRequest:
        if self.provider.type == "openai" and NATIVE_COMPLETIONS.match(target.model):
            self.native = True
            return self._native_request(chat, target, stream)
        if self.legacy.problem is not None:
            raise self.legacy.problem
        return self.inner.request(self.legacy.chat, target, stream=stream)

    # -- native pass-through (OpenAI's own /v1/completions) --

    def _native_request(self, body: dict[str, Any], target, stream: bool) -> UpstreamRequest:
        body = dict(body)
        body["model"] = target.model
        body.pop("fallbacks", None)
        if stream:
            options = dict(body.get("stream_options") or {})
            self.include_usage = bool(options.get("include_usage"))
            options["include_usage"] = True  # always learn what the stream cost
            body["stream_options"] = options
        headers = self.inner.json_headers()
        return UpstreamRequest("POST", self.provider.base_url + "/completions", headers,
                               orjson.dumps(body), stream)

    def _native_stream(self, event: Event) -> tuple[list[bytes], Usage | None]:
        data = event.data
        state = self._own
        if data == b"[DONE]":
            state.complete = True
            return [], None
        chunk = upstream_json(self.provider.name, data, "a stream event")
        if chunk.get("error") or event.name == "error":
            raise self.inner.classify(200, chunk, None)
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
        if not self.include_usage and b'"usage":null' in data:
            data = data.replace(b',"usage":null', b"")
        return [data], usage

    # -- chat → legacy --

    def response(self, status: int, headers: Mapping[str, str],
                 body: bytes) -> tuple[bytes | dict[str, Any], Usage | None]:
        if self.native:
            return _native_body(self.provider.name, body)
        out, usage = self.inner.response(status, headers, body)
        chat = _as_dict(out)
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
        if self.native:
            return self._native_stream(event)
        chunks, usage = self.inner.stream(event)
        return self._convert(chunks), usage

    def end_of_stream(self) -> list[bytes]:
        if self.native:
            if self._own.finish_reason:
                self._own.complete = True
            return []
        return self._convert(self.inner.end_of_stream())

    def partial_usage(self) -> Usage | None:
        return None if self.native else self.inner.partial_usage()

    def _echo(self, index: int) -> str:
        if not self.legacy.echo or index in self._echoed:
            return ""
        self._echoed.add(index)
        return self.legacy.prompt

    def _convert(self, chunks: list[bytes]) -> list[bytes]:
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

    def adapter(self, inner: Translator) -> Translator:
        return LegacyCompletions(inner, self)


# --- legacy function calling -------------------------------------------------------------

class LegacyFunctions(Adapter):
    """`functions` went up as `tools`: bring the answer back as `function_call`."""

    def __init__(self, inner: Translator, chat: dict[str, Any]) -> None:
        super().__init__(inner)
        self.chat = chat

    def request(self, chat: dict[str, Any], target, *, stream: bool) -> UpstreamRequest:
        return self.inner.request(self.chat, target, stream=stream)

    def response(self, status: int, headers: Mapping[str, str],
                 body: bytes) -> tuple[bytes | dict[str, Any], Usage | None]:
        out, usage = self.inner.response(status, headers, body)
        completion = _as_dict(out)
        for choice in completion.get("choices") or ():
            message = choice.get("message") or {}
            calls = message.pop("tool_calls", None)
            if calls:
                function = calls[0].get("function") or {}
                message["function_call"] = {"name": function.get("name"),
                                            "arguments": function.get("arguments") or ""}
            if choice.get("finish_reason") == "tool_calls":
                choice["finish_reason"] = "function_call"
        return completion, usage

    def stream(self, event: Event) -> tuple[list[bytes], Usage | None]:
        chunks, usage = self.inner.stream(event)
        return self._convert(chunks), usage

    def end_of_stream(self) -> list[bytes]:
        return self._convert(self.inner.end_of_stream())

    @staticmethod
    def _convert(chunks: list[bytes]) -> list[bytes]:
        out = []
        for raw in chunks:
            if b'"tool_calls"' not in raw:  # nothing to map: the upstream's bytes
                out.append(raw)
                continue
            chunk = orjson.loads(raw)
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta") or {}
                calls = delta.pop("tool_calls", None)
                for call in calls or ():
                    if (call.get("index") or 0) != 0:
                        continue  # the legacy shape holds one call: the first
                    function = call.get("function") or {}
                    mapped = {"arguments": function.get("arguments") or ""}
                    if function.get("name"):
                        mapped = {"name": function["name"], **mapped}
                    delta["function_call"] = mapped
                if choice.get("finish_reason") == "tool_calls":
                    choice["finish_reason"] = "function_call"
            out.append(orjson.dumps(chunk))
        return out


def functions_adapter(body: dict[str, Any]) -> Callable[[Translator], Translator] | None:
    """None for a chat request without legacy function calling (the usual case, cheap);
    else the adapter, with the request converted once to tools (400 for what cannot map)."""
    messages = body.get("messages")
    if ("functions" not in body and "function_call" not in body
            and not any(isinstance(m, dict) and (m.get("role") == "function"
                                                 or "function_call" in m)
                        for m in messages or ())):
        return None
    chat = functions_to_tools(body)
    return lambda inner: LegacyFunctions(inner, chat)


def functions_to_tools(body: dict[str, Any]) -> dict[str, Any]:
    chat = {k: v for k, v in body.items()
            if k not in ("functions", "function_call", "fallbacks")}
    extra = chat.get("extra_body")
    if isinstance(extra, dict) and "fallbacks" in extra:
        chat["extra_body"] = {k: v for k, v in extra.items() if k != "fallbacks"}
    functions = body.get("functions")
    if functions is not None:
        if body.get("tools"):
            raise bad_request("Send either 'functions' or 'tools', not both.",
                              param="functions", code="invalid_value")
        if not isinstance(functions, list) or not all(
                isinstance(f, dict) and isinstance(f.get("name"), str) for f in functions):
            raise bad_request("Invalid 'functions': expected an array of objects with a "
                              "'name'.", param="functions", code="invalid_type")
        chat["tools"] = [{"type": "function", "function": f} for f in functions]
    choice = body.get("function_call")
    if choice is not None:
        if choice in ("none", "auto"):
            chat["tool_choice"] = choice
        elif isinstance(choice, dict) and isinstance(choice.get("name"), str):
            chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
        else:
            raise bad_request("Invalid 'function_call': expected 'none', 'auto' or "
                              "{\"name\": ...}.", param="function_call", code="invalid_value")
    chat["messages"] = _messages(body.get("messages") or [])
    return chat


def _messages(messages: list[Any]) -> list[Any]:
    """Assistant `function_call` → `tool_calls` with a made-up id; a `function` message →
    a `tool` message answering the latest call (the legacy shape has one at a time)."""
    out: list[Any] = []
    pending: str | None = None
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            out.append(message)
            continue
        call = message.get("function_call")
        if message.get("role") == "assistant" and call is not None:
            if not isinstance(call, dict) or not isinstance(call.get("name"), str):
                raise bad_request(f"Invalid 'messages[{i}].function_call': expected an object "
                                  "with 'name' and 'arguments'.",
                                  param=f"messages[{i}].function_call", code="invalid_type")
            pending = f"call_{i:024x}"
            mapped = {k: v for k, v in message.items() if k != "function_call"}
            mapped["tool_calls"] = [{"id": pending, "type": "function", "function": {
                "name": call["name"], "arguments": call.get("arguments") or "{}"}}]
            out.append(mapped)
        elif message.get("role") == "function":
            if pending is None:
                raise bad_request(f"Invalid 'messages[{i}]': a 'function' message must follow "
                                  "an assistant message with a 'function_call'.",
                                  param=f"messages[{i}]", code="invalid_value")
            content = message.get("content")
            out.append({"role": "tool", "tool_call_id": pending,
                        "content": content if content is not None else ""})
            pending = None
        else:
            out.append(message)
    return out
