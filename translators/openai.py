"""OpenAI chat completions, and every OpenAI-compatible server (DeepSeek, vLLM,
Groq, Together, LM Studio, llama.cpp's server) as the same type with a base_url.

The request is forwarded nearly as sent; responses and stream chunks pass
through as the upstream's own bytes wherever nothing needs changing, so the
client gets exactly what the upstream said.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import orjson

from proxy.core.errors import (
    ErrorClass,
    UpstreamError,
    parse_retry_after,
    upstream_auth,
    upstream_protocol,
)
from proxy.core.framing import Event
from proxy.core.pricing import estimate_body
from proxy.core.usage import Usage
from translators.base import Translator, UpstreamRequest
from translators.common import error_object, error_text, upstream_json

_CONTENT_KEYS = ("content", "tool_calls", "refusal", "reasoning_content", "function_call")


class OpenAIFamily(Translator):
    """What every translator to an OpenAI-format upstream shares (chat, native legacy
    completions, embeddings): the key as a bearer token, OpenAI's error envelope."""

    default_base_url: ClassVar[str | None] = "https://api.openai.com/v1"
    requires_api_key = False  # local OpenAI-compatible servers often need none

    def auth_headers(self) -> dict[str, str]:
        headers = dict(self.provider.headers)
        if self.provider.api_key:
            headers["authorization"] = f"Bearer {self.provider.api_key}"
        return headers

    def classify(self, status: int, parsed: Any,
                 headers: Mapping[str, str] | None) -> UpstreamError:
        name = self.provider.name
        if status in (401, 403):
            return upstream_auth(name, status)
        error = error_object(parsed)
        message = self.error_message(error_text(parsed), status)
        type_ = _str_or_none(error.get("type"))
        code = _str_or_none(error.get("code"))
        param = _str_or_none(error.get("param"))
        retry_after = parse_retry_after(headers) if headers else None
        error_class = classify_openai(status, type_, code)
        client_status = status if status >= 400 else 500
        if status < 400:  # an error event inside a 200 stream
            client_status = {ErrorClass.RATE_LIMITED: 429, ErrorClass.QUOTA: 429,
                             ErrorClass.OVERLOADED: 503, ErrorClass.CONTEXT_WINDOW: 400,
                             ErrorClass.BAD_REQUEST: 400}.get(error_class, 500)
        if type_ is None and client_status >= 500:
            type_ = "server_error"
        return UpstreamError(error_class, client_status, message, type_, code=code,
                             param=param, retry_after=retry_after, upstream_status=status)


def request_usage(body: dict[str, Any]) -> bool:
    """Ask an OpenAI-format upstream for a stream's usage chunk (the gateway must always
    learn what a stream cost); whether the client itself asked for it."""
    options = dict(body.get("stream_options") or {})
    asked = bool(options.get("include_usage"))
    options["include_usage"] = True
    body["stream_options"] = options
    return asked


def without_null_usage(data: bytes) -> bytes:
    """A chunk without the `"usage":null` a client that did not ask for usage never sees."""
    return data.replace(b',"usage":null', b"") if b'"usage":null' in data else data


