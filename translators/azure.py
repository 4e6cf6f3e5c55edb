"""Azure OpenAI (`type: azure`): OpenAI's wire format at Azure's URLs.

Two URL styles, chosen by the provider's `api_style`, for each endpoint
(`chat/completions`, `embeddings`):

- `deployments` (default): `{base_url}/openai/deployments/{deployment}/
  {endpoint}?api-version={api_version}`, the deployment being the target's
  `model`;
- `v1`: `{base_url}/openai/v1/{endpoint}`, the deployment named by the
  body's `model` (Azure's newer, version-less API).

The key travels in the `api-key` header. The deployment name comes from the
config and must match a safe pattern before it enters the path. Everything
else is the OpenAI translator: Azure's prompt-filter preamble chunk
(`choices: []`) yields nothing, `finish_reason: content_filter` passes through
and a `content_filter` error code is classed CONTENT_FILTER.
See docs/providers/azure.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote

from proxy.core.errors import GatewayError, UpstreamError
from translators.base import Option
from translators.openai import OpenAIFamily, OpenAITranslator

#: Azure deployment names: letters, digits, '-', '_' and '.', at most 64 characters
SAFE_DEPLOYMENT = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$")
SAFE_VERSION = re.compile(r"^(\d{4}-\d{2}-\d{2}(-preview)?|preview|latest)$")
API_STYLES = ("deployments", "v1")


def _config_error(what: str) -> GatewayError:
    return GatewayError(500, f"The gateway's configuration for an Azure provider is not usable: "
                        f"{what}.", "server_error", code="gateway_config_error")


class AzureFamily(OpenAIFamily):
    """What every translator to Azure OpenAI shares: the key in `api-key`, Azure's URLs,
    OpenAI's error envelope less Azure's numeric codes."""

    default_base_url = None  # https://NAME.openai.azure.com, always configured
    requires_api_key = True
    provider_options: ClassVar[Mapping[str, Option]] = {
        "api_version": Option(str, "2024-10-21", help="the api-version query parameter",
                              pattern=SAFE_VERSION.pattern.strip("^$")),
        "api_style": Option(str, "deployments", help="'deployments' (the deployment in the "
                            "path) or 'v1' (the /openai/v1/ API, the deployment in the body)",
                            choices=API_STYLES),
    }
    model_pattern = SAFE_DEPLOYMENT

    def auth_headers(self) -> dict[str, str]:
        headers = dict(self.provider.headers)
        if self.provider.api_key:
            headers["api-key"] = self.provider.api_key
        return headers

    def azure_url(self, target, endpoint: str) -> str:
        """The URL of `endpoint` ("chat/completions", "embeddings") for the target's
        deployment, in the provider's API style; config that cannot be used safely is a 500."""
        options = self.provider.options
        style = options.get("api_style") or "deployments"
        deployment = target.model
        if not isinstance(deployment, str) or not SAFE_DEPLOYMENT.match(deployment):
            raise _config_error("a deployment name may hold letters, digits, '-', '_' and '.'")
        version = options.get("api_version")
        if version is not None and not SAFE_VERSION.match(version):
            raise _config_error(f"api_version must look like 2024-10-21, got {version!r}")
        if style == "v1":
            url = f"{self.provider.base_url}/openai/v1/{endpoint}"
            return url + f"?api-version={quote(version)}" if version in ("preview", "latest") \
                else url
        if style != "deployments":
            raise _config_error(f"api_style must be one of {', '.join(API_STYLES)}")
        return (f"{self.provider.base_url}/openai/deployments/{deployment}/{endpoint}"
                f"?api-version={quote(version or '2024-10-21')}")

    def classify(self, status: int, parsed: Any,
                 headers: Mapping[str, str] | None) -> UpstreamError:
        err = super().classify(status, parsed, headers)
        # Azure puts the HTTP status in `code` ("429", "401"): not a code a client can use.
        if err.code is not None and err.code.isdigit():
            err.code = None
        return err


class AzureTranslator(AzureFamily, OpenAITranslator):
    """Chat completions: the OpenAI chat translator at Azure's URL."""

    def url(self, target) -> str:
        return self.azure_url(target, "chat/completions")
