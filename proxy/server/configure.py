"""gatewise's config: the generic loader (proxy/config/) with the translators' provider types.

Everything that reads a gatewise YAML file (the CLI, tests, the benchmark) goes
through here, so the provider types known to the config are exactly the
translators registered in `translators.PROVIDER_TYPES`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from proxy.config import load
from proxy.config.load import ConfigError
from proxy.config.types import GatewayConfig
from translators import PROVIDER_TYPES

__all__ = ["ConfigError", "GatewayConfig", "load_config", "parse_config"]


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> GatewayConfig:
    return load.load_config(path, env, provider_types=PROVIDER_TYPES)


def parse_config(text: str, env: Mapping[str, str], source: str = "<memory>") -> GatewayConfig:
    return load.parse_config(text, env, source, provider_types=PROVIDER_TYPES)
