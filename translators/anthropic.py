"""Anthropic Messages API (`type: anthropic`) behind OpenAI's chat completions.

`POST {base_url}/v1/messages` with `x-api-key`, `anthropic-version` and an
optional configured `anthropic-beta`. The request mapping lives in
anthropic_request.py, the stream state machine in anthropic_stream.py; this
module ties them to the translator contract and maps responses and errors.
See docs/providers/anthropic.md for the choices made.
"""

from __future__ import annotations

import re

import time
from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

from proxy.core.errors import (
    ErrorClass,
    UpstreamError,
    parse_retry_after,
    upstream_auth,
    upstream_protocol,
)
from proxy.core.framing import Event
from translators.anthropic_request import DEFAULT_MAX_TOKENS, build_body
from translators.anthropic_stream import (
    STOP_REASONS,
    AnthropicStream,
    anthropic_usage,
    chunk_id,
)
from translators.anthropic_thinking import carry, kept
from translators.common import error_object, upstream_json, wants_usage
from proxy.core.usage import Usage
from translators.base import Option, Translator, UpstreamRequest

#: Anthropic error type → (class, status to the client, OpenAI type, code)
_ERRORS: dict[str, tuple[ErrorClass, int, str, str | None]] = {
    "invalid_request_error": (ErrorClass.BAD_REQUEST, 400, "invalid_request_error", None),
    "not_found_error": (ErrorClass.NOT_FOUND, 404, "invalid_request_error", None),
    "request_too_large": (ErrorClass.BAD_REQUEST, 413, "invalid_request_error",
                          "request_too_large"),
    "rate_limit_error": (ErrorClass.RATE_LIMITED, 429, "rate_limit_exceeded",
                         "upstream_rate_limit"),
    "overloaded_error": (ErrorClass.OVERLOADED, 503, "server_error", "upstream_overloaded"),
    "api_error": (ErrorClass.SERVER, 502, "server_error", "upstream_error"),
    "timeout_error": (ErrorClass.TIMEOUT, 504, "server_error", "upstream_timeout"),
    # the account's credit is spent: no retry helps for a long while (fails over)
    "billing_error": (ErrorClass.QUOTA, 429, "insufficient_quota", "upstream_billing_error"),
}
#: Anthropic's other way of saying so: a 400 invalid_request_error
_NO_CREDIT = re.compile(r"credit balance is too low", re.IGNORECASE)
_BY_STATUS = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
              403: "permission_error", 404: "not_found_error", 413: "request_too_large",
              429: "rate_limit_error", 500: "api_error", 504: "timeout_error",
              529: "overloaded_error", 503: "overloaded_error"}


