"""Jobs of a batched function (pgbroker.batching) run several to a call, each keeping its own
result and attempts; a worker that dies charges every job of its batch, and those run alone
afterwards, so a poison job does not take its neighbours down twice."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
from django.db import transaction
from django_q.models import Failure, Success
from django_q.tasks import async_task

from jobs.selectors import uses_pgbroker
from pgbroker.batching import batched
from pgbroker.models import Job
from tests.helpers import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.beside_lab,
              pytest.mark.skipif(not uses_pgbroker(), reason="pgbroker's workers")]

TASK = "tests.pgbroker.tasks.batch_job"


def batches(path: Path) -> dict[str, list[int]]:
    """{key: the size of each batch it ran in, in order}."""
    sizes: dict[str, list[int]] = defaultdict(list)
    for line in path.read_text().splitlines():
        _, size, key, *_ = line.split()
        sizes[key].append(int(size))
    return sizes


def enqueue(path: Path, keys: list[str]) -> None:
    with transaction.atomic():  # one commit: the cluster claims them together
        for key in keys:
            async_task(TASK, path=str(path), key=key, task_name=key)


def test_jobs_run_in_batches_each_with_its_own_result(transactional_db, start_process,
                                                       tmp_path):
    cluster = start_process("qcluster", ready="running.", Q_WORKERS="1")
    path = tmp_path / "batches"
    keys = [f"job{i}" for i in range(40)] + ["bad1"]
    enqueue(path, keys)
    wait_until(lambda: Success.objects.count() + Failure.objects.count() == len(keys),
               timeout=60, message=lambda: "the jobs to finish:\n" + cluster.log()[-3000:])
    sizes = batches(path)
    assert sorted(sizes) == sorted(keys)
    assert all(len(runs) == 1 for runs in sizes.values()), "each job ran once"
    assert max(runs[0] for runs in sizes.values()) > 1, "several jobs in one call"
    assert max(runs[0] for runs in sizes.values()) <= 10, "never more than the batch size"
    assert {s.name: s.result for s in Success.objects.all()} == {k: k for k in keys[:-1]}
    (failed,) = Failure.objects.all()
    assert failed.name == "bad1"
    assert "bad1 refused" in failed.result


def test_a_worker_dying_mid_batch_charges_every_job_of_it_and_they_run_alone_after(
        transactional_db, start_process, tmp_path):
    cluster = start_process("qcluster", ready="running.", Q_WORKERS="1", Q_MAX_ATTEMPTS="2",
                            JOB_MAX_ATTEMPTS="2")
    path = tmp_path / "batches"
    warm = [f"warm{i}" for i in range(20)]  # fast jobs first: the pipe deepens to a batch
    enqueue(path, warm)
    wait_until(lambda: Success.objects.count() == len(warm), timeout=60,
               message=lambda: "the first jobs:\n" + cluster.log()[-3000:])
    keys = ["a", "b", "die", "c", "d"]
    enqueue(path, keys)
    wait_until(lambda: Success.objects.count() == len(warm) + 4
               and Job.objects.parked().exists(), timeout=60,
               message=lambda: "the batch to settle:\n" + cluster.log()[-3000:])
    sizes = batches(path)
    first = sizes["die"][0]
    assert first > 1, f"the poison job shared a batch: {dict(sizes)}"
    neighbours = [k for k in keys if k != "die" and sizes[k][0] == first]
    assert neighbours, f"some jobs shared its batch: {dict(sizes)}"
    for key in neighbours:  # died with it, ran again alone, and succeeded
        assert sizes[key] == [first, 1], dict(sizes)
    assert sizes["die"] == [first, 1], "its second attempt ran alone, and parked it"
    (parked,) = Job.objects.parked()
    assert parked.attempts == 2
    assert "died" in parked.last_error
    assert set(Success.objects.exclude(name__startswith="warm").values_list(
        "name", flat=True)) == {"a", "b", "c", "d"}


def test_a_batch_size_must_be_a_whole_number_from_2():
    for size in (1, 0, 1001, 2.5, "10"):
        with pytest.raises(ValueError, match="a batch size is a whole number from 2 to 1000"):
            batched(lambda calls: calls, size=size)  # type: ignore[arg-type]


def test_a_batch_form_that_answers_for_the_wrong_number_of_jobs_fails_them_all():
    from pgbroker.batching import Batch
    from pgbroker.cluster.runner import _run_batch

    def one_short(calls: list[dict]) -> list[object]:
        return [c["key"] for c in calls][:-1]

    batch = [{"kwargs": {"key": k}} for k in "abc"]
    wrong = "the batch form of one_short returned 2 results for 3 jobs"
    with pytest.raises(ValueError, match=wrong):
        _run_batch(Batch(one_short, 10), batch, one_short)
    assert not any("success" in job for job in batch), "no job was given a result"
