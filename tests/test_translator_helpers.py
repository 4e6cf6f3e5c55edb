"""The helpers every translator shares: reading upstream answers."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.core.errors import UpstreamError
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
