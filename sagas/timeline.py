"""The saga timeline drawn as a sequence diagram in the talk's style: the geometry the
admin's SVG template (admin/sagas/saga/timeline.html) draws."""

from __future__ import annotations

from dataclasses import dataclass

from sagas.definitions import DEFINITIONS
from sagas.models import Event, Saga, Style
from travel.services import booking_states

COLORS = {"ok": "#2e7d32", "fail": "#c62828", "comp": "#ef6c00", "note": "#1565c0"}
LANE_WIDTH = 150
ROW_HEIGHT = 30
TOP = 50


@dataclass(frozen=True)
class Arrow:
    y: int
    x1: int
    x2: int
    label: str
    kind: str  # "ok", "fail", "comp", "note"
    dashed: bool
    seq: int
    detail: str
    at: str


# event -> (from lane, to lane, label, kind, dashed); "srv" is the lane of the step's service
ARROWS: dict[str, tuple[str, str, str, str, bool]] = {
    Event.SAGA_START: ("Customer", "Saga Log", "Saga START", "note", False),
    Event.STEP_START: ("SEC", "srv", "T: book {step}", "ok", False),
    Event.STEP_END: ("srv", "Saga Log", "T: {step} success", "ok", True),
    Event.STEP_FAIL: ("srv", "Saga Log", "T: {step} FAIL", "fail", True),
    Event.SAGA_ABORT: ("SEC", "Saga Log", "Saga ABORT", "fail", False),
    Event.COMP_START: ("SEC", "srv", "C: cancel {step}", "comp", False),
    Event.COMP_END: ("srv", "Saga Log", "C: {step} success", "comp", True),
    Event.COMP_FAIL: ("srv", "Saga Log", "C: {step} FAIL", "fail", True),
    Event.SAGA_END: ("Saga Log", "Customer", "Saga END ({detail})", "note", True),
}
ENDS = (Event.STEP_END, Event.STEP_FAIL, Event.COMP_END, Event.COMP_FAIL)


def timeline(saga: Saga) -> dict:
    """Lanes (Customer, Saga Log, SEC, one per service) and one arrow per log event. A
    choreographed saga has no coordinator: its lane is the events (the outbox) each service
    reacts to."""
    services = [s.name for s in DEFINITIONS[saga.kind].steps]
    driver = "SEC" if saga.style == Style.ORCHESTRATED else "Events"
    died = "SEC died" if driver == "SEC" else "its reaction died"
    lanes = ["Customer", "Saga Log", driver, *[f"{s.capitalize()} Srv" for s in services]]
    x = {name: LANE_WIDTH // 2 + i * LANE_WIDTH for i, name in enumerate(lanes)}
    entries = list(saga.log.order_by("seq"))
    arrows = []
    for i, e in enumerate(entries):
        source, target, label, kind, dashed = ARROWS[e.event]
        lane = {"srv": f"{e.step.capitalize()} Srv", "SEC": driver}
        label = label.format(step=e.step, detail=e.detail)
        nxt = entries[i + 1] if i + 1 < len(entries) else None
        # A start followed by anything but its own end: the coordinator died in between.
        if e.event in (Event.STEP_START, Event.COMP_START) and nxt is not None and not (
            nxt.step == e.step and nxt.event in ENDS
        ):
            label, kind = f"{label} (no answer: {died})", "fail"
        arrows.append(Arrow(
            y=TOP + 20 + i * ROW_HEIGHT, x1=x[lane.get(source, source)],
            x2=x[lane.get(target, target)], label=label, kind=kind, dashed=dashed, seq=e.seq,
            detail=e.detail, at=e.at.strftime("%H:%M:%S.%f")[:-3],
        ))
    height = TOP + 40 + len(arrows) * ROW_HEIGHT
    return {
        "style": saga.style,
        "lanes": [{"name": n, "x": x[n]} for n in lanes],
        "arrows": arrows,
        "width": LANE_WIDTH * len(lanes),
        "height": height,
        "lifeline_end": height - 10,
        "bookings": booking_states(saga_id=saga.pk),
        "colors": list(COLORS.items()),
    }
