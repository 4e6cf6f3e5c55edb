"""Token usage: what an upstream bills, in OpenAI's terms, whatever its wire format."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

#: more than any request can use (context windows are millions at most): a larger
#: count from an upstream is a bug of its own, and must not wreck a budget
MAX_TOKENS = 10**9


def token_count(value: Any) -> int:
    """A token count from an upstream, as an int in [0, MAX_TOKENS]; 0 for anything
    that is not a number (upstream JSON is untrusted: strings, null, NaN, 1e300): a
    string never becomes a ValueError mid-request, a negative never a credit."""
    if type(value) is int:  # the common case, first
        return value if 0 <= value <= MAX_TOKENS else (0 if value < 0 else MAX_TOKENS)
    if isinstance(value, float) and math.isfinite(value):
        return min(max(int(value), 0), MAX_TOKENS)
    return 0


@dataclass(slots=True)
class Usage:
    """Token usage as OpenAI reports it; what the upstream bills. Counts read from an
    upstream go through `token_count` first."""

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
        prompt = usage.get("prompt_tokens")
        completion = usage.get("completion_tokens")
        prompt_details = usage.get("prompt_tokens_details")
        completion_details = usage.get("completion_tokens_details")
        cached = prompt_details.get("cached_tokens") \
            if prompt_details.__class__ is dict else None
        reasoning = completion_details.get("reasoning_tokens") \
            if completion_details.__class__ is dict else None
        # On every response: plain in-range ints (all there ever are) skip the call.
        return cls(
            prompt_tokens=prompt if prompt.__class__ is int and 0 <= prompt <= MAX_TOKENS
            else token_count(prompt),
            completion_tokens=completion if completion.__class__ is int
            and 0 <= completion <= MAX_TOKENS else token_count(completion),
            cached_tokens=cached if cached.__class__ is int and 0 <= cached <= MAX_TOKENS
            else token_count(cached),
            reasoning_tokens=reasoning if reasoning.__class__ is int
            and 0 <= reasoning <= MAX_TOKENS else token_count(reasoning),
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
