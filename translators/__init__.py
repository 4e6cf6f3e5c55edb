"""One translator per upstream wire format, registered by provider `type`."""

from __future__ import annotations

from translators.anthropic import AnthropicTranslator
from translators.base import Translator
from translators.mock import MockTranslator
from translators.openai import OpenAITranslator

PROVIDER_TYPES: dict[str, type[Translator]] = {
    "openai": OpenAITranslator,
    "mock": MockTranslator,
    "anthropic": AnthropicTranslator,
}

__all__ = ["PROVIDER_TYPES", "Translator"]