class OpenAITranslator(OpenAIFamily):
    path = "/chat/completions"

    def __init__(self, provider) -> None:
        super().__init__(provider)
        self._role_checked = False
        self._chat: dict[str, Any] | None = None
        self._chunks = 0  # chunks with choices: about one token each on OpenAI and vLLM
        # A plain content delta of this stream up to its content string, learned from one
        # parsed in full (see `passthrough`); None until then.
        self._head: bytes | None = None
        self._sep = self._sep_bare = b""

    # --- request -------------------------------------------------------------------

    def request(self, chat: dict[str, Any], target, *, stream: bool) -> UpstreamRequest:
        self._chat = chat
        body = dict(chat)
        body["model"] = target.model
        if stream:
            self.include_usage = request_usage(body)
        return UpstreamRequest("POST", self.url(target), self.json_headers(), orjson.dumps(body),
                               stream)

    def url(self, target) -> str:
        return self.provider.base_url + self.path

    # --- response ------------------------------------------------------------------

    def response(self, status: int, headers: Mapping[str, str],
                 body: bytes) -> tuple[bytes | dict[str, Any], Usage | None]:
        parsed = upstream_json(self.provider.name, body)
        if not isinstance(parsed.get("choices"), list):
            raise upstream_protocol(self.provider.name, "no choices in the completion")
        if b'"reasoning"' in body and rename_reasoning(parsed.get("choices"), "message"):
            body = orjson.dumps(parsed)
        return body, Usage.from_openai(parsed.get("usage"))

    # --- stream --------------------------------------------------------------------

    def stream(self, event: Event) -> tuple[list[bytes], Usage | None]:
        data = event.data
        if self.state.has_content and _plain_delta(data) and event.name is None:
            # Most of a stream: a content delta that needs nothing done to it. The
            # byte checks (memchr-fast) stand in for parsing it; JSON strings escape
            # their quotes, so these key patterns can only match structure.
            self._chunks += 1
            return [data if self.include_usage else without_null_usage(data)], None
        if data == b"[DONE]":
            self.state.complete = True
            return [], None
        chunk = upstream_json(self.provider.name, data, "a stream event")
        if b'"reasoning"' in data and rename_reasoning(chunk.get("choices"), "delta"):
            data = orjson.dumps(chunk)
        if chunk.get("error") or event.name == "error":
            raise self.classify(200, chunk, None)
        raw_usage = chunk.get("usage")
        usage = Usage.from_openai(raw_usage) if raw_usage else None
        choices = chunk.get("choices")
        if not choices:
            # The usage chunk, or an Azure-style prompt-filter preamble.
            if usage is not None and self.include_usage:
                return [data], usage
            return [], usage
        if not isinstance(choices, list) or not isinstance(choices[0], dict):
            raise upstream_protocol(self.provider.name, "a chunk's choices are not objects")
        state = self.state
        self._chunks += 1
        choice = choices[0]
        if not self._role_checked:
            self._role_checked = True
            delta = choice.get("delta")
            if isinstance(delta, dict) and "role" not in delta:
                choice["delta"] = {"role": "assistant", **delta}
                data = orjson.dumps(chunk)
        finish = choice.get("finish_reason")
        if finish:
            state.finish_reason = finish
            state.has_content = True
        elif not state.has_content:
            delta = choice.get("delta")
            state.has_content = isinstance(delta, dict) and any(delta.get(key)
                                                                for key in _CONTENT_KEYS)
        if self._head is None and not finish and usage is None and self._chunks > 1:
            self._learn_head(data, choices)
        if not self.include_usage and b'"usage"' in data:
            data = data.replace(b',"usage":null', b"").replace(b', "usage": null', b"")
        return [data], usage

    def _learn_head(self, data: bytes, choices: list[Any]) -> None:
        """Keep what precedes the content string of a chunk just parsed, if it is exactly
        one choice with a text delta, no logprobs, no finish, `"usage":null` at the end
        and nothing to rename: every later chunk that starts with the same bytes and
        ends in the same way is as plain as this one."""
        choice = choices[0]
        delta = choice.get("delta")
        if (len(choices) != 1 or not isinstance(delta, dict) or len(delta) != 1
                or not isinstance(delta.get("content"), str) or choice.get("logprobs") is not None
                or b'"reasoning"' in data or not data.endswith(_QTAIL[:-2])):
            return
        at = data.find(_CONTENT)
        if at >= 0 and data.find(b'"', at + len(_CONTENT) + 1) == len(data) - len(_QTAIL) + 2:
            self._head = head = b"data: " + data[:at + len(_CONTENT) + 1]
            self._sep = _QTAIL + head  # between two plain events
            self._sep_bare = _QTAIL_BARE + head

    def passthrough(self, block: bytes) -> tuple[bytes, int]:
        """The leading plain content deltas: up to the first event that needs acting on
        (a finish, a key to rename, the end), each a compact content delta with a null
        finish. JSON strings escape their quotes, so these patterns can only match
        structure."""
        head = self._head  # with the content string's opening quote
        if head is None or not block.startswith(head):
            return self._plain_counted(block)
        # A plain event is `head`, a text with no quote or line break, and OpenAI's
        # plain ending: checked with memchr and compares (CPython's count and find of
        # patterns cost ~5 instructions a byte, memchr a tenth of that).
        size = len(head)
        if block.endswith(_QTAIL):  # one event a read, as a provider streams tokens
            text = block[size:-len(_QTAIL)]
            if b'"' not in text and b"\n" not in text:
                self._chunks += 1
                return (block if self.include_usage
                        else block[:-len(_QTAIL)] + _QTAIL_BARE), len(block)
        # Several: cut at each plain ending; the pieces must be `head` and a text each,
        # which one compare of the rebuilt run shows.
        parts = block.split(_QTAIL)
        rest = parts.pop()
        if not parts:
            return self._plain_counted(block)
        texts = [part[size:] for part in parts]
        plain = b"".join(texts)
        end = len(block) - len(rest)
        if b'"' in plain or b"\n" in plain \
                or self._sep.join(texts) != block[size:end - len(_QTAIL)]:
            return self._plain_counted(block)
        self._chunks += len(texts)
        if self.include_usage:
            fast = block[:end]
        else:
            fast = head + self._sep_bare.join(texts) + _QTAIL_BARE
        if not rest:
            return fast, end
        more, used = self._plain_counted(rest)
        return fast + more, end + used

    def _plain_counted(self, block: bytes) -> tuple[bytes, int]:
        cut = len(block)
        for pattern in _NEEDS_TRANSLATION:
            found = block.find(pattern, 0, cut)
            if found >= 0:
                cut = found
        if cut < len(block):
            start = block.rfind(b"\n\n", 0, cut)
            cut = start + 2 if start >= 0 else 0
        # Every event of the prefix must be a compact content delta with a null finish:
        # usage chunks, errors, tool calls, comments and event lines all fail this.
        n = block.count(b"\n\n", 0, cut)
        if not n or block.count(b'"finish_reason":null', 0, cut) != n \
                or block.count(b'"delta":{"content":', 0, cut) != n:
            return b"", 0
        self._chunks += n
        plain = block[:cut]
        return (plain if self.include_usage else without_null_usage(plain)), cut

    def partial_usage(self) -> Usage | None:
        """A stream cut short before its usage chunk: the prompt estimated from the
        request, the output counted from the chunks seen (less the role chunk)."""
        if self._chat is None or not self._chunks:
            return None
        return Usage(prompt_tokens=estimate_body(self._chat).prompt_tokens,
                     completion_tokens=max(0, self._chunks - 1), estimated=True)

