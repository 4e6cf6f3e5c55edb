"""Logging: JSON lines (or readable text), with secrets redacted.

Redaction works three ways, on the finished line (exception text included):
by value (every credential loaded from the config: `GatewayConfig.secrets()`),
by field name (a field called `api_key`, `authorization`, ... never shows its
value), and by shape (`Bearer <token>`, so a client key, which the config keeps
only as a hash, is hidden too if anything ever echoes an Authorization header).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Iterable
from typing import IO, Any

import orjson

from proxy.core.redact import REDACTED, Redactor

_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message"}
SECRET_FIELDS = frozenset({
    "api_key", "api-key", "x-api-key", "apikey", "authorization", "proxy-authorization",
    "x-goog-api-key", "password", "secret", "client_secret", "token", "access_token",
    "refresh_token", "admin_key", "key_value", "credentials", "cookie", "set-cookie",
})


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
        self._second = -1
        self._stamp = ""

    def _timestamp(self, created: float, msecs: float) -> str:
        second = int(created)
        if second != self._second:  # one strftime a second, not one a line
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int(msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": self._timestamp(record.created, record.msecs),
                 "level": record.levelname.lower(), "logger": record.name,
                 "msg": record.getMessage()}
        fields = getattr(record, "fields", None)
        if fields is not None and not record.exc_info:
            # A structured line (access, attempt): its fields are all there is. Flat
            # values under names that are not secret need no field redaction.
            entry.update(fields)
            if not SECRET_FIELDS.isdisjoint(fields) or any(
                    isinstance(v, (dict, list)) for v in fields.values()):
                entry = redact_fields(entry)
            return self._redact(orjson.dumps(entry, default=str).decode())
        if fields:
            entry.update(fields)
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key != "fields":
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return self._redact(orjson.dumps(redact_fields(entry), default=str).decode())


class BatchingStreamHandler(logging.StreamHandler):
    """Lines logged during one turn of the event loop go out in one write: a busy
    gateway pays one syscall a loop turn for its access log, not one a line.
    Outside a running loop (start-up, shutdown, threads) a line is written at once."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._scheduled = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 — logging must never break a request
            self.handleError(record)
            return
        self._pending.append(line)
        if self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._write_pending()
            return
        if threading.current_thread() is not threading.main_thread():
            self._write_pending()
            return
        self._scheduled = True
        loop.call_soon(self._write_pending)

    def _write_pending(self) -> None:
        with self.lock:
            self._scheduled = False
            if not self._pending:
                return
            data = "\n".join(self._pending) + "\n"
            self._pending.clear()
            try:
                self.stream.write(data)
                self.stream.flush()
            except Exception:  # noqa: BLE001
                pass

    def flush(self) -> None:
        self._write_pending()
        super().flush()


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
    handler = BatchingStreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(redact) if log_format == "json" else TextFormatter(redact))
    return handler


def remember_secrets(secrets: Iterable[str]) -> None:
    """A reloaded config's credentials: every gatewise log handler hides them too."""
    secrets = list(secrets)
    for handler in logging.getLogger().handlers:
        redact = getattr(handler.formatter, "_redact", None)
        if isinstance(redact, Redactor):
            redact.add(secrets)


def configure_logging(log_format: str, level: str, secrets: Iterable[str]) -> Redactor:
    # Our lines never print the caller's file and line, thread or process: don't make
    # every record look them up (findCaller walks the stack on each call).
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = log_handler(log_format, secrets)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").disabled = True
    return handler.formatter._redact  # type: ignore[union-attr]
