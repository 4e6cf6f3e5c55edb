"""Each instance's snapshot of the API keys: a dict lookup by digest, rotated-out
secrets until their grace ends, and a database that stops answering keeps the
last snapshot instead of locking everyone out (or letting a revoked key in)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time

from proxy.state.api_keys import KeyRecord, KeyStoreDown
from proxy.state.key_index import KeyIndex


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Store:
    """The KeyStore interface in memory, able to fail."""

    def __init__(self) -> None:
        self.records: list[KeyRecord] = []
        self.counter = 0
        self.down = False
        self.touched: dict[str, float] = {}

    def put(self, **fields) -> None:
        self.counter += 1
        now = time.time()
        record = KeyRecord(spec=fields.pop("spec", {}), created_at=now, updated_at=now,
                           seq=self.counter, **fields)
        self.records = [r for r in self.records if r.name != record.name] + [record]

    async def seq(self) -> int:
        if self.down:
            raise KeyStoreDown("the key database failed: gone")
        return self.counter

    async def all(self) -> list[KeyRecord]:
        return list(self.records)

    async def touch(self, used: dict[str, float]) -> None:
        self.touched.update(used)


async def test_lookup_rotation_grace_revocation_and_an_outage(caplog):
    store = Store()
    store.put(name="a", digest=digest("gw-one"), prefix="gw-one", spec={"rpm": 5})
    index = KeyIndex(store, poll=0.01, touch=0.01)
    await index.start()
    try:
        key = index.lookup(bytes.fromhex(digest("gw-one")))
        assert key.name == "a" and key.rpm == 5 and key.source == "api" and index.any
        assert index.lookup(bytes.fromhex(digest("gw-other"))) is None
        store.put(name="a", digest=digest("gw-two"), prefix="gw-two", spec={"rpm": 5},
                  previous_digest=digest("gw-one"), previous_until=time.time() + 0.2)
        await asyncio.sleep(0.05)
        assert index.lookup(bytes.fromhex(digest("gw-two"))).name == "a"
        assert index.lookup(bytes.fromhex(digest("gw-one"))).name == "a"  # grace
        await asyncio.sleep(0.25)
        assert index.lookup(bytes.fromhex(digest("gw-one"))) is None  # grace over
        with caplog.at_level(logging.ERROR, "gatewise.keys"):
            store.down = True
            store.put(name="a", digest=digest("gw-two"), prefix="gw-two", revoked_at=1.0)
            await asyncio.sleep(0.1)
            assert index.lookup(bytes.fromhex(digest("gw-two"))) is not None  # the snapshot
            assert [r.getMessage() for r in caplog.records] == [
                "cannot read API keys (the key database failed: gone); serving the last "
                "snapshot"]  # said once, not every poll
            store.down = False
            await asyncio.sleep(0.05)
        assert index.lookup(bytes.fromhex(digest("gw-two"))) is None  # revoked, seen now
        assert index.any and index.has_name("a") and "a" not in index.by_name
        store.put(name="b", digest=digest("gw-b"), prefix="gw-b", spec={"rpm": "many"})
        await asyncio.sleep(0.05)
        assert index.lookup(bytes.fromhex(digest("gw-b"))) is None  # unreadable: refused
    finally:
        await index.close()
    assert "a" in store.touched  # last-used times were written
