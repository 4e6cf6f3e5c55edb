"""The config of the Responses API (`POST /v1/responses`): how long stored
responses are kept, and which providers take a Responses request natively.

A provider's `responses: native | translate` decides per upstream; left out,
only `type: openai` at OpenAI's own URL is native, since OpenAI-compatible
servers mostly speak chat completions only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxy.config.reader import Problems, Section, join

#: OpenAI's own API: native by default
OPENAI_URL = "https://api.openai.com/v1"
MODES = ("native", "translate")
NATIVE_TYPES = ("openai",)
DEFAULT_RETENTION = 30 * 86400.0  # OpenAI keeps stored responses 30 days


@dataclass(frozen=True, slots=True)
class ResponsesConfig:
    retention: float = DEFAULT_RETENTION  # seconds a stored response is kept


def parse_responses(raw: Any, problems: Problems) -> ResponsesConfig:
    s = Section(raw, "responses", problems)
    retention = s.duration("retention", DEFAULT_RETENTION)
    if s.has("retention") and retention is not None and retention <= 0:
        problems.add("responses.retention", "must be longer than 0s")
        retention = DEFAULT_RETENTION
    s.finish()
    return ResponsesConfig(retention=retention or DEFAULT_RETENTION)


def parse_mode(s: Section, kind: str | None) -> str | None:
    """A provider's `responses:` field; None when left out (see `is_native`)."""
    mode = s.str("responses", None, choices=MODES)
    if mode == "native" and kind is not None and kind not in NATIVE_TYPES:
        s.problems.add(join(s.path, "responses"),
                       f"'native' needs a provider of type {', '.join(NATIVE_TYPES)}; "
                       f"a {kind} upstream has no Responses API")
        return None
    return mode


def is_native(provider: Any) -> bool:
    """A ProviderConfig (proxy/config/types.py): whether a Responses request goes to this provider as is (`{base_url}/responses`)."""
    if provider.responses is not None:
        return provider.responses == "native"
    return provider.type in NATIVE_TYPES and provider.base_url == OPENAI_URL
