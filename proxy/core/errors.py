"""Errors in OpenAI's envelope, and the classes that drive retry and fallback.

Every error gatewise answers is `{"error": {"message", "type", "param", "code"}}`.
Upstream failures carry an `ErrorClass`: the class, never the message text,
decides whether a request is retried, falls back, or counts against a breaker.
"""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import Any, Mapping

import orjson


class ErrorClass(str, Enum):
    RATE_LIMITED = "rate_limited"
    OVERLOADED = "overloaded"
    SERVER = "server"
    TIMEOUT = "timeout"
    CONNECT = "connect"  # nothing reached the upstream: always safe to try elsewhere
    CONTEXT_WINDOW = "context_window"
    CONTENT_FILTER = "content_filter"
    AUTH = "auth"  # the upstream refused the gateway's own credential
    QUOTA = "quota_exhausted"  # the upstream account's quota or credit is spent
    BAD_REQUEST = "bad_request"
    NOT_FOUND = "not_found"

    @property
    def retryable(self) -> bool:
        """Another attempt (same or other target) may succeed."""
        return self in _RETRYABLE

    @property
    def counts_against_target(self) -> bool:
        """A failure of the target itself, as a circuit breaker sees it."""
        return self in _TARGET_FAILURES


_RETRYABLE = frozenset(
    {ErrorClass.RATE_LIMITED, ErrorClass.OVERLOADED, ErrorClass.SERVER,
     ErrorClass.TIMEOUT, ErrorClass.CONNECT}
)
_TARGET_FAILURES = frozenset(
    {ErrorClass.OVERLOADED, ErrorClass.SERVER, ErrorClass.TIMEOUT, ErrorClass.CONNECT}
)


def envelope(message: str, type_: str | None, param: str | None = None,
             code: str | None = None) -> bytes:
    """OpenAI's error body; `type` and `code` are strings or JSON null."""
    return orjson.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}
    )


class StartupError(Exception):
    """The gateway cannot start as configured: one line for the operator, no traceback."""


