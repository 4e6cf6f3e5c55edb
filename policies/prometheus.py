"""Prometheus series kept as plain dicts: a counter's values and a histogram's cells
keyed by label tuples, rendered in text format 0.0.4 (policies/metrics.py owns them)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable


class Counter:
    __slots__ = ("help", "kind", "labelnames", "name", "values")

    def __init__(self, name: str, help_: str, labelnames: tuple[str, ...],
                 kind: str = "counter") -> None:
        self.name, self.help, self.labelnames, self.kind = name, help_, labelnames, kind
        self.values: dict[tuple, float] = {}

    def inc(self, labels: tuple, amount: float = 1.0) -> None:
        values = self.values
        values[labels] = values.get(labels, 0.0) + amount

    def set(self, labels: tuple, value: float) -> None:
        self.values[labels] = value

    def merge(self, peers: list[list]) -> dict[tuple, float]:
        """This series with other workers' (`snapshot` rows): counters and the in-flight
        gauge add up; the breaker gauge takes the worst state any worker sees."""
        merged = dict(self.values)
        worst = self.name == "gatewise_breaker_state"
        for rows in peers:
            for labels, value in rows:
                key = tuple(labels)
                mine = merged.get(key)
                merged[key] = value if mine is None else max(mine, value) if worst \
                    else mine + value
        return merged

    def render(self, out: list[str], values: dict[tuple, float] | None = None) -> None:
        out.append(f"# HELP {self.name} {self.help}\n# TYPE {self.name} {self.kind}\n")
        for labels, value in (self.values if values is None else values).items():
            out.append(f"{self.name}{_labels(self.labelnames, labels)} {_num(value)}\n")


class Histogram:
    __slots__ = ("bounds", "cells", "help", "labelnames", "name")

    def __init__(self, name: str, help_: str, labelnames: tuple[str, ...],
                 buckets: Iterable[float]) -> None:
        self.name, self.help, self.labelnames = name, help_, labelnames
        self.bounds = tuple(float(b) for b in buckets)
        self.cells: dict[tuple, list] = {}  # labels -> [sum, count per bucket..., +Inf]

    def observe(self, labels: tuple, value: float) -> None:
        cell = self.cells.get(labels)
        if cell is None:
            cell = self.cells[labels] = [0.0] + [0] * (len(self.bounds) + 1)
        cell[0] += value
        cell[1 + bisect_left(self.bounds, value)] += 1

    def cell(self, labels: tuple) -> list:
        """The series' cell for `labels` (made now if new), for a caller that keeps it
        and adds to it itself: `cell[0] += value; cell[1 + bisect_left(bounds, value)] += 1`."""
        cell = self.cells.get(labels)
        if cell is None:
            cell = self.cells[labels] = [0.0] + [0] * (len(self.bounds) + 1)
        return cell

    def merge(self, peers: list[list]) -> dict[tuple, list]:
        """Bucket by bucket, with other workers' cells (same buckets: same code)."""
        merged = {labels: list(cell) for labels, cell in self.cells.items()}
        for rows in peers:
            for labels, cell in rows:
                key = tuple(labels)
                mine = merged.get(key)
                merged[key] = list(cell) if mine is None else [a + b for a, b in zip(mine, cell)]
        return merged

    def render(self, out: list[str], cells: dict[tuple, list] | None = None) -> None:
        out.append(f"# HELP {self.name} {self.help}\n# TYPE {self.name} histogram\n")
        names = self.labelnames + ("le",)
        for labels, cell in (self.cells if cells is None else cells).items():
            running = 0
            for bound, count in zip(self.bounds, cell[1:]):
                running += count
                out.append(f"{self.name}_bucket{_labels(names, labels + (_num(bound),))} "
                           f"{running}\n")
            running += cell[-1]
            out.append(f"{self.name}_bucket{_labels(names, labels + ('+Inf',))} {running}\n")
            base = _labels(self.labelnames, labels)
            out.append(f"{self.name}_sum{base} {_num(cell[0])}\n")
            out.append(f"{self.name}_count{base} {running}\n")


def _labels(names: tuple[str, ...], values: tuple) -> str:
    if not names:
        return ""
    return "{" + ",".join(f'{n}="{_escape(str(v))}"' for n, v in zip(names, values)) + "}"


def _escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def _num(value: float) -> str:
    if value != value or value in (float("inf"), float("-inf")):
        return "NaN" if value != value else ("+Inf" if value > 0 else "-Inf")
    return repr(float(value)) if value != int(value) else f"{int(value)}.0"
