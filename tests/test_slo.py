"""Histograms, rolling windows and the SLO evaluator, against naive recomputation."""

from __future__ import annotations

import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.config.observe import SloConfig
from proxy.config.routing import AdaptiveWeights
from proxy.config.types import TargetConfig
from proxy.core.errors import ErrorClass
from proxy.core.exchange import Attempt
from proxy.engine.live import LiveStats
from proxy.engine.routing import View, adaptive
from proxy.engine.slo import BREACH, NO_DATA, OK, SloEvaluator
from proxy.state.series import BOUNDS, Cell, Ring, bucket, quantile, share_above
from proxy.state.target_stats import MemoryStatsStore

latencies = st.lists(st.floats(min_value=0.2, max_value=100_000), min_size=1, max_size=400)


def hist(values) -> dict[int, int]:
    h: dict[int, int] = {}
    for v in values:
        i = bucket(v)
        h[i] = h.get(i, 0) + 1
    return h


@given(latencies, st.sampled_from([0.5, 0.9, 0.95, 0.99]))
def test_a_quantile_is_within_a_bucket_of_the_true_one(values, q):
    ordered = sorted(values)
    got = quantile(hist(values), q)
    rank = max(0, math.ceil(q * len(ordered)) - 1)
    true = ordered[rank]
    assert true / 1.07 - 1e-9 <= got <= true * 1.07 + 1e-9


@given(latencies, st.floats(min_value=0.2, max_value=100_000), st.sampled_from([0.5, 0.95]))
def test_burn_and_quantile_agree(values, threshold, q):
    h = hist(values)
    above = share_above(h, threshold)
    p = quantile(h, q)
    if p > threshold * (1 + 1e-9):
        assert above >= (1 - q) - 1e-9
    if p < threshold * (1 - 1e-9):
        assert above <= (1 - q) + 1e-9


def test_the_buckets_cover_a_quarter_hour():
    assert BOUNDS[0] == 0.1 and BOUNDS[-1] > 15 * 60 * 1000
    assert quantile({}, 0.95) is None and share_above({}, 1) == 0.0


@settings(max_examples=60)
@given(st.lists(st.tuples(st.integers(0, 25), st.integers(0, 3), st.integers(0, 2)),
                min_size=1, max_size=120))
def test_a_ring_sums_what_a_naive_window_sums(steps):
    """Feed random cells at random times; the running sum equals the sum of the
    cells whose start lies in the last `length` complete cells (plus the open one)."""
    ring = Ring(10.0, 6)
    now = 1000.0
    fed: list[tuple[float, Cell]] = []
    for advance, n, bad in steps:
        now += advance
        cell = Cell(hits=n + bad, n=n + bad, bad=bad, lat={bucket(5.0): n} if n else {})
        ring.feed(now, cell)
        fed.append((now - now % 10, cell))
    open_at = ring.open_at
    window = ring.window()
    oldest = open_at - 6 * 10
    naive = [c for start, c in fed if oldest <= start <= open_at]
    assert window.n == sum(c.n for c in naive)
    assert window.bad == sum(c.bad for c in naive)
    assert window.lat.get(bucket(5.0), 0) == sum(c.lat.get(bucket(5.0), 0) for c in naive)
    assert all(v > 0 for v in window.lat.values())  # no zero buckets linger


def slo(objective="availability", threshold=0.99, window=60.0, scope="model", subject="m",
        adaptive=False) -> SloConfig:
    return SloConfig(scope, subject, objective, threshold, window, min_requests=10,
                     adaptive=adaptive)


class Ex:
    def __init__(self, model: str = "m") -> None:
        self.model = type("M", (), {"name": model})()
        self.cost = None
        self.attempts: list = []
        self.started_ns = 0
        self.target = None
        self.request_id = "req_1"


def test_breach_and_recovery_are_told_once_each():
    clock = [10_000.0]
    live = LiveStats(["p/m"], ["m"], clock=lambda: clock[0])
    told: list[tuple[str, str]] = []
    ev = SloEvaluator([slo()], live, emit=lambda k, s, m, d: told.append((k, s)),
                      clock=lambda: clock[0])

    def second(good: int, bad: int) -> None:
        for _ in range(good):
            live.observe_request(Ex(), 200, "", 0.05)
        for _ in range(bad):
            live.observe_request(Ex(), 502, "upstream_server_error", 0.05)
        clock[0] += 1
        live.tick()
        ev.evaluate()

    second(5, 0)
    assert ev.states[0].state == NO_DATA  # 5 < min_requests: not judged
    second(10, 0)
    assert ev.states[0].state == OK and told == []
    for _ in range(5):
        second(10, 2)  # ~12 % failing against a 1 % allowance
    assert ev.states[0].state == BREACH and told == [("slo_breach", "model:m:availability:1m")]
    assert ev.states[0].burn > 10
    for _ in range(80):  # the bad seconds leave the 1 minute window
        second(10, 0)
    assert ev.states[0].state == OK
    assert told == [("slo_breach", "model:m:availability:1m"),
                    ("slo_recovered", "model:m:availability:1m")]
    assert ev.states[0].breaches == 1 and ev.states[0].burn == 0.0
    families = {name: samples for name, _, _, samples in ev.gauges()}
    assert families["gatewise_slo_ok"][0][1] == 1.0


def test_a_slow_target_breaches_its_latency_slo_and_scores_half_under_adaptive():
    clock = [5_000.0]
    a, b = TargetConfig("a", "m"), TargetConfig("b", "m")
    live = LiveStats([a.label, b.label], ["m"], clock=lambda: clock[0])
    ev = SloEvaluator([slo("latency_p95_ms", 500, scope="target", subject=a.label,
                           adaptive=True)], live, clock=lambda: clock[0])
    rng = random.Random(7)
    for _ in range(40):
        at = Attempt(a, 0, ended_ns=int(rng.uniform(600, 900) * 1e6), status=200)
        live.observe_attempt(Ex(), at)
    live.observe_attempt(Ex(), Attempt(a, 0, ended_ns=0, error_class=ErrorClass.BAD_REQUEST,
                                       status=400))  # the caller's fault: not judged
    clock[0] += 1
    live.tick()
    ev.evaluate()
    st_ = ev.states[0]
    assert st_.state == BREACH and 600 <= st_.value <= 900 * 1.07 and st_.samples == 40
    assert ev.penalty(a.label) == 0.5 and ev.penalty(b.label) == 1.0
    view = View(MemoryStatsStore(), penalty=ev.penalty)
    assert adaptive([a, b], view, "m", AdaptiveWeights()) == [b, a]
    assert adaptive([a, b], View(MemoryStatsStore()), "m", AdaptiveWeights()) == [a, b]
