"""Reads for the saga admin, commands and dashboard."""

from __future__ import annotations

from dataclasses import dataclass

from sagas.definitions import DEFINITIONS
from sagas.models import Event, Saga
from travel.services import booking_states


def saga_as_dict(saga: Saga) -> dict:
    """The stable `show_saga --json` shape."""
    return {
        "id": saga.pk,
        "state": saga.state,
        "log": [{"seq": e.seq, "event": e.event, "step": e.step}
                for e in saga.log.order_by("seq")],
        "bookings": booking_states(saga_id=saga.pk),
    }


# --- the timeline: a sequence diagram in the talk's style -------------------------------------

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


def timeline(saga: Saga) -> dict:
    """Lanes (Customer, Saga Log, SEC, one per service) and one arrow per log event."""
    services = [s.name for s in DEFINITIONS[saga.kind].steps]
    lanes = ["Customer", "Saga Log", "SEC", *[f"{s.capitalize()} Srv" for s in services]]
    x = {name: LANE_WIDTH // 2 + i * LANE_WIDTH for i, name in enumerate(lanes)}
    srv = {s: x[f"{s.capitalize()} Srv"] for s in services}
    arrows = []
    entries = list(saga.log.order_by("seq"))
    for i, e in enumerate(entries):
        y = TOP + 20 + i * ROW_HEIGHT
        step = e.step
        nxt = entries[i + 1] if i + 1 < len(entries) else None
        # A start followed by anything but its own end: the coordinator died in between.
        died = nxt is not None and e.event in (Event.STEP_START, Event.COMP_START) and not (
            nxt.step == step and nxt.event in (Event.STEP_END, Event.STEP_FAIL,
                                               Event.COMP_END, Event.COMP_FAIL))
        common = {"y": y, "seq": e.seq, "detail": e.detail, "at": e.at.strftime("%H:%M:%S.%f")[:-3]}
        match e.event:
            case Event.SAGA_START:
                arrows.append(Arrow(x1=x["Customer"], x2=x["Saga Log"], label="Saga START",
                                    kind="note", dashed=False, **common))
            case Event.STEP_START:
                arrows.append(Arrow(x1=x["SEC"], x2=srv[step],
                                    label=f"T: book {step}" + (" (no answer: SEC died)" if died
                                                               else ""),
                                    kind="fail" if died else "ok", dashed=False, **common))
            case Event.STEP_END:
                arrows.append(Arrow(x1=srv[step], x2=x["Saga Log"], label=f"T: {step} success",
                                    kind="ok", dashed=True, **common))
            case Event.STEP_FAIL:
                arrows.append(Arrow(x1=srv[step], x2=x["Saga Log"], label=f"T: {step} FAIL",
                                    kind="fail", dashed=True, **common))
            case Event.SAGA_ABORT:
                arrows.append(Arrow(x1=x["SEC"], x2=x["Saga Log"], label="Saga ABORT",
                                    kind="fail", dashed=False, **common))
            case Event.COMP_START:
                arrows.append(Arrow(x1=x["SEC"], x2=srv[step],
                                    label=f"C: cancel {step}" + (" (no answer: SEC died)" if died
                                                                 else ""),
                                    kind="fail" if died else "comp", dashed=False, **common))
            case Event.COMP_END:
                arrows.append(Arrow(x1=srv[step], x2=x["Saga Log"], label=f"C: {step} success",
                                    kind="comp", dashed=True, **common))
            case Event.COMP_FAIL:
                arrows.append(Arrow(x1=srv[step], x2=x["Saga Log"], label=f"C: {step} FAIL",
                                    kind="fail", dashed=True, **common))
            case Event.SAGA_END:
                arrows.append(Arrow(x1=x["Saga Log"], x2=x["Customer"],
                                    label=f"Saga END ({e.detail})", kind="note", dashed=True,
                                    **common))
    height = TOP + 40 + len(arrows) * ROW_HEIGHT
    return {
        "lanes": [{"name": n, "x": x[n]} for n in lanes],
        "arrows": arrows,
        "width": LANE_WIDTH * len(lanes),
        "height": height,
        "lifeline_end": height - 10,
        "bookings": booking_states(saga_id=saga.pk),
        "colors": list(COLORS.items()),
    }
