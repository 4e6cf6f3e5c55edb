"""One translator per upstream wire format, registered by provider `type`."""

from __future__ import annotations

from translators.anthropic import AnthropicTranslator
from translators.azure import AzureTranslator
from translators.base import Translator
from translators.gemini import GeminiTranslator
from translators.mock import MockTranslator
from translators.ollama import OllamaTranslator
from translators.openai import OpenAITranslator

PROVIDER_TYPES: dict[str, type[Translator]] = {
    "openai": OpenAITranslator,
    "mock": MockTranslator,
    "anthropic": AnthropicTranslator,
    "gemini": GeminiTranslator,
    "ollama": OllamaTranslator,
    "azure": AzureTranslator,
}

__all__ = ["PROVIDER_TYPES", "Translator"]
