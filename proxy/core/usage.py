"""Token usage: what an upstream bills, in OpenAI's terms, whatever its wire format."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

#: more than any request can use (context windows are millions at most): a larger
#: count from an upstream is a bug of its own, and must not wreck a budget
MAX_TOKENS = 10**9
_COUNTS = ("prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens",
           "cache_write_tokens", "cache_write_1h_tokens")


def token_count(value: Any) -> int:
    """A token count from an upstream, as an int in [0, MAX_TOKENS]; 0 for anything
    that is not a number (upstream JSON is untrusted: strings, null, NaN, 1e300): a
    string never becomes a ValueError mid-request, a negative never a credit."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return min(max(value, 0), MAX_TOKENS)
    if isinstance(value, float) and math.isfinite(value):
        return min(max(int(value), 0), MAX_TOKENS)
    return 0


@dataclass(slots=True)
class Usage:
    """Token usage as OpenAI reports it; what the upstream bills."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # cache reads, part of prompt_tokens
    reasoning_tokens: int = 0
    # Prompt tokens written to a provider's prompt cache (Anthropic bills them above
    # the input price), part of prompt_tokens; the 1-hour ones are a part of those.
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    estimated: bool = False  # counted by the gateway (a stream cut short), not reported

    def __post_init__(self) -> None:
        """Every count an int in [0, MAX_TOKENS], whatever a translator passed on."""
        for name in _COUNTS:
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value <= MAX_TOKENS:
                setattr(self, name, token_count(value))

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def from_openai(cls, usage: Mapping[str, Any] | None) -> "Usage | None":
        if not isinstance(usage, dict):
            return None
        prompt_details = usage.get("prompt_tokens_details")
        completion_details = usage.get("completion_tokens_details")
        return cls(
            prompt_tokens=token_count(usage.get("prompt_tokens")),
            completion_tokens=token_count(usage.get("completion_tokens")),
            cached_tokens=token_count(prompt_details.get("cached_tokens"))
            if isinstance(prompt_details, dict) else 0,
            reasoning_tokens=token_count(completion_details.get("reasoning_tokens"))
            if isinstance(completion_details, dict) else 0,
        )

    def to_openai(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": self.reasoning_tokens, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0,
            },
        }
