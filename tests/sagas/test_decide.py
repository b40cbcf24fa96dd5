"""The coordinator's next move as a pure function of the log, checked over every log the
coordinator can produce: each step may end, fail, or leave the coordinator dead mid-step;
each compensation may end, fail, or die; up to a bound, every combination."""

from dataclasses import dataclass

import pytest

from sagas import decide as d
from sagas.decide import Entry, decide


@dataclass(frozen=True)
class S:
    name: str
    idempotent: bool


TRIP = (S("hotel", True), S("car", True), S("flight", False))
MAX_COMP = 3
MAX_FORWARD = 3
MAX_CRASHES = 2


def add(log: tuple, event: str, step: str = "") -> tuple:
    return (*log, Entry(len(log) + 1, event, step))


def runs(log: tuple, crashes: int = 0):
    """Every (final log, last decision) the coordinator can reach from `log`."""
    decision = decide(log, TRIP, max_comp_attempts=MAX_COMP, max_forward_attempts=MAX_FORWARD)
    match decision:
        case d.Done() | d.Stuck():
            yield log, decision
        case d.Complete() | d.FinishCompensated():
            yield from runs(add(log, "SAGA_END"), crashes)
        case d.Abort():
            yield from runs(add(log, "SAGA_ABORT"), crashes)
        case d.RunStep(step):
            started = add(log, "STEP_START", step)
            yield from runs(add(started, "STEP_END", step), crashes)
            yield from runs(add(started, "STEP_FAIL", step), crashes)
            if crashes < MAX_CRASHES:
                yield from runs(started, crashes + 1)
        case d.Compensate(step):
            started = add(log, "COMP_START", step)
            yield from runs(add(started, "COMP_END", step), crashes)
            yield from runs(add(started, "COMP_FAIL", step), crashes)
            if crashes < MAX_CRASHES:
                yield from runs(started, crashes + 1)


ALL_RUNS = list(runs(add((), "SAGA_START")))


def steps_with(log, event):
    return [e.step for e in log if e.event == event]


def test_the_exploration_covers_every_outcome():
    outcomes = {type(decision).__name__ + getattr(decision, "outcome", "")
                for _, decision in ALL_RUNS}
    assert outcomes == {"Donecompleted", "Donecompensated", "Stuck"}
    assert len(ALL_RUNS) > 1000


def test_every_prefix_of_every_reachable_log_has_a_decision():
    seen = set()
    for log, _ in ALL_RUNS:
        for n in range(1, len(log) + 1):
            prefix = log[:n]
            if prefix not in seen:
                seen.add(prefix)
                decide(prefix, TRIP, max_comp_attempts=MAX_COMP, max_forward_attempts=MAX_FORWARD)
    assert len(seen) > 1000  # distinct prefixes


@pytest.mark.parametrize("kind", ["completed", "compensated", "stuck"])
def test_invariants_hold_for_every_run(kind):
    checked = 0
    for log, decision in ALL_RUNS:
        outcome = "stuck" if isinstance(decision, d.Stuck) else decision.outcome
        if outcome != kind:
            continue
        checked += 1
        events = [e.event for e in log]
        started = list(dict.fromkeys(steps_with(log, "STEP_START")))
        # Ti at most once for a step that is not idempotent
        assert steps_with(log, "STEP_START").count("flight") <= 1
        if "SAGA_ABORT" in events:
            abort_at = events.index("SAGA_ABORT")
            assert not [e for e in log[abort_at:] if e.event.startswith("STEP_")]
        if kind == "completed":
            assert "SAGA_ABORT" not in events
            assert steps_with(log, "STEP_END") == ["hotel", "car", "flight"]
            assert events[-1] == "SAGA_END"
        elif kind == "compensated":
            # every step that started is compensated, in reverse order, exactly once at the end
            assert steps_with(log, "COMP_END") == list(reversed(started))
            assert events[-1] == "SAGA_END"
            abort_at = events.index("SAGA_ABORT")
            assert not [e for e in events[:abort_at] if e.startswith("COMP_")]
        else:
            assert steps_with(log, "COMP_START").count(decision.step) >= MAX_COMP
            assert steps_with(log, "COMP_END").count(decision.step) == 0
            assert "SAGA_END" not in events
    assert checked >= 5  # completed: hotel and car may each be re-run after a crash


def test_the_talks_failure_example_gives_the_slides_order():
    log = add((), "SAGA_START")
    log = add(add(log, "STEP_START", "hotel"), "STEP_END", "hotel")
    log = add(add(log, "STEP_START", "car"), "STEP_FAIL", "car")
    assert decide(log, TRIP, max_comp_attempts=3) == d.Abort("car failed")
    log = add(log, "SAGA_ABORT")
    assert decide(log, TRIP, max_comp_attempts=3) == d.Compensate("car", attempt=1)
    log = add(add(log, "COMP_START", "car"), "COMP_END", "car")
    assert decide(log, TRIP, max_comp_attempts=3) == d.Compensate("hotel", attempt=1)
    log = add(add(log, "COMP_START", "hotel"), "COMP_END", "hotel")
    assert decide(log, TRIP, max_comp_attempts=3) == d.FinishCompensated()


@pytest.mark.parametrize(("step", "expected"), [
    ("hotel", d.RunStep("hotel", recovery=True)),
    ("car", d.RunStep("car", recovery=True)),
    ("flight", d.Abort("flight was in doubt and is not idempotent: backward recovery")),
])
def test_a_step_in_doubt_is_recovered_forward_if_idempotent_else_backward(step, expected):
    log = add((), "SAGA_START")
    for done in ("hotel", "car", "flight"):
        if done == step:
            break
        log = add(add(log, "STEP_START", done), "STEP_END", done)
    log = add(log, "STEP_START", step)
    assert decide(log, TRIP, max_comp_attempts=3) == expected


def test_forward_recovery_gives_up_after_max_attempts():
    log = add((), "SAGA_START")
    for _ in range(3):
        log = add(log, "STEP_START", "hotel")
    assert isinstance(decide(log, TRIP, max_comp_attempts=3, max_forward_attempts=3), d.Abort)


def test_a_retry_forgives_earlier_compensation_failures():
    log = add(add(add((), "SAGA_START"), "STEP_START", "hotel"), "STEP_FAIL", "hotel")
    log = add(log, "SAGA_ABORT")
    for _ in range(2):
        log = add(add(log, "COMP_START", "hotel"), "COMP_FAIL", "hotel")
    assert decide(log, TRIP, max_comp_attempts=2) == d.Stuck("hotel", 2)
    assert decide(log, TRIP, max_comp_attempts=2, since_seq=len(log)) == d.Compensate("hotel", 1)


@pytest.mark.parametrize("log", [
    (),
    (Entry(1, "STEP_START", "hotel"),),
    (Entry(1, "SAGA_START"), Entry(2, "STEP_START", "boat")),
])
def test_a_log_that_cannot_be_a_saga_is_refused(log):
    with pytest.raises(d.InvalidLog):
        decide(log, TRIP, max_comp_attempts=3)


def test_a_compensation_whose_coordinator_keeps_dying_ends_stuck():
    log = add(add(add((), "SAGA_START"), "STEP_START", "hotel"), "STEP_FAIL", "hotel")
    log = add(log, "SAGA_ABORT")
    log = add(log, "COMP_START", "hotel")  # died
    assert decide(log, TRIP, max_comp_attempts=2) == d.Compensate("hotel", 2)
    log = add(log, "COMP_START", "hotel")  # died again
    assert decide(log, TRIP, max_comp_attempts=2) == d.Stuck("hotel", 2)
