"""The history checker on events made by hand: intervals, overlaps, redelivery after a cut."""

import pytest

from experiments.history import attempts, concurrent, redelivery, summary, taken_back


def start(job, host, pid, t, **kw):
    return {"e": "start", "job": job, "host": host, "pid": pid, "t": t, **kw}


def end(job, host, pid, t, ok=True):
    return {"e": "end", "job": job, "host": host, "pid": pid, "t": t, "ok": ok}


def test_one_after_the_other_is_not_concurrent_and_an_overlap_is():
    events = [start("pg:1", "w1", 10, 1.0), end("pg:1", "w1", 10, 2.0),
              start("pg:1", "w2", 20, 2.5), end("pg:1", "w2", 20, 3.0),
              start("pg:2", "w1", 10, 3.0), start("pg:2", "w2", 21, 3.5),
              end("pg:2", "w2", 21, 4.0), end("pg:2", "w1", 10, 4.5)]
    found = attempts(events)
    assert [(a.job, a.host, a.how) for a in found] == [
        ("pg:1", "w1", "ended"), ("pg:1", "w2", "ended"), ("pg:2", "w1", "ended"),
        ("pg:2", "w2", "ended")]
    assert [(a.job, b.job) for a, b in concurrent(found)] == [("pg:2", "pg:2")]


def test_an_attempt_without_an_end_is_closed_by_its_death_or_its_kill_or_runs_forever():
    events = [start("pg:1", "w1", 10, 1.0, ppid=5, pgid=4),
              {"e": "died", "job": "pg:1", "host": "w1", "pid": 5, "t": 1.5, "worker": 10},
              start("pg:1", "w1", 11, 1.6, ppid=5, pgid=4), end("pg:1", "w1", 11, 1.7),
              start("pg:2", "w2", 30, 2.0, ppid=31, pgid=32),  # its whole group is killed
              start("pg:2", "w1", 11, 3.0), end("pg:2", "w1", 11, 3.1),
              start("pg:3", "w3", 40, 5.0),  # never seen again
              start("pg:3", "w1", 11, 9.0), end("pg:3", "w1", 11, 9.1)]
    found = attempts(events, kills=[(2.5, 32)])
    by = {(a.job, a.pid): a for a in found}
    assert by[("pg:1", 10)].end == 1.5
    assert by[("pg:1", 10)].how.startswith("died")
    assert (by[("pg:2", 30)].end, by[("pg:2", 30)].how) == (2.5, "killed")
    assert by[("pg:3", 40)].end is None
    assert [(a.job, b.job) for a, b in concurrent(found)] == [("pg:3", "pg:3")]


def test_redelivery_and_take_back_are_measured_from_the_cut():
    events = [start("pg:1", "w1", 10, 1.0, owner="ab"), start("pg:2", "w1", 11, 1.0),
              end("pg:2", "w1", 11, 1.5, ok=False),  # failed there: retried, not redelivered
              {"e": "died", "job": "", "host": "w1", "pid": 9, "t": 4.6, "worker": 10},
              {"e": "took_back", "job": "", "host": "w2", "pid": 20, "t": 9.0, "owner": "ab"},
              start("pg:1", "w2", 21, 9.5), end("pg:1", "w2", 21, 9.6),
              start("pg:2", "w2", 21, 9.7), end("pg:2", "w2", 21, 9.8)]
    found = attempts(events)
    assert redelivery(found, [(2.0, "w1")]) == [7.5]
    assert taken_back(events, [(2.0, "w1")]) == [7.0]
    s = summary(found, [(2.0, "w1")], events)
    assert (s["ran_concurrently"], s["redelivery_max_s"], s["taken_back_max_s"]) == (0, 7.5, 7.0)


def took_back(owner, t):
    return {"e": "took_back", "job": "", "host": "w2", "pid": 20, "t": t, "owner": owner}


