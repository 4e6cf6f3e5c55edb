"""The page left open during a run: log in to /ui and poll its JSON every 2 s (and
the keys every 5 s), as the browser page does, from a thread of the bench."""

from __future__ import annotations

import http.client
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from common import BENCH

ADMIN_KEY = "bench-admin-key-0123456789abcdef"
SLO = "    slo: {latency_p95_ms: 1000, availability: 99.9%, window: 5m}\n"


def ui_config(workdir: Path, fmt: str) -> Path:
    """full-<fmt>.yaml with an admin key (so /ui is served) and SLOs on both models."""
    text = (BENCH / "configs" / f"full-{fmt}.yaml").read_text()
    for model in ("bench-json:\n", "bench-sse:\n"):
        text = text.replace(model, model + SLO, 1)
    path = workdir / f"full-{fmt}-ui.yaml"
    path.write_text(text + f"admin: {{key: {ADMIN_KEY}}}\n")
    return path


class UiPoller(threading.Thread):
    def __init__(self, url: str, every: float = 2.0) -> None:
        super().__init__(daemon=True, name="ui-poller")
        parts = urlsplit(url)
        self.host, self.port, self.origin = parts.hostname, parts.port, url
        self.every = every
        self.polls = 0
        self.errors = 0
        self.bytes = 0
        self.latency_ms: list[float] = []
        self._halt = threading.Event()

    def _login(self, conn: http.client.HTTPConnection) -> str:
        conn.request("POST", "/ui/login", body=f"key={ADMIN_KEY}",
                     headers={"content-type": "application/x-www-form-urlencoded",
                              "origin": self.origin})
        resp = conn.getresponse()
        resp.read()
        cookie = resp.getheader("set-cookie", "")
        if resp.status != 303 or not cookie:
            raise RuntimeError(f"/ui login answered {resp.status}")
        return cookie.split(";", 1)[0]

    def run(self) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
        cookie = self._login(conn)
        keys_due = 0.0
        while not self._halt.wait(self.every):
            paths = ["/ui/api/state"]
            if time.monotonic() >= keys_due:
                paths.append("/ui/api/keys")
                keys_due = time.monotonic() + 5
            for path in paths:
                began = time.perf_counter()
                try:
                    conn.request("GET", path, headers={"cookie": cookie})
                    resp = conn.getresponse()
                    self.bytes += len(resp.read())
                    ok = resp.status == 200
                except (OSError, http.client.HTTPException):
                    ok = False
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
                if path == "/ui/api/state":
                    self.polls += 1
                    self.latency_ms.append((time.perf_counter() - began) * 1000)
                self.errors += 0 if ok else 1

    def stop(self) -> dict:
        self._halt.set()
        self.join(6)
        lat = sorted(self.latency_ms)
        return {"polls": self.polls, "errors": self.errors, "bytes": self.bytes,
                "p50_ms": lat[len(lat) // 2] if lat else None, "max_ms": lat[-1] if lat else None}