class AnthropicTranslator(Translator):
    default_base_url = "https://api.anthropic.com"
    provider_options: ClassVar[Mapping[str, Option]] = {
        "anthropic_version": Option(str, "2023-06-01", help="the anthropic-version header"),
        "anthropic_beta": Option(str, None, help="the anthropic-beta header, if any"),
        "allowed_betas": Option(list, (), pattern=r"[a-z0-9][a-z0-9._-]{0,127}|\*",
                                help="anthropic-beta values Messages API clients may send "
                                     "upstream; '*' allows any"),
    }

    def __init__(self, provider) -> None:
        super().__init__(provider)
        self._json_tool = False
        self._machine: AnthropicStream | None = None

    # --- request -------------------------------------------------------------------

    def request(self, chat: dict[str, Any], target, *, stream: bool) -> UpstreamRequest:
        body, self._json_tool = build_body(
            chat, target.model, target.info.default_max_tokens or DEFAULT_MAX_TOKENS,
            stream=stream, drop_unsupported=self.drop_unsupported)
        if stream:
            self.include_usage = wants_usage(chat)
        return UpstreamRequest("POST", self.provider.base_url + "/v1/messages",
                               self.json_headers(), orjson.dumps(body), stream)

    def auth_headers(self) -> dict[str, str]:
        """The key in `x-api-key`, with the API version (and beta) every call names."""
        options = self.provider.options
        headers = {**self.provider.headers,
                   "anthropic-version": options.get("anthropic_version") or "2023-06-01"}
        if options.get("anthropic_beta"):
            headers["anthropic-beta"] = options["anthropic_beta"]
        if self.provider.api_key:
            headers["x-api-key"] = self.provider.api_key
        return headers

    # --- response ------------------------------------------------------------------

    def response(self, status: int, headers: Mapping[str, str],
                 body: bytes) -> tuple[bytes | dict[str, Any], Usage | None]:
        message = upstream_json(self.provider.name, body)
        if not isinstance(message.get("content"), list):
            raise upstream_protocol(self.provider.name, "no content in the message")
        return completion(message, self._json_tool)

    # --- stream --------------------------------------------------------------------

    def stream(self, event: Event) -> tuple[list[bytes], Usage | None]:
        machine = self._machine
        if machine is None:
            machine = self._machine = AnthropicStream(self.state, self.include_usage,
                                                      self._json_tool, self._event_error)
        try:
            parsed = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            parsed = None
        if type(parsed) is not dict:  # the protocol error upstream_json says
            parsed = upstream_json(self.provider.name, event.data, "a stream event")
        if event.name == "error" and parsed.get("type") != "error":
            parsed = {"type": "error", "error": parsed.get("error", parsed)}
        try:
            return machine.feed(parsed)
        except ValueError as exc:
            raise upstream_protocol(self.provider.name, str(exc)) from None

    def end_of_stream(self) -> list[bytes]:
        return []  # only message_stop completes an Anthropic stream

    def partial_usage(self) -> Usage | None:
        return self._machine.partial_usage() if self._machine is not None else None

    # --- errors --------------------------------------------------------------------

    def _event_error(self, event: dict[str, Any]) -> UpstreamError:
        return self.classify(200, event, None)

    def classify(self, status: int, parsed: Any,
                 headers: Mapping[str, str] | None) -> UpstreamError:
        name = self.provider.name
        error = error_object(parsed)
        type_ = error.get("type") if isinstance(error.get("type"), str) else None
        type_ = type_ or _BY_STATUS.get(status) or ("api_error" if status >= 500 else
                                                    "invalid_request_error")
        if status in (401, 403) or type_ in ("authentication_error", "permission_error"):
            return upstream_auth(name, status if status >= 400 else 401)
        message = self.error_message(error.get("message"), status)
        if type_ == "invalid_request_error" and _NO_CREDIT.search(message):
            type_ = "billing_error"
        error_class, client_status, openai_type, code = _ERRORS.get(
            type_, (ErrorClass.SERVER, 502, "server_error", "upstream_error")
            if status >= 500 or status < 400 else
            (ErrorClass.BAD_REQUEST, status, "invalid_request_error", None))
        param = None
        if error_class is ErrorClass.BAD_REQUEST and "prompt is too long" in message.lower():
            error_class, code, param = ErrorClass.CONTEXT_WINDOW, "context_length_exceeded", \
                "messages"
        retry_after = parse_retry_after(headers) if headers else None
        return UpstreamError(error_class, client_status, message, openai_type, code=code,
                             param=param, retry_after=retry_after, upstream_status=status)


def completion(message: dict[str, Any], json_tool: bool) -> tuple[dict[str, Any], Usage]:
    """An Anthropic Message → an OpenAI chat.completion and its usage."""
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[dict[str, Any]] = []
    blocks: list[dict[str, Any]] = []  # thinking since the last tool call: rides in its id
    for block in message["content"]:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            if json_tool:
                texts.append(arguments)
                continue
            calls.append({"id": carry(block.get("id"), blocks), "type": "function",
                          "function": {"name": block.get("name"), "arguments": arguments}})
            blocks = []
        elif kind in ("thinking", "redacted_thinking"):
            blocks.append(kept(block))  # type: ignore[arg-type]
            if kind == "thinking":
                thinking.append(block.get("thinking") or "")
    finish = STOP_REASONS.get(message.get("stop_reason") or "end_turn", "stop")
    if json_tool and finish == "tool_calls":
        finish = "stop"
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None,
                             "refusal": None, "annotations": []}
    if calls:
        reply["tool_calls"] = calls
    if thinking:
        reply["reasoning_content"] = "".join(thinking)
    usage = anthropic_usage(message.get("usage") or {})
    return {
        "id": chunk_id(str(message.get("id") or "")), "object": "chat.completion",
        "created": int(time.time()), "model": message.get("model") or "",
        "choices": [{"index": 0, "message": reply, "logprobs": None, "finish_reason": finish}],
        "usage": usage.to_openai(), "system_fingerprint": None,
    }, usage
