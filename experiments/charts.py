"""The geometry of an experiment's two charts, for the admin's inline SVG: what survived per
mode, and throughput over time with the faults marked on it. Numbers in, shapes out."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from experiments.plan import MODES

WIDTH, HEIGHT = 760, 220
LEFT, RIGHT, TOP, BOTTOM = 90, 20, 20, 36

KIND_COLOURS = {"kill": "#ba2121", "pg_restart": "#6f42c1", "terminate": "#d35400",
                "pause": "#b8860b", "redis_restart": "#c0392b", "restart": "#999999",
                "reconcile": "#2e7d32", "partition": "#1565c0", "heal": "#64b5f6",
                "group_pause": "#8d6e00", "resume": "#e0c060", "clock_skew": "#00838f"}


@dataclass
class Bar:
    label: str
    x: float
    width: float
    colour: str
    value: int


@dataclass
class Row:
    mode: str
    y: float
    bars: list[Bar] = field(default_factory=list)


@dataclass
class OutcomeChart:
    rows: list[Row]
    width: int = WIDTH
    height: int = 0
    legend: tuple = (("one email", "#2e7d32"), ("lost", "#ba2121"),
                     ("duplicated", "#6f42c1"), ("not committed", "#999999"))


def outcome_chart(result: dict) -> OutcomeChart:
    """One horizontal bar per mode: signups split into one email / lost / duplicated / not
    committed, on a common scale."""
    modes = {mode: result["modes"][mode] for mode in MODES}
    biggest = max([m["signups"] for m in modes.values()] + [1])
    scale = (WIDTH - LEFT - RIGHT) / biggest
    rows = []
    for i, (mode, m) in enumerate(modes.items()):
        parts = [("one email", m["emails"] - m["duplicated"], "#2e7d32"),
                 ("lost", m["lost"], "#ba2121"), ("duplicated", m["duplicated"], "#6f42c1"),
                 ("not committed", max(0, m["signups"] - m["users"]), "#999999")]
        x = LEFT
        row = Row(mode=mode, y=TOP + i * 34)
        for label, value, colour in parts:
            if value > 0:
                row.bars.append(Bar(label, x, value * scale, colour, value))
                x += value * scale
        rows.append(row)
    return OutcomeChart(rows=rows, height=TOP + len(rows) * 34 + 10)


@dataclass
class Marker:
    x: float
    kind: str
    label: str
    colour: str


@dataclass
class Tick:
    pos: float
    label: str


@dataclass
class ThroughputChart:
    emails: str          # SVG polyline points
    sagas: str
    markers: list[Marker]
    xticks: list[Tick]
    yticks: list[Tick]
    width: int = WIDTH
    height: int = HEIGHT
    plot_left: int = LEFT
    plot_bottom: int = HEIGHT - BOTTOM
    plot_right: int = WIDTH - RIGHT
    plot_top: int = TOP


def _rates(samples: list[dict], key: str) -> list[tuple[float, float]]:
    rates = []
    for a, b in zip(samples, samples[1:], strict=False):
        dt = b["t"] - a["t"]
        if dt > 0:
            rates.append((b["t"], max(0.0, (b[key] - a[key]) / dt)))
    return rates


def nice_step(span: float, parts: int) -> float:
    """A round step (1, 2 or 5 times a power of ten) that cuts `span` into at most `parts`."""
    raw = max(span, 1e-9) / parts
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def throughput_chart(samples: list[dict], timeline: list[dict]) -> ThroughputChart:
    """Emails sent per second and sagas finished per second, with a vertical mark at every
    fault (and every restart the supervisor made)."""
    emails, sagas = _rates(samples, "emails"), _rates(samples, "sagas_done")
    t_max = max([s["t"] for s in samples] + [e["t"] for e in timeline] + [1.0])
    ystep = nice_step(max([r for _, r in emails + sagas] + [1.0]) * 1.05, 4)
    y_max = ystep * math.ceil(max([r for _, r in emails + sagas] + [1.0]) * 1.05 / ystep)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(t: float) -> float:
        return round(LEFT + t / t_max * plot_w, 1)

    def y(v: float) -> float:
        return round(HEIGHT - BOTTOM - v / y_max * plot_h, 1)

    def points(series):
        return " ".join(f"{x(t)},{y(v)}" for t, v in series)

    markers = [Marker(x(e["t"]), e["kind"], f"{e['t']:.1f} s {e['kind']} {e['target']}".strip(),
                      KIND_COLOURS.get(e["kind"], "#333")) for e in timeline]
    step = max(1, nice_step(t_max, 8))
    xticks = [Tick(x(t), f"{t:g} s") for t in (step * i for i in range(int(t_max // step) + 1))]
    yticks = [Tick(y(v), f"{v:,g}/s") for v in (ystep * i for i in range(round(y_max / ystep) + 1))]
    return ThroughputChart(emails=points(emails), sagas=points(sagas), markers=markers,
                           xticks=xticks, yticks=yticks)
