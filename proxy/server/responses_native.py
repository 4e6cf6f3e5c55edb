"""One attempt of a Responses request: native, or through chat completions.

The dispatcher wraps each attempt's translator (`Exchange.adapter`), so keys,
limits, budget reservations, the ledger, fallbacks and breakers apply to
either path unchanged. To a provider whose `responses` is native
(proxy/config/responses.py) the client's request goes as is to
`{base_url}/responses` (the model replaced by the target's, a gateway
`previous_response_id` replaced by the stored conversation), and its JSON or
events come back untouched; usage is read from the Response's `usage`. Any
other upstream gets the chat body through its own translator, unless the
request uses what only OpenAI's platform can do: then a 400 names it.
"""

from __future__ import annotations

from typing import Any, Mapping

import orjson

from proxy.config.responses import is_native
from proxy.core.errors import ErrorClass, UpstreamError, upstream_protocol
from proxy.core.framing import Event
from proxy.core.pricing import estimate_body
from proxy.core.usage import Usage
from proxy.server.responses_call import NativeStream, ResponsesCall
from proxy.server.responses_chat import native_body
from proxy.server.responses_output import usage_from
from translators.base import StreamState, Translator, UpstreamRequest
from translators.over_chat import OverChat
from translators.openai import classify_openai

_TERMINAL = ("response.completed", "response.incomplete")
#: a failed response's code → (error class, client status)
_FAILED = {"rate_limit_exceeded": (ErrorClass.RATE_LIMITED, 429),
           "server_error": (ErrorClass.SERVER, 500),
           "invalid_prompt": (ErrorClass.BAD_REQUEST, 400)}


class ResponsesAdapter(OverChat):
    """Native: the Responses request as sent, its answer untouched (this translator's
    own stream state). Otherwise the attempt's chat translator does the work."""

    def __init__(self, chat: Translator, call: ResponsesCall) -> None:
        super().__init__(chat)
        self.call = call
        self.native = False
        self._own = StreamState()
        self._stream = NativeStream()
        self._chat: dict[str, Any] | None = None
        self._failed_usage: Usage | None = None

    def request(self, chat: dict[str, Any], target, *, stream: bool) -> UpstreamRequest:
        call = self.call
        self._chat = chat
        if is_native(self.provider):
            self.native = call.native = True
            self.state = self._own
            call.stream_state = self._stream
            body = native_body(call.req, target.model)
            return UpstreamRequest("POST", self.provider.base_url + "/responses",
                                   self.chat.json_headers(),
                                   orjson.dumps(body), stream)
        call.native = False
        call.stream_state = None
        if call.req.problem is not None:
            raise call.req.problem.error(self.provider.name, self.provider.type)
        return self.chat_request(chat, target, stream)

    # --- the native answer -----------------------------------------------------------------

    def response(self, status: int, headers: Mapping[str, str],
                 body: bytes) -> tuple[bytes | dict[str, Any], Usage | None]:
        if not self.native:
            return self.chat.response(status, headers, body)
        parsed = self._json(body, "the body")
        if parsed.get("object") != "response" or not isinstance(parsed.get("output"), list):
            raise upstream_protocol(self.provider.name, "the body is not a Response object")
        self.call.final = parsed
        return body, usage_from(parsed.get("usage"))

    def stream(self, event: Event) -> tuple[list[bytes], Usage | None]:
        if not self.native:
            return self.chat.stream(event)
        parsed = self._json(event.data, "a stream event")
        kind = parsed.get("type")
        seen = self._stream
        state = self._own
        usage = None
        if kind == "response.created":
            seen.response = parsed.get("response") if isinstance(parsed.get("response"),
                                                                 dict) else None
        elif kind == "error" or event.name == "error" or (
                kind is None and isinstance(parsed.get("error"), dict)):
            # OpenAI's typed event, or the `{"error": {...}}` of compatible servers
            error = parsed if kind == "error" else parsed.get("error")
            error = error if isinstance(error, dict) else parsed
            raise self._failure(error.get("code"), error.get("message"), error.get("param"))
        elif kind == "response.failed":
            response = parsed.get("response") or {}
            error = response.get("error") or {}
            self._failed_usage = usage_from(response.get("usage"))
            raise self._failure(error.get("code"), error.get("message"), None)
        elif kind in _TERMINAL:
            response = parsed.get("response")
            if not isinstance(response, dict):
                raise upstream_protocol(self.provider.name, f"{kind} carries no response")
            state.complete = state.has_content = True
            state.finish_reason = "stop"
            self.call.final = response
            usage = usage_from(response.get("usage"))
        elif kind == "response.output_item.done":
            index, item = parsed.get("output_index"), parsed.get("item")
            if isinstance(index, int) and isinstance(item, dict):
                seen.done_items[index] = item
            state.has_content = True
        elif isinstance(kind, str) and kind.endswith(".delta"):
            seen.deltas += 1
            state.has_content = True
        sequence = parsed.get("sequence_number")
        if isinstance(sequence, int):  # of the events that reach the client
            seen.last_sequence = sequence
        data = event.data
        if b"\n" in data or b"\r" in data:
            data = orjson.dumps(parsed)  # one line, so it can be framed as one data field
        return [data], usage

    def end_of_stream(self) -> list[bytes]:
        return [] if self.native else self.chat.end_of_stream()

    def partial_usage(self) -> Usage | None:
        if not self.native:
            return self.chat.partial_usage()
        if self._failed_usage is not None:
            return self._failed_usage
        if not self._stream.deltas or self._chat is None:
            return None
        return Usage(prompt_tokens=estimate_body(self._chat).prompt_tokens,
                     completion_tokens=self._stream.deltas, estimated=True)

    def _json(self, data: bytes, what: str) -> dict[str, Any]:
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise upstream_protocol(self.provider.name, f"{what} is not JSON") from None
        if not isinstance(parsed, dict):
            raise upstream_protocol(self.provider.name, f"{what} is not an object")
        return parsed

    def _failure(self, code: Any, message: Any, param: Any) -> UpstreamError:
        code = code if isinstance(code, str) else None
        error_class, status = _FAILED.get(code or "", (None, 500))
        if error_class is None:
            error_class = classify_openai(200, None, code)
            status = {ErrorClass.RATE_LIMITED: 429, ErrorClass.OVERLOADED: 503,
                      ErrorClass.CONTEXT_WINDOW: 400,
                      ErrorClass.BAD_REQUEST: 400}.get(error_class, 500)
        text = str(message) if message else \
            f"Upstream provider '{self.provider.name}' failed the response."
        return self.scrub(UpstreamError(
            error_class, status, text, "server_error" if status >= 500 else
            "invalid_request_error", code=code, param=param if isinstance(param, str) else None))
