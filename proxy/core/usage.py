"""Token usage: what an upstream bills, in OpenAI's terms, whatever its wire format."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping


def token_count(value: Any) -> int:
    """A count an upstream reported, or 0 when it is not one: a string or a negative
    number never becomes a ValueError mid-request, or a negative cost."""
    if type(value) is int:
        return value if value > 0 else 0
    if type(value) is float and value.is_integer() and value > 0:
        return int(value)  # 12.0 from a lenient server
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
            cached_tokens=token_count(prompt_details.get("cached_tokens")
                                      if isinstance(prompt_details, dict) else None),
            reasoning_tokens=token_count(completion_details.get("reasoning_tokens")
                                         if isinstance(completion_details, dict) else None),
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