@pytest.mark.parametrize(("kills", "died"), [
    ([(4.0, 8)], []),  # its whole cluster (process group 8) killed
    ([(4.0, 9)], []),  # its dispatcher killed
    ([], [{"e": "died", "job": "", "host": "w1", "pid": 8, "t": 4.0, "children_of": 9}]),
], ids=["cluster-killed", "dispatcher-killed", "dispatcher-hung"])
def test_take_back_counts_only_the_owners_alive_on_the_host_at_the_cut(kills, died):
    """A cluster killed a second before its host was cut off: its key was freed by the kill,
    and its jobs taken back 1.25 s after the cut, which measures the kill, not the cut. Only
    the cluster that replaced it, alive at the cut, is measured (7 s)."""
    events = sorted([start("pg:1", "w1", 10, 1.0, owner="aa", ppid=9, pgid=8), *died,
                     start("pg:2", "w1", 30, 4.5, owner="bb", ppid=29, pgid=28),
                     took_back("aa", 6.25), took_back("bb", 12.0),
                     start("pg:3", "w1", 40, 20.0, owner="cc", ppid=39, pgid=38),
                     took_back("cc", 21.0)],  # started after the cut: not the cut's
                    key=lambda e: e["t"])
    cut = [(5.0, "w1")]
    assert taken_back(events, cut, kills) == [7.0]
    s = summary(attempts(events, kills), cut, events, kills=kills)
    assert (s["taken_back_after_partition"], s["taken_back_p50_s"]) == (1, 7.0)
    assert taken_back(events, [(3.0, "w1")], kills) == [3.25], "aa was alive at 3.0"


def test_a_saga_step_inside_its_job_is_nested_and_a_death_ends_both():
    events = [start("pg:7", "w1", 10, 1.0), start("saga:1:hotel:book", "w1", 10, 1.1),
              {"e": "died", "job": "pg:7", "host": "w1", "pid": 9, "t": 1.2, "worker": 10},
              start("pg:7", "w1", 11, 1.3), start("saga:1:hotel:book", "w1", 11, 1.4),
              end("saga:1:hotel:book", "w1", 11, 1.5), end("pg:7", "w1", 11, 1.6)]
    found = attempts(events)
    assert [(a.job, a.pid, a.end) for a in found] == [
        ("pg:7", 10, 1.2), ("saga:1:hotel:book", 10, 1.2), ("pg:7", 11, 1.6),
        ("saga:1:hotel:book", 11, 1.5)]
    assert concurrent(found) == []


def test_a_process_group_stopped_executes_nothing_while_it_is():
    """A cluster stopped while its job was taken back and run elsewhere: the two attempts
    overlap in time, but the stopped one executed nothing until it resumed, and ended then."""
    events = [start("pg:1", "w1", 10, 1.0, pgid=4),
              start("pg:1", "w2", 20, 3.0, pgid=5), end("pg:1", "w2", 20, 5.0),
              {"e": "died", "job": "pg:1", "host": "w1", "pid": 10, "t": 6.0, "worker": 10}]
    found = attempts(events)
    assert [(a.job, b.job) for a, b in concurrent(found)] == [("pg:1", "pg:1")]
    assert concurrent(found, paused=[(2.0, 6.0, 4)]) == []
    assert len(concurrent(found, paused=[(2.0, 4.0, 4)])) == 1, "it ran on after resuming"
    assert len(concurrent(found, paused=[(2.0, 6.0, 99)])) == 1, "another group was stopped"


def test_a_worker_that_exits_on_resuming_ran_nothing_after_the_pause():
    events = [start("pg:1", "w1", 10, 1.0, pgid=4),
              start("pg:1", "w2", 20, 3.0, pgid=5),
              {"e": "died", "job": "pg:1", "host": "w1", "pid": 10, "t": 4.004, "worker": 10,
               "how": "its cluster's key was lost while it was stopped"},
              end("pg:1", "w2", 20, 5.0)]
    found = attempts(events)
    assert concurrent(found, paused=[(2.0, 4.0, 4)]) == []


def test_a_dispatcher_killed_for_hanging_ends_its_workers_attempts():
    events = [start("pg:1", "w1", 10, 1.0, ppid=9, pgid=8),
              {"e": "died", "job": "", "host": "w1", "pid": 8, "t": 2.0, "children_of": 9},
              start("pg:1", "w2", 20, 3.0), end("pg:1", "w2", 20, 3.5)]
    found = attempts(events)
    assert (found[0].end, concurrent(found)) == (2.0, [])


def test_a_worker_that_started_a_job_as_its_dispatcher_was_killed_dies_with_it():
    events = [start("pg:1", "w1", 10, 5.004, ppid=9, pgid=8),  # 4 ms after the kill
              start("pg:1", "w2", 20, 7.0), end("pg:1", "w2", 20, 7.5)]
    found = attempts(events, kills=[(5.0, 9)])
    assert (found[0].how, found[0].end, concurrent(found)) == ("killed", 5.004, [])
