"""Coordinator crashes on a real cluster: a real SIGKILL of the worker between STEP_START and
STEP_END (and an os._exit at the same place), then recovery by a real `recover_sagas`."""

import os
import signal

import pytest
from django.core.management import call_command
from django.test import override_settings

from faults import services as faults
from faults.models import Fault
from sagas import batch, recovery, services
from sagas.models import Saga, SagaLog, State
from tests.helpers import Process, times_booked, wait_until
from travel.services import MODELS, booking_states

SERVICES = ["hotel", "car", "flight"]
CASES = [(how, service) for how in ("sigkill", "exit") for service in SERVICES]
# Q_TIMEOUT 60: django-q2 must not time the slow step out before the test kills its worker.
ENV = {"SAGA_LEASE_SECONDS": "2", "SAGA_STEP_DEADLINE_SECONDS": "15", "Q_TIMEOUT": "60"}


@pytest.fixture(scope="module")
def crash_outcomes(django_db_setup, django_db_blocker, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("sagas")
    with django_db_blocker.unblock(), override_settings(SAGA_STEP_DEADLINE_SECONDS=15):
        started = []
        try:
            cluster = Process("qcluster", log_dir=log_dir, name="qcluster", **ENV)
            started.append(cluster)
            recoverer = Process("recover_sagas", "--follow", "--interval", "0.5",
                                log_dir=log_dir, name="recoverer", **ENV)
            started.append(recoverer)
            cluster.wait_for_log("running.")
            sagas = {}
            for how, service in CASES:
                kwargs = {"slow": service} if how == "sigkill" else {"crash": service}
                sagas[(how, service)] = services.start_trip(customer=f"{how}-{service}", **kwargs)
            for service in SERVICES:
                saga = sagas[("sigkill", service)]
                # The booking committed and the service is "slow": the coordinator is between
                # STEP_START and STEP_END. Kill the process that wrote STEP_START.
                def mid_step(s: Saga = saga, v: str = service) -> bool:
                    return Fault.objects.filter(point=f"saga.{v}.book", scope=s.fault_scope,
                                                fired=1).exists()

                wait_until(mid_step, timeout=60,
                           message=f"{service} to be mid-step:\n{cluster.log()[-2000:]}")
                start = SagaLog.objects.get(saga=saga, event="STEP_START", step=service)
                os.kill(start.pid, signal.SIGKILL)
            ids = [s.pk for s in sagas.values()]
            wait_until(lambda: not Saga.objects.filter(pk__in=ids, state__in=[
                State.RUNNING, State.COMPENSATING]).exists(), timeout=120, interval=0.5,
                message="every saga to end:\n" + recoverer.log()[-2000:])
            return {
                key: {
                    "state": Saga.objects.get(pk=s.pk).state,
                    "log": list(SagaLog.objects.filter(saga=s).order_by("seq")),
                    "bookings": booking_states(saga_id=s.pk),
                    "times": times_booked(s.pk),
                }
                for key, s in sagas.items()
            }
        finally:
            for proc in reversed(started):
                proc.stop()
            faults.disarm_all()
            call_command("flush", interactive=False, verbosity=0)


@pytest.mark.cluster
@pytest.mark.parametrize(("how", "service"), CASES, ids=[f"{h}-{s}" for h, s in CASES])
def test_a_coordinator_killed_mid_step_is_recovered(crash_outcomes, how, service):
    out = crash_outcomes[(how, service)]
    events = [(e.event, e.step) for e in out["log"]]
    # no step's effect happened twice, whatever was re-run
    assert all(n == 1 for n in out["times"].values()), out["times"]
    assert events.count(("STEP_START", service)) == (2 if service != "flight" else 1)
    if service in ("hotel", "car"):  # idempotent: forward recovery
        assert out["state"] == State.COMPLETED
        assert out["bookings"] == {"hotel": "booked", "car": "booked", "flight": "booked"}
        rerun = [e for e in out["log"] if e.event == "STEP_START" and e.step == service][1]
        assert rerun.detail.startswith("forward recovery")
    else:  # not idempotent: backward recovery
        assert out["state"] == State.COMPENSATED
        assert out["bookings"] == {"hotel": "cancelled", "car": "cancelled",
                                   "flight": "cancelled"}
        abort = next(e for e in out["log"] if e.event == "SAGA_ABORT")
        assert "not idempotent: backward recovery" in abort.detail
        assert [s for e, s in events if e == "COMP_END"] == ["flight", "car", "hotel"]
    killed = next(e for e in out["log"] if e.event == "STEP_START" and e.step == service)
    assert {e.pid for e in out["log"] if e.seq > killed.seq} != {killed.pid}, (
        "someone other than the dead coordinator finished the saga")


@pytest.mark.cluster
def test_two_recoverers_at_once_advance_each_saga_exactly_once(transactional_db, start_process):
    sagas = [services.start_trip(customer=f"c{i}") for i in range(60)]  # no cluster runs them
    Saga.objects.update(lease_until="2000-01-01T00:00:00Z")  # every lease ran out
    recoverers = [start_process("recover_sagas", "--once", "--batch", "3", name=f"recover{i}")
             for i in range(2)]
    for proc in recoverers:
        assert proc.proc.wait(timeout=60) == 0, proc.log()
    writers = set()
    for saga in sagas:
        saga.refresh_from_db()
        assert saga.state == State.COMPLETED
        log = list(saga.log.order_by("seq"))
        assert [e.event for e in log].count("STEP_START") == 3
        assert [e.event for e in log].count("SAGA_END") == 1
        pids = {e.pid for e in log[1:]}
        assert len(pids) == 1, f"saga {saga.pk} was advanced by {pids}"
        writers |= pids
    assert writers <= {p.pid for p in recoverers}


@pytest.mark.beside_lab  # mostly waits: make test's second pass
@pytest.mark.cluster
def test_a_compensation_that_kills_its_coordinator_every_time_ends_stuck(
    transactional_db, start_process
):
    env = {"SAGA_LEASE_SECONDS": "1", "SAGA_MAX_COMP_ATTEMPTS": "2"}
    saga = services.start_trip(customer="doomed", fail="car")
    faults.arm(point="saga.hotel.cancel", action="crash", times=None, scope=saga.fault_scope)
    recoverer = start_process("recover_sagas", "--follow", "--interval", "0.3",
                              name="recoverer", ready="recovering", **env)
    # The cluster runs the saga until its first crash and never again (one attempt): from
    # then on the recoverer's passes are the ones that die.
    start_process("qcluster", ready="running.", Q_MAX_ATTEMPTS="1", JOB_MAX_ATTEMPTS="1", **env)
    wait_until(lambda: Saga.objects.get(pk=saga.pk).state == State.STUCK, timeout=60,
               interval=0.3, message="the saga to be stuck:\n" + recoverer.log()[-2000:])
    log = [(e.event, e.step) for e in saga.log.order_by("seq")]
    assert log.count(("COMP_START", "hotel")) == 2
    assert ("COMP_END", "hotel") not in log
    assert MODELS["hotel"].objects.get(saga_id=saga.pk).status == "booked"  # for a person
    assert recoverer.proc.poll() is None, "the recoverer survives its dying passes"
    assert "died with exit status 70" in recoverer.log()


@pytest.mark.cluster
@pytest.mark.any_broker
@pytest.mark.beside_lab  # 12 s of waiting on processes: make test's second pass
def test_a_coordinator_that_lost_its_lock_is_fenced_off_once_recovery_takes_over(
    transactional_db, start_process
):
    """Found reading the code: the advisory lock keeps two coordinators apart only while the
    first one's session lives. Here the first coordinator's lock session ends while its hotel
    call is slow; recovery takes the saga over and is itself slow at the car; then the first
    coordinator wakes up. Its appends must be refused (the saga's epoch moved on), or both
    would drive the saga at once."""
    from django.db import connection

    env = {"SAGA_LEASE_SECONDS": "2", "SAGA_STEP_DEADLINE_SECONDS": "30", "Q_TIMEOUT": "60"}
    first = start_process("qcluster", ready="running.", **env)
    saga = services.start_trip(customer="fenced", slow="hotel")  # answers after 7 s
    wait_until(lambda: Fault.objects.filter(point="saga.hotel.book", scope=saga.fault_scope,
                                            fired=1).exists(),
               timeout=30, message="the first coordinator to be inside the hotel call")
    with connection.cursor() as cur:  # end the session holding the saga's advisory lock
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
                    " AND classid = %s AND objid = %s", [batch.LOCK_CLASS, saga.pk])
        assert cur.fetchone()[0]
    faults.arm(point="saga.car.book", action="delay", times=1, delay_ms=8000)
    wait_until(lambda: recovery.any_due(), timeout=10, message="the lease to run out")
    recoverer = start_process("recover_sagas", "--once", name="recoverer", **env)
    wait_until(lambda: Saga.objects.get(pk=saga.pk).state == State.COMPLETED, timeout=60,
               interval=0.5, message="the saga to complete:\n" + first.log()[-2000:]
               + recoverer.log()[-2000:])
    first.wait_for_log("was taken over by another coordinator", timeout=20)
    log = list(SagaLog.objects.filter(saga=saga).order_by("seq"))
    taken_over = next(i for i, e in enumerate(log) if e.pid == recoverer.pid)
    assert {e.pid for e in log[taken_over:]} == {recoverer.pid}, [
        (e.seq, e.event, e.step, e.pid) for e in log]
    assert booking_states(saga_id=saga.pk) == {s: "booked" for s in SERVICES}
    assert times_booked(saga.pk) == {
        "hotel": 1, "car": 1, "flight": 1}


