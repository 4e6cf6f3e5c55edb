"""Google Gemini API (`type: gemini`) behind OpenAI's chat completions.

`POST {base_url}/v1beta/models/{model}:generateContent`, or
`:streamGenerateContent?alt=sse` (always SSE: without `alt=sse` Gemini streams
one JSON array). The key travels only in the `x-goog-api-key` header, never
in the URL; the model name comes from the config and must match a safe
pattern before it enters the path. The request mapping is in
gemini_request.py, the answer mapping in gemini_stream.py; this module ties
them to the translator contract and classifies errors.
See docs/providers/gemini.md for the choices made.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import orjson

from proxy.core.errors import (
    ErrorClass,
    GatewayError,
    UpstreamError,
    parse_delay,
    parse_retry_after,
    upstream_auth,
    upstream_protocol,
)
from proxy.core.framing import Event
from translators.common import error_object, json_or_none, upstream_json, wants_usage
from proxy.core.usage import Usage
from translators.base import Option, Translator, UpstreamRequest
from translators.gemini_request import build_body
from translators.gemini_stream import GeminiStream, completion
from translators.image_fetch import (
    FetchPolicy,
    Image,
    IPAddress,
    fetch_image,
    image_urls,
    is_public,
)

#: what may enter the URL path as a model name (`models/` prefix allowed)
SAFE_MODEL = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,127}$")
_TOKEN_OVERFLOW = re.compile(r"input token count.*exceeds the maximum", re.IGNORECASE)

#: google.rpc status → (class, status to the client, OpenAI type, code)
_ERRORS: dict[str, tuple[ErrorClass, int, str, str | None]] = {
    "INVALID_ARGUMENT": (ErrorClass.BAD_REQUEST, 400, "invalid_request_error", None),
    "FAILED_PRECONDITION": (ErrorClass.BAD_REQUEST, 400, "invalid_request_error", None),
    "OUT_OF_RANGE": (ErrorClass.BAD_REQUEST, 400, "invalid_request_error", None),
    "NOT_FOUND": (ErrorClass.NOT_FOUND, 404, "invalid_request_error", "model_not_found"),
    "RESOURCE_EXHAUSTED": (ErrorClass.RATE_LIMITED, 429, "rate_limit_exceeded",
                           "upstream_rate_limit"),
    "UNAVAILABLE": (ErrorClass.OVERLOADED, 503, "server_error", "upstream_overloaded"),
    "DEADLINE_EXCEEDED": (ErrorClass.TIMEOUT, 504, "server_error", "upstream_timeout"),
    "INTERNAL": (ErrorClass.SERVER, 502, "server_error", "upstream_error"),
    "CANCELLED": (ErrorClass.SERVER, 502, "server_error", "upstream_error"),
    "UNKNOWN": (ErrorClass.SERVER, 502, "server_error", "upstream_error"),
}
_BY_STATUS = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED",
              499: "CANCELLED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def model_path(model: str) -> str:
    """The config's model name as a path segment, refused unless it is plainly safe."""
    name = model.removeprefix("models/")
    if not SAFE_MODEL.match(name):
        raise GatewayError(500, "The gateway's configuration names a Gemini model that cannot "
                           "be used in a URL.", "server_error", code="gateway_config_error")
    return name


class GeminiFamily(Translator):
    """What every translator to the Gemini API shares (chat, embeddings): the key in
    `x-goog-api-key` only, never the URL; google.rpc errors."""

    default_base_url = "https://generativelanguage.googleapis.com"
    model_pattern = SAFE_MODEL
    provider_options: ClassVar[Mapping[str, Option]] = {
        "fetch_image_urls": Option(bool, False, help="fetch https image URLs and inline them"),
        "image_max_bytes": Option(int, 10 * 1024 * 1024, help="largest image fetched, bytes"),
        "image_fetch_timeout": Option(float, 10.0, help="seconds for one image fetch"),
    }

    def auth_headers(self) -> dict[str, str]:
        headers = dict(self.provider.headers)
        if self.provider.api_key:
            headers["x-goog-api-key"] = self.provider.api_key
        return headers

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        parsed = json_or_none(body)
        if isinstance(parsed, list) and parsed:  # the JSON-array stream form
            parsed = parsed[0]
        return self.classify(status, parsed, headers)

    def classify(self, status: int, parsed: Any,
                 headers: Mapping[str, str] | None) -> UpstreamError:
        name = self.provider.name
        error = error_object(parsed)
        code = error.get("code") if isinstance(error.get("code"), int) else status
        rpc = error.get("status") if isinstance(error.get("status"), str) else None
        details = error.get("details") if isinstance(error.get("details"), list) else []
        reasons = {d.get("reason") for d in details if isinstance(d, dict)}
        if code in (401, 403) or rpc in ("UNAUTHENTICATED", "PERMISSION_DENIED") or \
                "API_KEY_INVALID" in reasons:
            return upstream_auth(name, code if code >= 400 else 401)
        rpc = rpc or _BY_STATUS.get(code) or ("INTERNAL" if code >= 500 or code < 400
                                             else "INVALID_ARGUMENT")
        message = self.error_message(error.get("message"), status)
        error_class, client_status, openai_type, openai_code = _ERRORS.get(
            rpc, (ErrorClass.SERVER, 502, "server_error", "upstream_error") if code >= 500 else
            (ErrorClass.BAD_REQUEST, 400, "invalid_request_error", None))
        param = None
        if error_class is ErrorClass.BAD_REQUEST and _TOKEN_OVERFLOW.search(message):
            error_class, openai_code, param = (ErrorClass.CONTEXT_WINDOW,
                                               "context_length_exceeded", "messages")
        if error_class is ErrorClass.RATE_LIMITED and _daily_quota(details):
            # a quota per day is spent: no retry helps until tomorrow (fails over)
            error_class, openai_type, openai_code = (ErrorClass.QUOTA, "insufficient_quota",
                                                     "upstream_quota_exhausted")
        retry_after = parse_retry_after(headers) if headers else None
        if retry_after is None and error_class is ErrorClass.RATE_LIMITED:
            retry_after = _retry_delay(details)
        return UpstreamError(error_class, client_status, message, openai_type,
                             code=openai_code, param=param, retry_after=retry_after,
                             upstream_status=status)


