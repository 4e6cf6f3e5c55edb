"""SLOs judged continuously: each objective over its rolling window, once a second.

Every objective is read as "at most this share of requests may miss":
availability 99.5 % allows 0.5 % failures, a p95 latency allows 5 % of answers
above it. The burn rate is the share that missed divided by that allowance:
1.0 spends the error budget exactly as fast as the window allows, above 1.0 the
objective is breached. For latencies the share comes from the same histogram
curve as the p95, so "p95 above the objective" and "burn above 1" always agree.

A breach and its recovery are events (told to the alerts); a window with fewer
than `min_requests` judged requests is "no data" and changes nothing. With
`adaptive: true` on a target's SLO, a breaching target scores half under the
`adaptive` routing strategy (see `penalty`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from proxy.config.observe import SloConfig
from proxy.engine.live import LiveStats
from proxy.state.series import Ring, quantile, share_above

#: the factor a breaching adaptive target's routing score is multiplied by
PENALTY = 0.5
NO_DATA, OK, BREACH = "no_data", "ok", "breach"
Emit = Callable[[str, str, str, dict], None]  # (event kind, subject, message, details)
GaugeFamily = tuple[str, str, tuple[str, ...], list[tuple[tuple, float]]]

_WHAT = {"latency_p95_ms": "p95 latency", "ttft_p95_ms": "p95 time to first token",
         "availability": "availability"}


@dataclass(slots=True)
class SloState:
    config: SloConfig
    ring: Ring
    state: str = NO_DATA
    value: float | None = None
    burn: float | None = None
    samples: int = 0
    breaches: int = 0  # since start
    since: float | None = None  # when the current state began (wall clock)

    def describe(self) -> str:
        c = self.config
        what = f"{_WHAT[c.objective]} of {c.scope} '{c.subject}' over {_span(c.window)}"
        if c.objective == "availability":
            return f"{what}: {_pct(self.value)} (objective {_pct(c.threshold)})"
        value = "-" if self.value is None else f"{self.value:,.0f} ms"
        return f"{what}: {value} (objective {c.threshold:,.0f} ms)"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.3g}%"


def _span(seconds: float) -> str:
    return f"{seconds / 3600:g}h" if seconds >= 3600 else f"{seconds / 60:g}m"


def measure(config: SloConfig, ring: Ring) -> tuple[float | None, float | None, int]:
    """(current value, burn rate, samples) over the window."""
    cell = ring.window()
    if config.objective == "availability":
        if not cell.n:
            return None, None, 0
        return 1.0 - cell.bad / cell.n, (cell.bad / cell.n) / config.budget, cell.n
    hist = cell.lat if config.objective == "latency_p95_ms" else cell.ttft
    samples = sum(hist.values())
    if not samples:
        return None, None, 0
    return quantile(hist, 0.95), share_above(hist, config.threshold) / config.budget, samples


class SloEvaluator:
    def __init__(self, slos: Iterable[SloConfig], live: LiveStats, emit: Emit | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.states = [SloState(c, live.window(c.scope, c.subject, c.window)) for c in slos]
        self.emit = emit
        self.clock = clock
        self._penalties: dict[str, float] = {}

    def evaluate(self, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        penalties: dict[str, float] = {}
        for st in self.states:
            config = st.config
            value, burn, samples = measure(config, st.ring)
            st.value, st.burn, st.samples = value, burn, samples
            if burn is not None and samples >= config.min_requests:
                verdict = BREACH if burn > 1.0 else OK
                if verdict != st.state:
                    was, st.state, st.since = st.state, verdict, now
                    if verdict == BREACH:
                        st.breaches += 1
                        self._tell("slo_breach", st)
                    elif was == BREACH:
                        self._tell("slo_recovered", st)
            if config.adaptive and st.state == BREACH:
                penalties[config.subject] = PENALTY
        self._penalties = penalties

    def _tell(self, kind: str, st: SloState) -> None:
        if self.emit is None:
            return
        c = st.config
        verb = "breached" if kind == "slo_breach" else "met again"
        self.emit(kind, c.id, f"SLO {verb}: {st.describe()}", {
            "slo": c.id, "scope": c.scope, c.scope: c.subject, "objective": c.objective,
            "threshold": c.threshold, "window_s": c.window, "value": _round(st.value),
            "burn_rate": _round(st.burn), "samples": st.samples})

    def penalty(self, label: str) -> float:
        """A routing score factor: PENALTY for a target breaching an adaptive SLO, else 1."""
        return self._penalties.get(label, 1.0)

    def snapshot(self) -> list[dict[str, Any]]:
        return [{"id": st.config.id, "scope": st.config.scope, "subject": st.config.subject,
                 "objective": st.config.objective, "threshold": st.config.threshold,
                 "window_s": st.config.window, "adaptive": st.config.adaptive,
                 "state": st.state, "value": _round(st.value), "burn_rate": _round(st.burn),
                 "samples": st.samples, "min_requests": st.config.min_requests,
                 "breaches": st.breaches, "since": st.since, "text": st.describe()}
                for st in self.states]

    def gauges(self) -> list[GaugeFamily]:
        """Prometheus gauge families as data, for whichever exposition renders them."""
        names = ("slo", "scope", "subject", "objective", "window")
        ok, burn = [], []
        for st in self.states:
            c = st.config
            labels = (c.id, c.scope, c.subject, c.objective, _span(c.window))
            ok.append((labels, 0.0 if st.state == BREACH else 1.0))
            burn.append((labels, float("nan") if st.burn is None else st.burn))
        return [("gatewise_slo_ok", "1 while the SLO is met (or has too few requests to "
                 "judge), 0 while it is breached.", names, ok),
                ("gatewise_slo_burn_rate", "Share of requests missing the objective over "
                 "its window, divided by the share allowed (above 1: breached).", names, burn)]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
