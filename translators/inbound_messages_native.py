"""Each attempt of a `/v1/messages` request: native on Anthropic, translated elsewhere.

`MessagesRequest.adapter` wraps every attempt's translator (`Exchange.adapter`),
so keys, limits, budgets, routing, fallbacks, breakers and the ledger work as
for chat. On an Anthropic upstream the client's own body goes up with only
`model` replaced (thinking signatures, redacted thinking, cache_control,
documents, server tools and fields added after this was written all survive),
and the answer comes back as the upstream's own JSON or event data, parsed
once for usage (cache reads and writes included) and the stream's state. On
any other upstream the chat body goes through that upstream's translator and
the answer becomes an Anthropic message (translators/inbound_messages_reply.py;
streams: translators/inbound_messages_stream.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.core.errors import GatewayError, UpstreamError, bad_request, upstream_protocol
from proxy.core.framing import Event
from proxy.core.usage import Usage
from translators.anthropic_stream import anthropic_usage
from translators.base import StreamState, Translator, UpstreamRequest
from translators.inbound_messages import PARAM_NAMES, Translated
from translators.inbound_messages_reply import error_status, to_message
from translators.common import upstream_json
from translators.over_chat import OverChat

_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}")
_BETA = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")
_DELTA_TEXT = ("text", "thinking", "partial_json")


def client_betas(value: str | None) -> tuple[str, ...]:
    """The well-formed names of an `anthropic-beta` header (a comma-separated list)."""
    if not value:
        return ()
    names = (part.strip() for part in value.split(","))
    return tuple(dict.fromkeys(n for n in names if _BETA.fullmatch(n)))


def client_version(value: str | None) -> str | None:
    return value if value and _VERSION.fullmatch(value) else None


@dataclass(slots=True)
class MessagesRequest:
    """One `/v1/messages` request: the client's body and its chat translation. The
    stream's Egress reads `native`, which each attempt's adapter sets."""

    body: dict[str, Any]
    translated: Translated
    version: str | None = None  # the client's anthropic-version, when well formed
    betas: tuple[str, ...] = ()  # the client's anthropic-beta names
    native: bool = False

    def adapter(self, inner: Translator) -> Translator:
        return MessagesAdapter(inner, self)


def forwarded_betas(provider_options: Mapping[str, Any], asked: tuple[str, ...]) -> str | None:
    """The provider's own `anthropic_beta`, then the client's names on its allow-list."""
    names = [n.strip() for n in (provider_options.get("anthropic_beta") or "").split(",")
             if n.strip()]
    allowed = provider_options.get("allowed_betas") or ()
    names += [n for n in asked if "*" in allowed or n in allowed]
    return ",".join(dict.fromkeys(names)) or None


class MessagesAdapter(OverChat):
    """Native on Anthropic (this translator's own stream state); elsewhere through the
    attempt's chat translator, with the answer turned into an Anthropic message."""

    def __init__(self, chat: Translator, request: MessagesRequest) -> None:
        super().__init__(chat)
        self.messages = request
        self.native = chat.provider.type == "anthropic"
        self._own = StreamState()
        if self.native:
            self.state = self._own
        self._usage_raw: dict[str, Any] = {}
        self._streamed = 0  # characters of content deltas: a cut stream's output estimate

    # --- request -------------------------------------------------------------------

    def request(self, chat: dict[str, Any], target, *, stream: bool) -> UpstreamRequest:
        self.messages.native = self.native
        if self.native:
            return self._native_request(target, stream)
        translated = self.messages.translated
        if translated.strict is not None:
            raise translated.strict
        if translated.optional is not None and not self.drop_unsupported:
            raise translated.optional
        try:
            return self.chat_request(self._fit(chat, target), target, stream)
        except UpstreamError:
            raise
        except GatewayError as err:
            raise _renamed(err) from None

    def _native_request(self, target, stream: bool) -> UpstreamRequest:
        provider = self.provider
        body = dict(self.messages.body)
        body["model"] = target.model
        messages = _without_foreign_thinking(body.get("messages"))
        if messages is not None:
            body["messages"] = messages
        headers = self.chat.json_headers()
        if self.messages.version:
            headers["anthropic-version"] = self.messages.version
        betas = forwarded_betas(provider.options, self.messages.betas)
        if betas:
            headers["anthropic-beta"] = betas
        return UpstreamRequest("POST", provider.base_url + "/v1/messages", headers,
                               orjson.dumps(body), stream)

    def _fit(self, chat: dict[str, Any], target) -> dict[str, Any]:
        """This target's variant of the shared chat body (copied only when it differs)."""
        changes: dict[str, Any] = {}
        if "reasoning_effort" in chat and "reasoning" not in target.info.capabilities:
            if self.messages.translated.thinking_required and not self.drop_unsupported:
                raise bad_request(
                    f"thinking: the model '{target.model}' behind this model does not "
                    "reason (per the gateway's model table). The model's config can set "
                    "drop_unsupported: true to leave thinking out.", param="thinking",
                    code="unsupported_parameter")
            changes["reasoning_effort"] = None
        provider = self.provider
        if "max_tokens" in chat and (provider.type == "azure" or (
                provider.type == "openai" and "://api.openai.com" in provider.base_url)):
            # OpenAI's reasoning models refuse the older name; every OpenAI model takes this
            changes["max_tokens"] = None
            changes["max_completion_tokens"] = chat["max_tokens"]
        if not changes:
            return chat
        fitted = {**chat, **changes}
        return {k: v for k, v in fitted.items() if v is not None}

    # --- answers ---------------------------------------------------------------------

    def response(self, status: int, headers: Mapping[str, str],
                 body: bytes) -> tuple[bytes | dict[str, Any], Usage | None]:
        if not self.native:
            out, usage = self.chat.response(status, headers, body)
            completion = orjson.loads(out) if isinstance(out, bytes) else out
            return to_message(completion, usage), usage
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise upstream_protocol(self.provider.name, "the body is not JSON") from None
        if not isinstance(message, dict) or not isinstance(message.get("content"), list):
            raise upstream_protocol(self.provider.name, "no content in the message")
        raw = message.get("usage")
        return body, anthropic_usage(raw if isinstance(raw, dict) else {})

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        return _as_client_sees(self.chat.error(status, headers, body))

    def stream(self, event: Event) -> tuple[list[bytes], Usage | None]:
        try:
            return self._native_event(event) if self.native else self.chat.stream(event)
        except UpstreamError as err:
            raise _as_client_sees(err) from None

    def _native_event(self, event: Event) -> tuple[list[bytes], Usage | None]:
        data = event.data
        parsed = upstream_json(self.provider.name, data, "a stream event")
        kind = parsed.get("type")
        if kind == "error" or event.name == "error":
            if kind != "error":
                parsed = {"type": "error", "error": parsed.get("error", parsed)}
            raise self.chat.classify(200, parsed, None)
        if not isinstance(kind, str) or not kind:
            raise upstream_protocol(self.provider.name, "a stream event has no type")
        if b"\n" in data or b"\r" in data:
            data = orjson.dumps(parsed)  # one line, so it can be framed as one data field
        return [data], self._track(kind, parsed)

    def _track(self, kind: str, event: dict[str, Any]) -> Usage | None:
        state = self._own
        if kind == "content_block_delta":
            state.has_content = True
            delta = event.get("delta")
            if isinstance(delta, dict):
                for field in _DELTA_TEXT:
                    if isinstance(delta.get(field), str):
                        self._streamed += len(delta[field])
            return None
        if kind == "message_start":  # input known; the usage is settled by message_delta
            message = event.get("message")  # (until then a cut is billed as partial_usage)
            usage = message.get("usage") if isinstance(message, dict) else None
            self._usage_raw = dict(usage) if isinstance(usage, dict) else {}
            return None
        if kind == "message_delta":
            usage = event.get("usage")
            if isinstance(usage, dict):  # cumulative counts: the latest wins
                self._usage_raw.update({k: v for k, v in usage.items() if v is not None})
            delta = event.get("delta")
            reason = delta.get("stop_reason") if isinstance(delta, dict) else None
            if isinstance(reason, str):
                state.finish_reason = reason
            state.has_content = True
            return anthropic_usage(self._usage_raw)
        if kind == "message_stop":
            state.has_content = state.complete = True
        return None

    def end_of_stream(self) -> list[bytes]:
        return [] if self.native else self.chat.end_of_stream()  # native: message_stop ends

    def partial_usage(self) -> Usage | None:
        if not self.native:
            return self.chat.partial_usage()
        if not self._usage_raw:
            return None
        usage = anthropic_usage(self._usage_raw)
        usage.completion_tokens = max(usage.completion_tokens, self._streamed // 4)
        usage.estimated = True
        return usage


def _foreign(block: Any) -> bool:
    return isinstance(block, dict) and block.get("type") == "thinking" \
        and block.get("signature") == ""


def _without_foreign_thinking(messages: Any) -> list[Any] | None:
    """The turns without the thinking blocks another upstream made (gatewise gives them
    an empty signature, which Anthropic refuses); None when there are none (usual)."""
    if not isinstance(messages, list):
        return None
    changed = None
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(_foreign(b) for b in content):
            changed = changed if changed is not None else list(messages)
            changed[i] = {**message, "content": [b for b in content if not _foreign(b)]}
    return changed


def _as_client_sees(err: UpstreamError) -> UpstreamError:
    """The status the Anthropic client gets (529 for overloaded, 500 for a failed
    upstream), so the access log, metrics and ledger record what the client saw."""
    err.status = error_status(err)
    return err


def _renamed(err: GatewayError) -> GatewayError:
    """A chat translator's 400 in the client's terms: the Anthropic name of the param."""
    name = PARAM_NAMES.get(err.param or "")
    if name is None or name == err.param:
        return err
    message = err.message.replace(f"'{err.param}'", f"'{name}'")
    return GatewayError(err.status, message, err.type, code=err.code, param=name,
                        headers=err.headers)
