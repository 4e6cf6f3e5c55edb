"""The model table: context windows, output limits, capabilities and prices.

Shipped with the package (`model_table.yaml`), looked up by upstream model
name (exact, then longest prefix), and overridable per target in the config.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources
from typing import Any, Mapping

import yaml

CAPABILITIES = ("tools", "vision", "json_schema", "reasoning")


@dataclass(frozen=True, slots=True)
class ModelInfo:
    context_window: int | None = None
    max_output: int | None = None
    default_max_tokens: int | None = None
    input: float | None = None  # USD per million prompt tokens
    output: float | None = None  # USD per million completion tokens
    cached_input: float | None = None  # USD per million cached prompt tokens
    cache_write: float | None = None  # USD per million prompt tokens written to a cache
    cache_write_1h: float | None = None  # the same for 1-hour cache entries (Anthropic)
    capabilities: frozenset[str] = frozenset(CAPABILITIES)  # unknown models: assume able

    @property
    def priced(self) -> bool:
        return self.input is not None and self.output is not None

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0,
             cache_write: int = 0, cache_write_1h: int = 0) -> float:
        """USD for real usage: cache reads at the cached price and cache writes at the
        write price (1-hour writes at theirs) where one is known, else at the input price.
        `cache_write` includes `cache_write_1h`; both are part of `prompt_tokens`."""
        price_in, price_out = self.input, self.output
        if price_in is None or price_out is None:  # not priced
            return 0.0
        if not (cached_tokens or cache_write or cache_write_1h):
            # the common case: the sum below with its zero terms left out (the same float)
            return (prompt_tokens * price_in + completion_tokens * price_out) / 1_000_000
        cached = min(cached_tokens, prompt_tokens)
        writes = min(cache_write, prompt_tokens - cached)
        long_writes = min(cache_write_1h, writes)
        cached_price = self.cached_input if self.cached_input is not None else self.input
        write_price = self.cache_write if self.cache_write is not None else self.input
        long_price = self.cache_write_1h if self.cache_write_1h is not None else write_price
        return ((prompt_tokens - cached - writes) * self.input + cached * cached_price
                + (writes - long_writes) * write_price + long_writes * long_price
                + completion_tokens * self.output) / 1_000_000

    def with_overrides(self, overrides: Mapping[str, Any]) -> "ModelInfo":
        if not overrides:
            return self
        values = dict(overrides)
        if "capabilities" in values:
            values["capabilities"] = frozenset(values["capabilities"])
        return replace(self, **values)


def _parse(entry: Mapping[str, Any]) -> ModelInfo:
    values = dict(entry)
    values["capabilities"] = frozenset(values.get("capabilities", CAPABILITIES))
    return ModelInfo(**values)


@lru_cache(maxsize=1)
def builtin_table() -> Mapping[str, ModelInfo]:
    text = resources.files("proxy.config").joinpath("model_table.yaml").read_text(encoding="utf-8")
    return {name: _parse(entry) for name, entry in yaml.safe_load(text).items()}


def lookup(model: str, table: Mapping[str, ModelInfo] | None = None) -> ModelInfo:
    """The table's entry for an upstream model name, or an unknown (unpriced) one."""
    table = builtin_table() if table is None else table
    info = table.get(model)
    if info is not None:
        return info
    best = ""
    for name in table:
        if model.startswith(name) and len(name) > len(best):
            best = name
    return table[best] if best else ModelInfo()
