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


# --- the saga styles side by side -------------------------------------------------------------

STYLE_LABELS = 170  # the rows' names, left of the panels
STYLE_ROW = 30
STYLE_BAR = 18
STYLE_GAP = 24
STYLE_VALUE = 64  # room right of a bar for its value
OUTCOME_PARTS = (("completed", "#2e7d32"), ("compensated", "#e67e22"), ("stuck", "#6f42c1"),
                 ("half_done", "#ba2121"))
# (row name, the result's key, how its value reads); rows sharing a scale name share a scale
STYLE_ROWS = (("messages per saga", "messages_per_saga", "{:.2f}", "messages"),
              ("commits per saga", "commits_per_saga", "{:.2f}", "commits"),
              ("request to outcome p50", "outcome_p50_s", "{:.3f} s", "seconds"),
              ("request to outcome p99", "outcome_p99_s", "{:.3f} s", "seconds"))


@dataclass
class PanelBar:
    key: str      # what it measures (a CSS class)
    label: str    # its tooltip
    x: float
    y: float
    width: float
    colour: str


@dataclass
class Label:
    x: float
    y: float
    text: str


@dataclass
class StylePanel:
    style: str
    x: float
    width: float
    bars: list[PanelBar] = field(default_factory=list)
    values: list[Label] = field(default_factory=list)


@dataclass
class StyleChart:
    panels: list[StylePanel]
    rows: list[Label]
    width: int = WIDTH
    height: int = 0
    bar_height: int = STYLE_BAR
    legend: tuple = tuple((name.replace("_", " "), colour) for name, colour in OUTCOME_PARTS)


def style_chart(styles: dict[str, dict]) -> StyleChart:
    """One panel per saga style, side by side; in each, one row per measure: how the sagas
    ended (a stacked bar), messages and commits per saga, the time from request to outcome.
    A row has one scale across the panels (p50 and p99 share theirs), so the panels compare
    bar by bar."""
    names = ["sagas", *(row[0] for row in STYLE_ROWS)]
    n = max(len(styles), 1)
    panel_w = (WIDTH - STYLE_LABELS - RIGHT - STYLE_GAP * (n - 1)) / n
    room = max(panel_w - STYLE_VALUE, 1.0)
    top = TOP + 14  # below the panels' titles

    def y(row: int) -> float:
        return top + row * STYLE_ROW

    def biggest(keys: list[str]) -> float:
        return max([float(s.get(k) or 0) for s in styles.values() for k in keys] + [1e-9])

    started = max([s["started"] for s in styles.values()] + [1])
    scales = {scale: biggest([k for _, k, _, sc in STYLE_ROWS if sc == scale])
              for _, _, _, scale in STYLE_ROWS}
    panels = []
    for i, (style, s) in enumerate(styles.items()):
        panel = StylePanel(style=style, x=round(STYLE_LABELS + i * (panel_w + STYLE_GAP), 1),
                           width=round(panel_w, 1))
        x = panel.x
        for key, colour in OUTCOME_PARTS:
            if s[key] > 0:
                width = s[key] / started * room
                panel.bars.append(PanelBar(key, f"{s[key]} {key.replace('_', ' ')}", round(x, 1),
                                           y(0), round(width, 1), colour))
                x += width
        panel.values.append(Label(round(x + 4, 1), y(0) + 13, f"{s['started']}"))
        for row, (name, key, shown, scale) in enumerate(STYLE_ROWS, start=1):
            value = s.get(key)
            if value:
                width = float(value) / scales[scale] * room
                panel.bars.append(PanelBar(key, f"{name}: {shown.format(value)}", panel.x,
                                           y(row), round(width, 1), "#417690"))
            else:
                width = 0.0
            panel.values.append(Label(round(panel.x + width + 4, 1), y(row) + 13,
                                      "-" if value is None else shown.format(value)))
        panels.append(panel)
    rows = [Label(4, y(r) + 13, name) for r, name in enumerate(names)]
    return StyleChart(panels=panels, rows=rows, height=round(y(len(names)) + 4))
