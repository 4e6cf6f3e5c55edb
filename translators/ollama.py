"""Ollama's native chat API (`type: ollama`) behind OpenAI's chat completions.

`POST {base_url}/api/chat`, NDJSON when streaming, with `"stream": false`
sent explicitly otherwise (Ollama streams by default). Sampling parameters go
into `options`, images as bare base64, tool results carry `tool_name` (found
from the call id in the earlier assistant turn), `format` carries JSON mode,
`think` reasoning, and `keep_alive` comes from the provider's config.
Ollama may send no call ids, so ids are synthesized; its zero counts are
omitted on the wire (missing = 0). The request mapping is in ollama_request.py.
See docs/providers/ollama.md.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

from proxy.core.chunks import ChunkEncoder
from proxy.core.errors import (
    ErrorClass,
    UpstreamError,
    parse_retry_after,
    upstream_auth,
    upstream_protocol,
)
from proxy.core.framing import Event
from proxy.core.pricing import estimate_body
from proxy.core.usage import Usage, token_count
from translators.base import Option, Translator, UpstreamRequest
from translators.common import error_text, upstream_json, wants_usage
from translators.ollama_request import build_body

FINISH = {"stop": "stop", "length": "length", "load": "stop", "unload": "stop"}

__all__ = ["OllamaTranslator", "build_body"]


def ollama_usage(line: dict[str, Any]) -> Usage:
    return Usage(prompt_tokens=token_count(line.get("prompt_eval_count")),
                 completion_tokens=token_count(line.get("eval_count")))


class OllamaFamily(Translator):
    """What every translator to Ollama shares (chat, embeddings): a bearer key only for
    Ollama Cloud, plain-text or `{"error": "..."}` errors classed by status."""

    framing = "ndjson"
    default_base_url = "http://localhost:11434"
    requires_api_key = False
    provider_options: ClassVar[Mapping[str, Option]] = {
        "keep_alive": Option(object, None, help="how long Ollama keeps the model loaded "
                             "(e.g. '10m', or -1 for ever)"),
    }

    def auth_headers(self) -> dict[str, str]:
        headers = dict(self.provider.headers)
        if self.provider.api_key:  # Ollama Cloud; a local server needs none
            headers["authorization"] = f"Bearer {self.provider.api_key}"
        return headers

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = {"error": body.decode("utf-8", "replace")[:500]}
        return self.classify(status, parsed, headers)

    def classify(self, status: int, parsed: Any,
                 headers: Mapping[str, str] | None) -> UpstreamError:
        name = self.provider.name
        if status in (401, 403):
            return upstream_auth(name, status)
        message = self.error_message(error_text(parsed), status)
        retry_after = parse_retry_after(headers) if headers else None
        code: str | None = None
        param: str | None = None
        if status == 429:
            error_class, client_status, type_, code = (ErrorClass.RATE_LIMITED, 429,
                                                       "rate_limit_exceeded", "upstream_rate_limit")
        elif status == 404:
            error_class, client_status, type_, code = (ErrorClass.NOT_FOUND, 404,
                                                       "invalid_request_error", "model_not_found")
        elif status == 503:
            error_class, client_status, type_, code = (ErrorClass.OVERLOADED, 503,
                                                       "server_error", "upstream_overloaded")
        elif 400 <= status < 500:
            error_class, client_status, type_ = ErrorClass.BAD_REQUEST, 400, "invalid_request_error"
            if "context length" in message.lower():
                error_class, code, param = (ErrorClass.CONTEXT_WINDOW, "context_length_exceeded",
                                            "messages")
        else:  # 5xx, or an error line inside a 200 stream
            error_class, client_status, type_, code = (ErrorClass.SERVER, 502, "server_error",
                                                       "upstream_error")
        return UpstreamError(error_class, client_status, message, type_, code=code, param=param,
                             retry_after=retry_after, upstream_status=status)


class OllamaTranslator(OllamaFamily):

    def __init__(self, provider) -> None:
        super().__init__(provider)
        self._encoder: ChunkEncoder | None = None  # from the first stream line on
        self._call_prefix = "call_" + secrets.token_hex(8)
        self._calls = 0
        self._usage: Usage | None = None
        self._chat: dict[str, Any] | None = None
        self._lines = 0  # content lines streamed: about one token each

    def request(self, chat: dict[str, Any], target, *, stream: bool) -> UpstreamRequest:
        self._chat = chat
        body = build_body(chat, target.model, stream=stream,
                          drop_unsupported=self.drop_unsupported,
                          keep_alive=self.provider.options.get("keep_alive"))
        if stream:
            self.include_usage = wants_usage(chat)
        return UpstreamRequest("POST", self.provider.base_url + "/api/chat",
                               self.json_headers(), orjson.dumps(body), stream)

    def _tool_calls(self, calls: Any) -> list[dict[str, Any]]:
        out = []
        for call in calls if isinstance(calls, list) else ():
            fn = call.get("function") or {} if isinstance(call, dict) else {}
            given = call.get("id") if isinstance(call, dict) else None
            if not isinstance(given, str) or not given:
                given = f"{self._call_prefix}{self._calls:08x}"
            self._calls += 1
            arguments = orjson.dumps(fn.get("arguments") or {}).decode()
            out.append({"id": given, "type": "function",
                        "function": {"name": fn.get("name") or "", "arguments": arguments}})
        return out

    # --- response ------------------------------------------------------------------

    def response(self, status: int, headers: Mapping[str, str],
                 body: bytes) -> tuple[bytes | dict[str, Any], Usage | None]:
        answer = upstream_json(self.provider.name, body)
        if "error" in answer:
            raise self.classify(status, answer, headers)
        message = answer.get("message")
        if not isinstance(message, dict):
            raise upstream_protocol(self.provider.name, "no message in the answer")
        calls = self._tool_calls(message.get("tool_calls"))
        reply: dict[str, Any] = {"role": "assistant",
                                 "content": message.get("content") or (None if calls else ""),
                                 "refusal": None, "annotations": []}
        if calls:
            reply["tool_calls"] = calls
        if message.get("thinking"):
            reply["reasoning_content"] = message["thinking"]
        finish = "tool_calls" if calls else FINISH.get(answer.get("done_reason") or "stop",
                                                       "stop")
        usage = ollama_usage(answer)
        return {"id": "chatcmpl-" + secrets.token_hex(12), "object": "chat.completion",
                "created": int(time.time()), "model": answer.get("model") or "",
                "choices": [{"index": 0, "message": reply, "logprobs": None,
                             "finish_reason": finish}],
                "usage": usage.to_openai(), "system_fingerprint": None}, usage

    # --- stream --------------------------------------------------------------------

    def stream(self, event: Event) -> tuple[list[bytes], Usage | None]:
        line = upstream_json(self.provider.name, event.data, "a stream line")
        if "error" in line:
            raise self.classify(200, line, None)
        state = self.state
        if state.complete:
            return [], None
        out: list[bytes] = []
        encoder = self._encoder
        if encoder is None:
            encoder = self._encoder = ChunkEncoder(
                "chatcmpl-" + secrets.token_hex(12), int(time.time()), line.get("model") or "",
                include_usage=self.include_usage, system_fingerprint=None)
            out.append(encoder.chunk({"role": "assistant", "content": ""}))
        message = line.get("message") or {}
        thinking = message.get("thinking")
        if thinking:
            out.append(encoder.chunk({"reasoning_content": thinking}))
            state.has_content = True
        content = message.get("content")
        if content or thinking:
            self._lines += 1
        if content:
            out.append(encoder.chunk({"content": content}))
            state.has_content = True
        if message.get("tool_calls"):
            first = self._calls
            for k, call in enumerate(self._tool_calls(message["tool_calls"])):
                out.append(encoder.chunk({"tool_calls": [{"index": first + k, **call}]}))
            state.has_content = True
        if not line.get("done"):
            return out, None
        finish = "tool_calls" if self._calls else FINISH.get(line.get("done_reason") or "stop",
                                                             "stop")
        out.append(encoder.chunk({}, finish=finish))
        state.finish_reason = finish
        state.has_content = True
        state.complete = True
        self._usage = usage = ollama_usage(line)
        if self.include_usage:
            out.append(encoder.usage(usage.to_openai()))
        return out, usage

    def end_of_stream(self) -> list[bytes]:
        return []  # only the `done: true` line completes an Ollama stream

    def partial_usage(self) -> Usage | None:
        """A stream cut short before its `done` line (the only one with counts): the
        prompt estimated from the request, the output counted from the lines seen."""
        if self._usage is not None or self._chat is None or not self._lines:
            return self._usage
        return Usage(prompt_tokens=estimate_body(self._chat).prompt_tokens,
                     completion_tokens=self._lines, estimated=True)
