"""Gemini's thought signatures are opaque: whatever string the upstream sends comes
back to it byte for byte, inside the OpenAI tool call id (item: a signature that
was not standard base64 used to be dropped, and Gemini 3 then refused the turn)."""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fakes.gemini_upstream import Reply
from tests.test_gemini import TOOLS, client, fake  # noqa: F401 — the fixtures
from translators.gemini_request import call_id, split_call_id

SAFE_ID = re.compile(r"^[A-Za-z0-9_-]+$")
SHAPES = {
    "standard": base64.b64encode(bytes(range(48))).decode(),
    "urlsafe": base64.urlsafe_b64encode(b"\xfb\xff" * 30).decode(),
    "unpadded": base64.b64encode(b"abcd" * 10 + b"e").decode().rstrip("="),
    "non-canonical bits": "QR==",  # decodes to b"A", which re-encodes as "QQ=="
    "text": "v2.sig:ZXhhbXBsZQ/with spaces+and=signs",
    "non-ascii": "签名-Σ-✓",
}


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1), st.sampled_from(["call_" + "a" * 24, "fc_9x", "x"]))
def test_any_signature_rides_in_a_safe_id_and_comes_back_exactly(signature, base):
    openai_id = call_id(base, signature)
    assert SAFE_ID.match(openai_id)
    assert split_call_id(openai_id) == (base, signature)


def test_ids_issued_before_keep_working():
    raw = bytes(range(200))
    old = "call_" + "a" * 24 + "__ts_" + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    assert split_call_id(old) == ("call_" + "a" * 24, base64.b64encode(raw).decode())


@pytest.mark.parametrize("shape", list(SHAPES))
async def test_signature_of_any_shape_reaches_gemini_unchanged(fake, client, shape):
    fake.new_signature = lambda: SHAPES[shape]
    fake.script(Reply(text="", tool_calls=[{"name": "get_weather", "args": {"city": "Oslo"}}]),
                Reply(text="Done."))
    messages = [{"role": "user", "content": "Oslo?"}]
    first = await client.chat.completions.create(model="pro3", messages=messages, tools=TOOLS)
    call = first.choices[0].message.tool_calls[0]
    assert SAFE_ID.match(call.id)
    messages += [first.choices[0].message.model_dump(exclude_none=True, exclude={"parsed"}),
                 {"role": "tool", "tool_call_id": call.id, "content": "cold"}]
    second = await client.chat.completions.create(model="pro3", messages=messages, tools=TOOLS)
    assert second.choices[0].message.content == "Done."
    assert fake.last["contents"][1]["parts"][0]["thoughtSignature"] == SHAPES[shape]
