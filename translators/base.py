"""The translator contract: one instance per upstream attempt.

A translator turns the client's request (OpenAI chat, legacy completions or
embeddings) into one upstream request, and the upstream's answer (JSON,
stream events or error) back into OpenAI's wire format. It never mutates the
client's request, so a retry translates the same input again and gets the same
bytes. Usage is returned with the body, so nothing is parsed twice.

A provider type's translators form a family that shares one base class: how
its upstream takes credentials (`auth_headers`) and how it reports errors
(`classify`). Health checks and every endpoint use those, never a copy.

Upstreams echo keys, in any field of an error. Every error a translator's
`classify` builds from what an upstream sent is therefore scrubbed here, once
for every translator (present and future): each string it shows (message,
type, param, code) loses every secret of the config, before a client, a log,
a span or the ledger sees it.
"""

from __future__ import annotations

import functools
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from proxy.core.errors import UpstreamError
from proxy.core.framing import Event
from proxy.core.redact import Redactor
from proxy.core.usage import Usage
from translators.common import json_or_none

if TYPE_CHECKING:
    from proxy.config.types import ProviderConfig, TargetConfig


@dataclass(slots=True)
class UpstreamRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    stream: bool


@dataclass(frozen=True, slots=True)
class Option:
    """A provider-type-specific config field (e.g. `api_version` for Azure)."""

    kind: type
    default: Any = None
    required: bool = False
    help: str = ""
    pattern: str | None = None  # a string value must match this regex whole
    choices: tuple[str, ...] | None = None  # a string value must be one of these


@dataclass(slots=True)
class StreamState:
    """What the dispatcher needs to know about a stream, kept by the translator."""

    has_content: bool = False  # something worth committing the client stream for
    complete: bool = False  # the upstream's grammar reached its proper end
    finish_reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Translator(ABC):
    """Maps one client request onto one upstream wire format and back."""

    #: how the upstream frames a stream: "sse" or "ndjson" (a translator working through
    #: another one takes that one's)
    framing: str = "sse"
    #: used when the provider's config has no base_url; None makes it required
    default_base_url: ClassVar[str | None] = None
    #: whether a provider of this type needs an api_key at all
    requires_api_key: ClassVar[bool] = True
    #: extra provider fields this type understands
    provider_options: ClassVar[Mapping[str, Option]] = {}
    #: the upstream model name enters the URL path: config must match this pattern
    model_pattern: ClassVar["re.Pattern[str] | None"] = None
    #: in-process transport instead of HTTP (the offline mock)
    in_process: ClassVar[bool] = False
    #: the model's `drop_unsupported`: drop what the upstream cannot take instead of a 400
    #: (set by the dispatcher on each instance)
    drop_unsupported: bool = False

    def __init__(self, provider: "ProviderConfig") -> None:
        self.provider = provider
        self.state = StreamState()
        self.include_usage = False  # did the client ask for the usage chunk?

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every `classify` a subclass defines returns its error scrubbed (see above)."""
        super().__init_subclass__(**kwargs)
        classify = cls.__dict__.get("classify")
        if classify is None or getattr(classify, "scrubbed", False):
            return

        @functools.wraps(classify)
        def scrubbed(self: "Translator", status: int, parsed: Any,
                     headers: Mapping[str, str] | None) -> UpstreamError:
            return self.scrub(classify(self, status, parsed, headers))

        scrubbed.scrubbed = True  # type: ignore[attr-defined]
        cls.classify = scrubbed  # type: ignore[method-assign]

    def scrub(self, err: UpstreamError) -> UpstreamError:
        """`err` without a secret in any of its strings (error paths only: the redactor
        is built here, not on every attempt)."""
        provider = self.provider
        secrets = provider.secrets or (provider.api_key or "", *provider.headers.values())
        return Redactor(secrets).error(err)

    def auth_headers(self) -> dict[str, str]:
        """What every request to this provider carries, health checks included: its
        configured headers and its credential where the upstream wants it (no content
        type). Each family says where the key goes."""
        return dict(self.provider.headers)

    def json_headers(self) -> dict[str, str]:
        """`auth_headers` for a request with a JSON body."""
        return {"content-type": "application/json", **self.auth_headers()}

    @abstractmethod
    def request(self, chat: dict[str, Any], target: "TargetConfig", *,
                stream: bool) -> UpstreamRequest:
        """Build the upstream request from the client's parsed body (a chat request, or
        the endpoint's own); raise GatewayError (400) for what cannot map."""

    #: whether `prepare` has work to do (checked first, so most requests skip the await)
    prepares: bool = False

    async def prepare(self, chat: dict[str, Any]) -> None:
        """Async work `request()` needs done first (e.g. fetching image URLs an upstream
        cannot take as URLs); awaited by the dispatcher just before `request()`.
        Raise GatewayError (400) for what cannot be prepared. Default: nothing."""

    @abstractmethod
    def response(self, status: int, headers: Mapping[str, str],
                 body: bytes) -> tuple[bytes | dict[str, Any], Usage | None]:
        """A successful non-streaming body → the client's answer in OpenAI's format (a
        chat.completion for chat; bytes or dict) and its usage."""

    @abstractmethod
    def stream(self, event: Event) -> tuple[list[bytes], Usage | None]:
        """One upstream event → zero or more encoded OpenAI chunk JSON objects.

        Updates `self.state`; raises UpstreamError for an error event.
        """

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        """An upstream error answer → a classified error in OpenAI's envelope."""
        return self.classify(status, json_or_none(body), headers)

    @abstractmethod
    def classify(self, status: int, parsed: Any,
                 headers: Mapping[str, str] | None) -> UpstreamError:
        """An upstream error, already parsed (None: the body was not JSON) → a classified
        error in OpenAI's envelope. An error event inside a stream comes with status 200
        and no headers."""

    def passthrough(self, block: bytes) -> tuple[bytes, int]:
        """Of `block` (complete SSE events of a committed stream), the leading events
        that can reach the client as the upstream's own bytes: (what to write, how many
        bytes of `block` that used). The rest is translated event by event. Only a
        format that is already OpenAI's can pass anything."""
        return b"", 0

    def error_message(self, message: Any, status: int) -> str:
        """The upstream's error message (or a plain one); `classify` scrubs it."""
        return str(message or f"Upstream provider '{self.provider.name}' answered HTTP "
                   f"{status}.")

    def end_of_stream(self) -> list[bytes]:
        """The upstream closed the stream: emit what is left, mark `complete` if it
        was a proper end. Formats without an end marker end on a finish reason."""
        if self.state.finish_reason:
            self.state.complete = True
        return []

    def partial_usage(self) -> Usage | None:
        """Best estimate of what a stream cut short was billed (override where known)."""
        return None
