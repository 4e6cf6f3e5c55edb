"""What translators share: reading upstream answers, credentials, error classification."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.config.types import ProviderConfig, TargetConfig
from proxy.core.errors import GatewayError, UpstreamError
from translators import PROVIDER_TYPES
from translators.common import error_object, error_text, upstream_json
from translators.embeddings import EmbeddingsRequest
from translators.embeddings_providers import EMBEDDINGS, embeddings_translators

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


@given(_json)
def test_error_object_and_text(parsed):
    inner = parsed.get("error") if isinstance(parsed, dict) else None
    assert error_object(parsed) == (inner if isinstance(inner, dict) else {})
    assert error_text(parsed) == (inner.get("message") if isinstance(inner, dict) else
                                  inner if isinstance(inner, str) else None)
    assert error_text({"error": "quota"}) == "quota" and error_object({"error": "quota"}) == {}


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


# --- embeddings translators are members of their provider type's family --------------

_EMBED = EmbeddingsRequest("hi", ("hi",), None, True, "float", None, None)
_ERROR_BODIES = st.one_of(
    st.binary(max_size=20),
    st.fixed_dictionaries({"error": st.fixed_dictionaries({}, optional={
        "message": st.text(max_size=20), "type": st.sampled_from(
            ["rate_limit_error", "invalid_request_error", "overloaded_error"]),
        "code": st.sampled_from(["429", "context_length_exceeded", "content_filter", 5]),
        "status": st.sampled_from(["RESOURCE_EXHAUSTED", "INVALID_ARGUMENT", "UNAVAILABLE"]),
    })}).map(orjson.dumps))


def _fields(err):
    return (err.error_class, err.status, err.message, err.type, err.code, err.param,
            err.retry_after, err.upstream_status)


@pytest.mark.parametrize("kind", sorted(EMBEDDINGS))
@given(status=st.sampled_from([400, 401, 404, 408, 429, 500, 503, 529]), body=_ERROR_BODIES)
def test_embeddings_errors_are_classified_as_their_chat_siblings(kind, status, body):
    provider = ProviderConfig("p", kind, "https://up.example", api_key="k-123",
                              options={"api_version": "2024-10-21"} if kind == "azure" else {})
    chat = PROVIDER_TYPES[kind](provider)
    embed = EMBEDDINGS[kind](provider, _EMBED)
    headers = {"retry-after": "3"}
    assert _fields(embed.error(status, headers, body)) == _fields(chat.error(status, headers,
                                                                              body))
    assert embed.auth_headers() == chat.auth_headers()


@pytest.mark.parametrize("options", [{"api_version": "2024-10-21"},
                                     {"api_style": "v1", "api_version": "preview"},
                                     {"api_style": "v1", "api_version": None}])
def test_azure_builds_one_url_for_chat_and_embeddings(options):
    provider = ProviderConfig("az", "azure", "https://res.openai.azure.com", api_key="k",
                              options=options)
    target = TargetConfig("az", "dep-1")
    chat = PROVIDER_TYPES["azure"](provider).request(_CHAT, target, stream=False).url
    embed = EMBEDDINGS["azure"](provider, _EMBED).request({}, target, stream=False).url
    assert embed == chat.replace("/chat/completions", "/embeddings")


def test_a_provider_type_without_embeddings_refuses_before_sending():
    provider = ProviderConfig("claude", "anthropic", "https://up.example", api_key="k")
    translator = embeddings_translators(_EMBED)(PROVIDER_TYPES["anthropic"](provider))
    with pytest.raises(GatewayError) as err:
        translator.request({}, TargetConfig("claude", "claude-x"), stream=False)
    assert (err.value.status, err.value.code, err.value.param) == (400, "unsupported_model",
                                                                   "model")
    assert "'claude/claude-x'" in err.value.message


@pytest.mark.parametrize("chunk", [b'{"choices":[5]}', b'{"choices":"x"}',
                                   b'{"choices":[{"index":0,"delta":"x"}]}'])
def test_a_malformed_openai_chunk_is_the_upstreams_protocol_error(chunk):
    """A compatible server's chunk that is not a chunk's shape is the upstream's fault
    (502, may fall back), never an AttributeError inside the gateway (a 500)."""
    from proxy.core.errors import ErrorClass
    from proxy.core.framing import Event
    provider = ProviderConfig("p", "openai", "https://up.example", api_key="k")
    translator = PROVIDER_TYPES["openai"](provider)
    translator.request({**_CHAT, "stream": True}, TargetConfig("p", "m"), stream=True)
    if chunk.endswith(b'"x"}]}'):  # a delta that is not an object only matters unparsed
        translator.stream(Event(None, chunk))
        assert not translator.state.has_content
        return
    with pytest.raises(UpstreamError) as err:
        translator.stream(Event(None, chunk))
    assert (err.value.error_class, err.value.status) == (ErrorClass.SERVER, 502)
