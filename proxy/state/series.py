"""Counts and latency histograms over time: cells, and rings of cells with a
running window total.

Recording is a few integer additions and one bisect into fixed, log-spaced
bucket bounds (about 7 % apart), so a percentile read back is within a few
percent of the true one whatever the load. Histograms are sparse dicts
{bucket: count}: a cell holds only the buckets it saw. A `Ring` keeps the last
`length` cells of `cell_s` seconds and the sum of the complete ones, updated as
one cell enters and one leaves, so reading a window never walks it.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field

#: bucket upper bounds in milliseconds: 0.1 ms · 1.07^i, up to ~16 minutes
BOUNDS: tuple[float, ...] = tuple(0.1 * 1.07 ** i for i in range(238))
_LAST = len(BOUNDS)  # values above the last bound land here


def bucket(ms: float) -> int:
    return bisect_left(BOUNDS, ms)


def _lower(i: int) -> float:
    return 0.0 if i == 0 else BOUNDS[i - 1]


def _upper(i: int) -> float:
    return BOUNDS[i] if i < _LAST else BOUNDS[-1] * 1.07


def quantile(hist: dict[int, int], q: float) -> float | None:
    """The q-quantile (0..1) in ms, linear within its bucket (as Prometheus's
    histogram_quantile); None for an empty histogram."""
    total = sum(hist.values())
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for i in sorted(hist):
        count = hist[i]
        if seen + count >= rank and count > 0:
            lo, hi = _lower(i), _upper(i)
            return lo + (hi - lo) * ((rank - seen) / count)
        seen += count
    return _upper(max(hist))


def share_above(hist: dict[int, int], ms: float) -> float:
    """The share of samples above `ms`, on the same piecewise-linear curve as
    `quantile`: quantile(h, q) > ms exactly when share_above(h, ms) > 1 - q."""
    total = sum(hist.values())
    if total <= 0:
        return 0.0
    above = 0.0
    for i, count in hist.items():
        lo, hi = _lower(i), _upper(i)
        if lo >= ms:
            above += count
        elif hi > ms:
            above += count * (hi - ms) / (hi - lo)
    return above / total


def merge(into: dict[int, int], other: dict[int, int], sign: int = 1) -> None:
    for i, count in other.items():
        value = into.get(i, 0) + sign * count
        if value:
            into[i] = value
        else:
            into.pop(i, None)


@dataclass(slots=True)
class Cell:
    """What happened in one span of time: requests, failures, latency, first
    tokens, money."""

    hits: int = 0  # everything seen, judged or not (a 4xx, a client error)
    n: int = 0  # judged requests: successes and failures
    bad: int = 0
    spend: float = 0.0
    lat: dict[int, int] = field(default_factory=dict)
    ttft: dict[int, int] = field(default_factory=dict)

    def add(self, other: "Cell", sign: int = 1) -> None:
        self.hits += sign * other.hits
        self.n += sign * other.n
        self.bad += sign * other.bad
        self.spend += sign * other.spend
        if other.lat:
            merge(self.lat, other.lat, sign)
        if other.ttft:
            merge(self.ttft, other.ttft, sign)

    def copy(self) -> "Cell":
        return Cell(self.hits, self.n, self.bad, self.spend, dict(self.lat), dict(self.ttft))

    @property
    def empty(self) -> bool:
        return not (self.hits or self.n or self.bad or self.spend or self.lat or self.ttft)


class Ring:
    """The last `length` cells of `cell_s` seconds each, and their running sum.

    `feed(now, cell)` adds what was recorded since the last feed to the open cell;
    when `now` has moved past it, the open cell is closed into the ring (empty
    cells fill any gap) and the oldest leaves the sum.
    """

    __slots__ = ("cell_s", "closed", "length", "open", "open_at", "total")

    def __init__(self, cell_s: float, length: int) -> None:
        self.cell_s = cell_s
        self.length = length
        self.closed: deque[tuple[float, Cell]] = deque()  # (start, cell), oldest first
        self.total = Cell()  # sum of `closed`
        self.open = Cell()
        self.open_at: float | None = None  # start of the open cell

    def _start(self, now: float) -> float:
        return now - now % self.cell_s

    def feed(self, now: float, cell: Cell | None = None) -> list[tuple[float, Cell]]:
        """Returns the cells closed by this call (oldest first)."""
        start = self._start(now)
        done: list[tuple[float, Cell]] = []
        if self.open_at is None:
            self.open_at = start
        elif start > self.open_at:
            done.append((self.open_at, self.open))
            gap = int(round((start - self.open_at) / self.cell_s)) - 1
            for k in range(max(0, min(gap, self.length))):
                done.append((start - (min(gap, self.length) - k) * self.cell_s, Cell()))
            for item in done:
                self._push(item)
            self.open, self.open_at = Cell(), start
        if cell is not None:
            self.open.add(cell)
        return done

    def _push(self, item: tuple[float, Cell]) -> None:
        self.closed.append(item)
        self.total.add(item[1])
        while len(self.closed) > self.length:
            _, old = self.closed.popleft()
            self.total.add(old, -1)

    def window(self, with_open: bool = True) -> Cell:
        """The sum of the complete cells (and the open one): a copy, safe to keep."""
        total = self.total.copy()
        if with_open:
            total.add(self.open)
        return total

    def span(self, now: float) -> float:
        """Seconds the window covers so far (less than its length after a start)."""
        if self.open_at is None:
            return 0.0
        return len(self.closed) * self.cell_s + max(0.0, now - self.open_at)
