"""One translator per upstream wire format, registered by provider `type`.

`PROVIDER_TYPES` holds each type's chat translator: the config reads a type's
options from it and health checks its credentials. The other endpoints'
translators are chosen per attempt through `Exchange.adapter`: embeddings by
type (embeddings_providers.EMBEDDINGS), legacy completions and functions over
the attempt's chat translator (completions.py, functions.py).
"""

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
