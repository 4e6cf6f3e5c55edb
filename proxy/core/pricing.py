"""What a request may cost before it runs, and what it did cost after.

Prices live in the model table (proxy/config/catalog.py, overridable per target);
this module only estimates tokens and applies `ModelInfo.cost`. The estimate
is computed once per exchange and kept in `ex.estimate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from proxy.config.types import ModelConfig, TargetConfig
    from proxy.core.usage import Usage

DEFAULT_MAX_OUTPUT = 4096  # when neither the request nor the model table bounds the output
_IMAGE_TOKENS = 1105  # OpenAI's high-detail 1024x1024 image, a fair upper-middle guess
_PER_MESSAGE = 4
_PICTURES = frozenset({"image_url", "input_image", "image", "file", "input_file"})


@dataclass(frozen=True, slots=True)
class Estimate:
    prompt_tokens: int
    max_output: int | None  # per choice, as the client asked; None: the target's limit
    choices: int = 1  # `n`: every choice is generated, and billed

    def output_for(self, target: TargetConfig) -> int:
        """The output a rate limit expects: the cap the upstream is told (its default
        when the client sets none), for every choice."""
        per = self.max_output
        if per is None:
            info = target.info
            per = info.default_max_tokens or info.max_output or DEFAULT_MAX_OUTPUT
        return per * self.choices

    def billable_output(self, target: TargetConfig) -> int:
        """The most output the upstream may bill: every choice at the client's cap, or
        at the model's max_output when the client sets none (a default the gateway
        sends, e.g. Anthropic's, may grow by a thinking budget: not a bound)."""
        per = self.max_output
        if per is None:
            info = target.info
            per = info.max_output or info.default_max_tokens or DEFAULT_MAX_OUTPUT
        return per * self.choices

    def tokens(self, model: ModelConfig) -> int:
        """Prompt plus the most output any target of the model could produce."""
        if self.max_output is not None and model.targets:  # the same for every target
            return self.prompt_tokens + self.max_output * self.choices
        outputs = [self.output_for(t) for t in model.targets] or [DEFAULT_MAX_OUTPUT]
        return self.prompt_tokens + max(outputs)


def _weight(text: str) -> int:
    """Characters, a non-ASCII one counted four times: about four characters make a
    token in English, while most other scripts need a token or more per character
    (a plain length would estimate Chinese four times too low)."""
    if text.isascii():  # O(1) in CPython: the common case costs nothing more
        return len(text)
    return len(text) + 3 * (len(text) - len(text.encode("ascii", "ignore")))


def _walk(value: Any) -> tuple[int, int]:
    """(weighted characters, pictures) of every string in a JSON value; images and
    files count as pictures, their data not at all. Depth is bounded at parse."""
    if isinstance(value, str):
        return _weight(value), 0
    chars = pictures = 0
    if isinstance(value, dict):
        kind = value.get("type")
        if kind in _PICTURES:
            return 0, 1
        if kind == "input_audio":
            audio = value.get("input_audio")
            data = audio.get("data") if isinstance(audio, dict) else None
            return (len(data) // 8 if isinstance(data, str) else 0), 0
        items = value.values()
    elif isinstance(value, list):
        items = value
    else:
        return 0, 0
    for item in items:
        if isinstance(item, str):
            chars += _weight(item)
        elif isinstance(item, (dict, list)):
            c, p = _walk(item)
            chars += c
            pictures += p
    return chars, pictures


def estimate_body(body: dict[str, Any]) -> Estimate:
    """Every string the upstream reads as prompt (messages with every field, tools,
    functions, the response schema) at about four characters a token, plus per
    message and picture overheads; and the output cap and the number of choices."""
    chars = pictures = 0
    messages = body.get("messages")
    count = 0
    if isinstance(messages, list):
        count = len(messages)
        for message in messages:
            if not isinstance(message, dict):
                continue
            if len(message) == 2:  # the usual {"role", "content"} of two strings, at once
                content = message.get("content")
                if content.__class__ is str and message.get("role").__class__ is str:
                    chars += len(content) if content.isascii() else _weight(content)
                    continue
            for key, value in message.items():
                if isinstance(value, str):  # the common string content
                    if key != "role":  # (counted in the per-message overhead)
                        # _weight, inlined for the common ASCII text
                        chars += len(value) if value.isascii() else _weight(value)
                else:
                    c, p = _walk(value)
                    chars += c
                    pictures += p
    for name in ("tools", "functions", "response_format", "tool_choice", "prediction"):
        value = body.get(name)
        if value:
            chars += _walk(value)[0]
    prompt = (chars + 3) // 4 + count * _PER_MESSAGE + pictures * _IMAGE_TOKENS + 3
    cap = body.get("max_completion_tokens") or body.get("max_tokens")
    if not isinstance(cap, int) or isinstance(cap, bool) or cap <= 0:
        cap = None
    n = body.get("n")
    choices = n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1
    return Estimate(prompt, cap, choices)


def max_cost(est: Estimate, targets: list[TargetConfig] | tuple[TargetConfig, ...]) -> float:
    """The most the request can cost on the priciest of `targets`."""
    best = 0.0
    prompt = est.prompt_tokens
    for target in targets:
        c = target.info.cost(prompt, est.billable_output(target))
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


def reachable(model: ModelConfig, models: Mapping[str, ModelConfig]) -> tuple[TargetConfig, ...]:
    """Every target a request for `model` may end up on: its own, then its configured
    fallbacks' (a reservation must cover the priciest)."""
    names = dict.fromkeys((*model.fallbacks, *model.context_window_fallbacks))
    return model.targets + tuple(t for n in names if n in models for t in models[n].targets)


def asked_fallbacks(body: dict[str, Any], models: Mapping[str, ModelConfig]
                    ) -> tuple[TargetConfig, ...]:
    """The targets of fallback models the request names itself (checked later)."""
    asked = body.get("fallbacks")
    if asked is None:
        extra = body.get("extra_body")
        asked = extra.get("fallbacks") if isinstance(extra, dict) else None
    if not isinstance(asked, list):
        return ()
    return tuple(t for n in asked if isinstance(n, str) and n in models
                 for t in models[n].targets)
