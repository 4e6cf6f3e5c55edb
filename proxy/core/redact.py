"""Redaction by value: every configured secret (`GatewayConfig.secrets()`) becomes
`[redacted]` wherever it appears, and so does anything shaped like a bearer token.

Two users: log lines (proxy/server/logs.py), and every error an upstream sent,
scrubbed once where translators build it (translators/base.py: upstreams do
echo keys, in any field), before a client, a log, a span, the ledger or the
cache can see it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxy.core.errors import GatewayError

REDACTED = "[redacted]"
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=\-]{8,}")


class Redactor:
    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def add(self, secrets: Iterable[str]) -> None:
        """Also hide these (a reload's new credentials; the old ones stay hidden too:
        requests in flight and earlier lines may still hold them)."""
        self._secrets = sorted({*self._secrets, *(s for s in secrets if s)}, key=len,
                               reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        if "earer" in text or "EARER" in text:
            text = _BEARER.sub(r"\1" + REDACTED, text)
        return text

    def error(self, err: "GatewayError") -> "GatewayError":
        """Scrub every string the error shows (message, type, param, code), in place."""
        for name in ("message", "type", "param", "code"):
            value = getattr(err, name)
            if isinstance(value, str):
                setattr(err, name, self(value))
        err.args = (err.message,)
        return err