@pytest.mark.beside_lab  # mostly waits: make test's second pass
@pytest.mark.cluster
@pytest.mark.any_broker
def test_a_service_call_that_never_returns_does_not_block_the_recoverer(
    transactional_db, start_process
):
    """Found reading the code: deadlines were checked only after a call returned, so one
    hung service call held `recover_sagas --follow` (and every other due saga) forever. The
    pass that hangs is killed; the other sagas are recovered meanwhile, and the hung one,
    in doubt, is ended by recovery like any coordinator that died mid-step."""
    env = {"SAGA_LEASE_SECONDS": "1", "SAGA_MAX_FORWARD_ATTEMPTS": "2"}
    with override_settings(SAGA_LEASE_SECONDS=0.5):  # no cluster runs: both are due at once
        hung = services.start_trip(customer="hung", slow="hotel")
        other = services.start_trip(customer="other")
    # `slow` scoped a delay to this saga; make it one that never ends, at every attempt.
    faults.arm(point="saga.hotel.book", action="delay", times=None, delay_ms=600_000,
               scope=hung.fault_scope)
    recoverer = start_process("recover_sagas", "--follow", "--interval", "0.2", "--batch", "1",
                              "--saga-timeout", "2", name="recoverer", ready="recovering",
                              **env)
    wait_until(lambda: Saga.objects.get(pk=other.pk).state == State.COMPLETED, timeout=30,
               interval=0.2,
               message=lambda: "the other saga to complete:\n" + recoverer.log()[-2000:])
    wait_until(lambda: Saga.objects.get(pk=hung.pk).state not in (
        State.RUNNING, State.COMPENSATING), timeout=60, interval=0.3,
        message=lambda: "the hung saga to end:\n" + recoverer.log()[-2000:])
    assert Saga.objects.get(pk=hung.pk).state == State.COMPENSATED
    assert booking_states(saga_id=hung.pk) == {
        "hotel": "cancelled", "car": "none", "flight": "none"}
    assert "finished no saga in 2 s" in recoverer.log()
    assert recoverer.proc.poll() is None, "the recoverer outlives the passes it killed"
