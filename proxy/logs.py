"""Logging: JSON lines (or readable text), with secrets redacted.

Redaction works three ways, on the finished line (exception text included):
by value (every credential loaded from the config: `GatewayConfig.secrets()`),
by field name (a field called `api_key`, `authorization`, ... never shows its
value), and by shape (`Bearer <token>`, so a client key, which the config keeps
only as a hash, is hidden too if anything ever echoes an Authorization header).
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Iterable
from typing import IO, Any

import orjson

_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message"}
REDACTED = "[redacted]"
SECRET_FIELDS = frozenset({
    "api_key", "api-key", "x-api-key", "apikey", "authorization", "proxy-authorization",
    "x-goog-api-key", "password", "secret", "client_secret", "token", "access_token",
    "refresh_token", "admin_key", "key_value", "credentials", "cookie", "set-cookie",
})
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=\-]{8,}")


class Redactor:
    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        if "earer" in text or "EARER" in text:
            text = _BEARER.sub(r"\1" + REDACTED, text)
        return text


def redact_fields(value: Any) -> Any:
    """A copy of `value` where every secret-named field's value is hidden."""
    if isinstance(value, dict):
        return {k: (REDACTED if isinstance(k, str) and k.lower() in SECRET_FIELDS
                    and v is not None else redact_fields(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_fields(v) for v in value]
    return value


class JsonFormatter(logging.Formatter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                 + f".{int(record.msecs):03d}Z",
                 "level": record.levelname.lower(), "logger": record.name,
                 "msg": record.getMessage()}
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key != "fields":
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return self._redact(orjson.dumps(redact_fields(entry), default=str).decode())


class TextFormatter(logging.Formatter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, "fields", None)
        if fields:
            fields = redact_fields(fields)
            text += " " + " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
        return self._redact(text)


def log_handler(log_format: str, secrets: Iterable[str],
                stream: IO[str] | None = None) -> logging.Handler:
    """A handler writing redacted JSON lines (or text) to `stream` (stderr)."""
    redact = Redactor(secrets)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(redact) if log_format == "json" else TextFormatter(redact))
    return handler


def configure_logging(log_format: str, level: str, secrets: Iterable[str]) -> Redactor:
    handler = log_handler(log_format, secrets)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").disabled = True
    return handler.formatter._redact  # type: ignore[union-attr]
