"""The helpers every translator shares: reading upstream answers."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.config.types import ProviderConfig, TargetConfig
from proxy.core.errors import UpstreamError
from translators import PROVIDER_TYPES
from translators.common import upstream_json

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.floats(allow_nan=False) |
    st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10)


@given(st.binary(max_size=64) | _json.map(orjson.dumps))
def test_upstream_json_is_an_object_or_a_protocol_error(data):
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        parsed = ValueError
    if isinstance(parsed, dict):
        assert upstream_json("up", data, "a stream event") == parsed
        return
    with pytest.raises(UpstreamError) as err:
        upstream_json("up", data, "a stream event")
    assert (err.value.status, err.value.code) == (502, "upstream_bad_response")
    assert err.value.message == ("Upstream provider 'up' sent an invalid response: a stream "
                                 "event is not " + ("JSON." if parsed is ValueError else
                                                    "an object."))


# --- one place per provider type says where its key goes ------------------------------

_KEY_HEADER = {"openai": ("authorization", "Bearer k-123"), "azure": ("api-key", "k-123"),
               "anthropic": ("x-api-key", "k-123"), "gemini": ("x-goog-api-key", "k-123"),
               "ollama": ("authorization", "Bearer k-123")}
_CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("kind", sorted(_KEY_HEADER))
def test_auth_headers_are_the_ones_every_request_carries(kind):
    provider = ProviderConfig("p", kind, "https://up.example", api_key="k-123",
                              headers={"x-team": "blue"},
                              options={"api_version": "2024-10-21"} if kind == "azure" else {})
    translator = PROVIDER_TYPES[kind](provider)
    name, value = _KEY_HEADER[kind]
    auth = translator.auth_headers()
    assert auth[name] == value and auth["x-team"] == "blue" and "content-type" not in auth
    assert [h for h in auth if "key" in h or h == "authorization"] == [name]
    sent = translator.request(_CHAT, TargetConfig("p", "model-1"), stream=False)
    assert sent.headers == {"content-type": "application/json", **auth}
    assert "k-123" not in sent.url  # a key travels in a header only


def test_anthropic_auth_headers_name_the_api_version():
    provider = ProviderConfig("a", "anthropic", "https://up.example", api_key="k",
                              options={"anthropic_beta": "tools-1"})
    assert PROVIDER_TYPES["anthropic"](provider).auth_headers() == {
        "anthropic-version": "2023-06-01", "anthropic-beta": "tools-1", "x-api-key": "k"}


def test_no_key_no_credential_header():
    provider = ProviderConfig("o", "ollama", "http://localhost:11434")
    assert PROVIDER_TYPES["ollama"](provider).auth_headers() == {}