class GeminiTranslator(GeminiFamily):
    #: which resolved addresses a fetch may connect to, and which URL schemes it takes;
    #: class attributes so tests can reach a loopback image server (never set in config)
    image_address_check: ClassVar[Callable[[IPAddress], bool]] = staticmethod(is_public)
    image_schemes: ClassVar[tuple[str, ...]] = ("https",)

    def __init__(self, provider) -> None:
        super().__init__(provider)
        self.prepares = bool(provider.options.get("fetch_image_urls"))
        self._n = 1
        self._machine: GeminiStream | None = None
        self._images: dict[str, Image] = {}  # fetched https image URLs, by URL

    async def prepare(self, chat: dict[str, Any]) -> None:
        """Fetch the request's image URLs when the provider allows it (Gemini takes
        inline bytes only); `request()` inlines them. Off: `request()` answers 400."""
        options = self.provider.options
        if not options.get("fetch_image_urls"):
            return
        policy = FetchPolicy(
            max_bytes=int(options.get("image_max_bytes") or 10 * 1024 * 1024),
            timeout=float(options.get("image_fetch_timeout") or 10.0),
            allow_address=type(self).image_address_check, schemes=type(self).image_schemes)
        for path, url in image_urls(chat):
            if url not in self._images:
                self._images[url] = await fetch_image(url, path, policy)

    # --- request -------------------------------------------------------------------

    def request(self, chat: dict[str, Any], target, *, stream: bool) -> UpstreamRequest:
        name = model_path(target.model)
        body = build_body(chat, name, drop_unsupported=self.drop_unsupported,
                          images=self._images)
        self._n = body.get("generationConfig", {}).get("candidateCount") or 1
        if stream:
            self.include_usage = wants_usage(chat)
            url = f"{self.provider.base_url}/v1beta/models/{name}:streamGenerateContent?alt=sse"
        else:
            url = f"{self.provider.base_url}/v1beta/models/{name}:generateContent"
        return UpstreamRequest("POST", url, self.json_headers(), orjson.dumps(body), stream)

    # --- response ------------------------------------------------------------------

    def response(self, status: int, headers: Mapping[str, str],
                 body: bytes) -> tuple[bytes | dict[str, Any], Usage | None]:
        answer = upstream_json(self.provider.name, body)
        if "error" in answer:
            raise self.classify(status, answer, headers)
        if not answer.get("candidates") and not (answer.get("promptFeedback") or {}).get(
                "blockReason"):
            raise upstream_protocol(self.provider.name, "no candidates in the answer")
        return completion(answer, self._n)

    # --- stream --------------------------------------------------------------------

    def stream(self, event: Event) -> tuple[list[bytes], Usage | None]:
        machine = self._machine
        if machine is None:
            machine = self._machine = GeminiStream(self.state, self.include_usage, self._n,
                                                   self._event_error)
        answer = upstream_json(self.provider.name, event.data, "a stream event")
        return machine.feed(answer)

    def end_of_stream(self) -> list[bytes]:
        """Gemini just closes the connection: complete if every choice finished."""
        machine = self._machine
        if machine is None or self.state.complete or not self.state.finish_reason:
            return []
        return machine.complete()

    def partial_usage(self) -> Usage | None:
        return self._machine.partial_usage() if self._machine is not None else None

    # --- errors --------------------------------------------------------------------

    def _event_error(self, event: dict[str, Any]) -> UpstreamError:
        return self.classify(200, event, None)


def _daily_quota(details: list[Any]) -> bool:
    """google.rpc.QuotaFailure naming a per-day quota (`...PerDay...` quotaId), as
    Gemini sends when a day's requests or tokens are spent (per minute: transient)."""
    for detail in details:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("QuotaFailure"):
            violations = detail.get("violations")
            for violation in violations if isinstance(violations, list) else ():
                quota = violation.get("quotaId") if isinstance(violation, dict) else None
                if isinstance(quota, str) and "PerDay" in quota:
                    return True
    return False


def _retry_delay(details: list[Any]) -> float | None:
    """google.rpc.RetryInfo's `retryDelay` ("37s"), which Gemini sends instead of a header."""
    for detail in details:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("RetryInfo"):
            return parse_delay(detail.get("retryDelay"))  # bounded: "infs" is a day
    return None