class GatewayError(Exception):
    """An error answered to the client in OpenAI's envelope."""

    def __init__(self, status: int, message: str, type_: str | None = "invalid_request_error",
                 *, code: str | None = None, param: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.headers: dict[str, str] = dict(headers or {})

    def body(self) -> bytes:
        return envelope(self.message, self.type, self.param, self.code)

    def payload(self) -> dict:
        """The inner error object, e.g. for a mid-stream `data: {"error": ...}` event."""
        return {"message": self.message, "type": self.type, "param": self.param,
                "code": self.code}


class UpstreamError(GatewayError):
    """An upstream's failure, already translated into what the client should see."""

    def __init__(self, error_class: ErrorClass, status: int, message: str,
                 type_: str | None = "server_error", *, code: str | None = None,
                 param: str | None = None, retry_after: float | None = None,
                 upstream_status: int | None = None) -> None:
        if retry_after is not None:
            retry_after = seconds(retry_after)
        headers = {"retry-after": _retry_after_header(retry_after)} if retry_after else {}
        super().__init__(status, message, type_, code=code, param=param, headers=headers)
        self.error_class = error_class
        self.retry_after = retry_after
        self.upstream_status = upstream_status
        #: chunks translated from the same upstream read before this error (a stream
        #: relay writes them first, so reads split anywhere give the same bytes)
        self.partial: list[bytes] | None = None


def _retry_after_header(wait: float) -> str:
    """Whole seconds, rounded up (RFC 9110 has no fractions); bounded, never raises."""
    bounded = seconds(wait) or 0.0
    whole = int(bounded)
    return str(whole if whole == bounded else whole + 1)


# --- gateway-made errors, worded like OpenAI's own -------------------------------

def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> GatewayError:
    return GatewayError(400, message, "invalid_request_error", param=param, code=code)


def model_not_found(model: str) -> GatewayError:
    return GatewayError(
        404, f"The model `{model}` does not exist or you do not have access to it.",
        "invalid_request_error", param="model", code="model_not_found")


def invalid_json() -> GatewayError:
    return bad_request(
        "We could not parse the JSON body of your request. The gateway expects a JSON "
        "object, but what was sent was not valid JSON.")


def internal_error(request_id: str) -> GatewayError:
    return GatewayError(500, f"The gateway hit an internal error (request id {request_id}).",
                        "server_error", code="gateway_internal_error")


def ledger_unavailable(retry_in: float) -> GatewayError:
    """The spend ledger refuses writes: nothing goes upstream unrecorded."""
    seconds = max(1, int(retry_in + 0.999))
    return GatewayError(
        503, "The gateway cannot record spend right now (its ledger database refuses writes), "
             f"so the request was not sent upstream; retry in {seconds}s.", "server_error",
        code="ledger_unavailable", headers={"retry-after": str(seconds)})


def upstream_timeout(provider: str, phase: str, seconds: float) -> UpstreamError:
    """A connect timeout reached nothing (class CONNECT: no tokens, safe elsewhere);
    any later timeout left an upstream that may be working (and billing)."""
    return UpstreamError(
        ErrorClass.CONNECT if phase == "connect" else ErrorClass.TIMEOUT, 504,
        f"Upstream provider '{provider}' timed out ({phase} after {seconds:g}s).",
        "server_error", code="upstream_timeout")


def upstream_unreachable(provider: str, reason: str) -> UpstreamError:
    return UpstreamError(
        ErrorClass.CONNECT, 502,
        f"Could not connect to upstream provider '{provider}': {reason}.",
        "server_error", code="upstream_connect_error")


def upstream_protocol(provider: str, detail: str) -> UpstreamError:
    return UpstreamError(
        ErrorClass.SERVER, 502,
        f"Upstream provider '{provider}' sent an invalid response: {detail}.",
        "server_error", code="upstream_bad_response")


def upstream_auth(provider: str, status: int) -> UpstreamError:
    """The gateway's own credential was refused: never the caller's fault."""
    return UpstreamError(
        ErrorClass.AUTH, 502,
        f"Upstream provider '{provider}' refused the gateway's credentials (HTTP {status}). "
        "The operator must check this provider's api_key.",
        "server_error", code="upstream_auth_error", upstream_status=status)


#: the longest wait an upstream's `Retry-After` is believed for: a longer one (or
#: `inf`, `1e309`) is read as this, so no wait, cool-down or header can overflow
MAX_RETRY_AFTER = 86400.0


def seconds(value: Any, scale: float = 1.0) -> float | None:
    """A number of seconds in [0, MAX_RETRY_AFTER] from a header or JSON value
    (`scale` 0.001 for milliseconds); None for anything that is not a number.
    Never raises: upstream headers are untrusted input."""
    try:
        number = float(value) * scale
    except (TypeError, ValueError, OverflowError):
        return None
    if number != number:  # NaN
        return None
    return min(max(number, 0.0), MAX_RETRY_AFTER)


def parse_delay(text: Any) -> float | None:
    """A protobuf Duration as JSON (`"37s"`, `"0.5s"`), e.g. Gemini's `retryDelay`."""
    if isinstance(text, str) and text.endswith("s"):
        return seconds(text[:-1])
    return None


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """`retry-after-ms` first, then `retry-after` in seconds or as an HTTP date;
    bounded by MAX_RETRY_AFTER, None when absent or unreadable. Never raises."""
    value = headers.get("retry-after-ms")
    if value:
        found = seconds(value, 0.001)
        if found is not None:
            return found
    value = headers.get("retry-after")
    if not value:
        return None
    found = seconds(value)
    if found is not None:
        return found
    try:
        when = parsedate_to_datetime(value).timestamp()
    except Exception:  # noqa: BLE001 — any malformed date is simply no answer
        return None
    return seconds(when - time.time())
