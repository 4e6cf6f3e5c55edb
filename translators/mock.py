"""The offline provider (`type: mock`): a deterministic OpenAI-format upstream
answered in-process, so gatewise serves with no keys and no network.

The in-process upstream itself lives in proxy/engine/mock_upstream.py. It
echoes the last user message, counts tokens plausibly (about four characters
a token), honours `max_tokens`, streams a chunk per word, and can wait a
configured latency before the first token and between chunks. It speaks the
OpenAI wire format, so the same OpenAI translator reads it: the offline path
exercises the real dispatch, framing and usage code.
"""

from __future__ import annotations

from translators.base import Option
from translators.openai import OpenAITranslator


class MockTranslator(OpenAITranslator):
    default_base_url = "mock://offline"
    requires_api_key = False
    in_process = True
    provider_options = {
        "latency_ms": Option(float, 0.0, help="wait before the first token"),
        "chunk_delay_ms": Option(float, 0.0, help="wait between stream chunks"),
    }
