"""What one Responses request shares between its parts: the checked request,
whether the attempt being relayed is native, and the final Response to store.

The handler makes one; the per-attempt adapter (responses_native.py) and the
stream egress (responses_stream.py) both hold it. Each attempt's adapter sets
`native` when it builds its upstream request; only the attempt that answers
reaches the client, and it is always the last to have done so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from proxy.server.responses_request import ResponsesRequest


@dataclass(slots=True)
class NativeStream:
    """A native upstream's stream as far as it went: for `response.failed` after a cut."""

    response: dict[str, Any] | None = None  # from response.created
    last_sequence: int = -1
    done_items: dict[int, dict[str, Any]] = field(default_factory=dict)  # output_index → item
    deltas: int = 0  # content deltas seen: about one token each


@dataclass(slots=True)
class ResponsesCall:
    req: ResponsesRequest
    native: bool = False  # the latest attempt goes to a native Responses upstream
    stream_state: NativeStream | None = None
    final: dict[str, Any] | None = None  # the Response as the client got it, to store
