"""What a request may cost before it runs, and what it did cost after.

Prices live in the model table (proxy/config/catalog.py, overridable per target);
this module only estimates tokens and applies `ModelInfo.cost`. The estimate
is computed once per exchange and kept in `ex.estimate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proxy.config.types import ModelConfig, TargetConfig
    from proxy.core.usage import Usage

DEFAULT_MAX_OUTPUT = 4096  # when neither the request nor the model table bounds the output
_IMAGE_TOKENS = 1105  # OpenAI's high-detail 1024x1024 image, a fair upper-middle guess
_PER_MESSAGE = 4


@dataclass(frozen=True, slots=True)
class Estimate:
    prompt_tokens: int
    max_output: int | None  # what the client asked for; None: the target's limit applies

    def output_for(self, target: TargetConfig) -> int:
        if self.max_output is not None:
            return self.max_output
        info = target.info
        return info.default_max_tokens or info.max_output or DEFAULT_MAX_OUTPUT

    def tokens(self, model: ModelConfig) -> int:
        """Prompt plus the most output any target of the model could produce."""
        if self.max_output is not None and model.targets:  # the same for every target
            return self.prompt_tokens + self.max_output
        outputs = [self.output_for(t) for t in model.targets] or [DEFAULT_MAX_OUTPUT]
        return self.prompt_tokens + max(outputs)


def _chars(content: Any) -> tuple[int, int]:
    if isinstance(content, str):
        return len(content), 0
    chars = images = 0
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict):
                kind = part.get("type")
                if kind == "text" and isinstance(part.get("text"), str):
                    chars += len(part["text"])
                elif kind in ("image_url", "input_image", "image"):
                    images += 1
                elif kind == "input_audio":
                    chars += len(str(part.get("input_audio", {}).get("data", ""))) // 8
    return chars, images


def estimate_body(body: dict[str, Any]) -> Estimate:
    """Prompt characters / 4 (+ per message and image overheads) and the output cap."""
    chars = images = 0
    messages = body.get("messages")
    count = 0
    if isinstance(messages, list):
        count = len(messages)
        for message in messages:
            if isinstance(message, dict):
                content = message.get("content")
                if isinstance(content, str):  # the common case, without a call
                    chars += len(content)
                else:
                    c, i = _chars(content)
                    chars += c
                    images += i
                calls = message.get("tool_calls")
                if calls:
                    chars += len(str(calls))
    tools = body.get("tools")
    if tools:
        chars += len(str(tools))
    prompt = (chars + 3) // 4 + count * _PER_MESSAGE + images * _IMAGE_TOKENS + 3
    cap = body.get("max_completion_tokens") or body.get("max_tokens")
    n = body.get("n")
    if not isinstance(cap, int) or isinstance(cap, bool) or cap <= 0:
        cap = None
    if cap is not None and isinstance(n, int) and n > 1:
        cap *= n
    return Estimate(prompt, cap)


def max_cost(est: Estimate, targets: list[TargetConfig] | tuple[TargetConfig, ...]) -> float:
    """The most the request can cost on the priciest of `targets`."""
    best = 0.0
    prompt = est.prompt_tokens
    for target in targets:
        c = target.info.cost(prompt, est.output_for(target))
        if c > best:  # noqa: PLR1730 — max(best, c) without the call
            best = c
    return best


def cost(usage: Usage | None, target: TargetConfig | None) -> float:
    if usage is None or target is None:
        return 0.0
    return target.info.cost(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens,
                            usage.cache_write_tokens, usage.cache_write_1h_tokens)


def is_free(target: TargetConfig) -> bool:
    info = target.info
    return info.priced and not info.input and not info.output