# How a plain content delta ends, after its content string (OpenAI's own layout).
_QTAIL = b'"},"logprobs":null,"finish_reason":null}],"usage":null}\n\n'
_QTAIL_BARE = _QTAIL.replace(b',"usage":null', b"")
_CONTENT = b'"delta":{"content":'
# Where a stream stops being plain deltas (each scanned for once per read).
_NEEDS_TRANSLATION = (b'"finish_reason":"', b"[DONE]", b'"reasoning"')


def _plain_delta(data: bytes) -> bool:
    """A compact chunk with no finish reason, no usage, no error, nothing to rename."""
    return (b'"finish_reason":null' in data and b'"finish_reason":"' not in data
            and b'"usage":{' not in data and b'"error"' not in data
            and b'"reasoning"' not in data)


_QUOTA = frozenset({"insufficient_quota", "billing_hard_limit_reached", "billing_not_active",
                    "quota_exceeded"})


def classify_openai(status: int, type_: str | None, code: str | None) -> ErrorClass:
    """The error class of an OpenAI-shaped error (also Azure and compatible servers)."""
    if code == "context_length_exceeded":
        return ErrorClass.CONTEXT_WINDOW
    if code == "content_filter" or code == "content_policy_violation":
        return ErrorClass.CONTENT_FILTER
    # The account's quota or credit is spent (OpenAI and Azure: 429 insufficient_quota;
    # DeepSeek and other compatible servers: 402): no retry helps for a long while.
    if status == 402 or type_ in _QUOTA or code in _QUOTA:
        return ErrorClass.QUOTA
    # OpenAI's own rate-limit errors say type "requests"/"tokens": the code tells.
    if (status == 429 or code == "rate_limit_exceeded"
            or type_ in ("rate_limit_error", "rate_limit_exceeded")):
        return ErrorClass.RATE_LIMITED
    if status in (401, 403):
        return ErrorClass.AUTH
    if status == 404:
        return ErrorClass.NOT_FOUND
    if status == 408 or status == 504:
        return ErrorClass.TIMEOUT
    if status in (503, 529) or type_ in ("overloaded_error", "server_overloaded"):
        return ErrorClass.OVERLOADED
    if 400 <= status < 500:
        return ErrorClass.BAD_REQUEST
    return ErrorClass.SERVER


def rename_reasoning(choices: Any, key: str) -> bool:
    """Some compatible servers (ollama's /v1, newer vLLM) say `reasoning` where others say
    `reasoning_content`: clients get one name. True if anything changed."""
    changed = False
    for choice in choices if isinstance(choices, list) else ():
        inner = choice.get(key) if isinstance(choice, dict) else None
        if isinstance(inner, dict) and "reasoning" in inner:
            value = inner.pop("reasoning")
            if value is not None and inner.get("reasoning_content") is None:
                inner["reasoning_content"] = value
            changed = True
    return changed


def _str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)
