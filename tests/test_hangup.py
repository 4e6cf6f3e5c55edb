"""SIGHUP's latch (proxy/server/cli.py): one signal, one reload, from the first line on."""

from __future__ import annotations

from proxy.server.cli import Hangup
from proxy.server.gateway import GATEWAY


class Reloader:
    def __init__(self) -> None:
        self.causes: list[str] = []

    def reload_soon(self, cause: str) -> None:
        self.causes.append(cause)


class Live:
    def __init__(self) -> None:
        self.reloader = Reloader()


async def test_hangups_before_start_up_make_one_reload_at_start_up():
    hangup, live = Hangup(), Live()
    hangup()  # the plain handler, before the loop...
    hangup()  # ...and the same signal again through the loop's pipe (the bug: two reloads)
    assert live.reloader.causes == []
    await hangup.open({GATEWAY: live})
    assert live.reloader.causes == ["SIGHUP"]


async def test_after_start_up_every_hangup_reloads():
    hangup, live = Hangup(), Live()
    await hangup.open({GATEWAY: live})
    assert live.reloader.causes == []  # none pending: no reload at start-up
    hangup()
    hangup()
    assert live.reloader.causes == ["SIGHUP", "SIGHUP"]
