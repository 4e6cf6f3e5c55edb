"""gatewise: an OpenAI-compatible reverse proxy for LLM APIs."""

__version__ = "0.1.0"
