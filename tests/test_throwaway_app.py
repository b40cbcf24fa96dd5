"""An app the infrastructure has never heard of (tests/throwaway) plugs in its own outbox
topic, fault point, consistency check and dashboard panel from its AppConfig.ready(), and
they work on a real cluster and relay: no edit to outbox, faults, jobs or the dashboard."""

import pytest
from django.core.management import call_command
from django.db import transaction
from django.urls import reverse

from dashboard.registry import Status
from dashboard.selectors import consistency_checks
from faults import services as faults
from faults.models import Fault
from outbox import services as outbox
from outbox.models import OutboxMessage
from tests.helpers import wait_until
from tests.throwaway import greetings


@pytest.mark.cluster
@pytest.mark.any_broker  # the retry after the injected fault is pgbroker's (1 s backoff)
def test_a_new_app_brings_its_topic_fault_point_check_and_panel(
    qcluster, start_process, tmp_path, admin_client, capsys
):
    faults.arm(point=greetings.POINT, action="raise", times=1)
    with transaction.atomic():
        outbox.publish(topic=greetings.TOPIC, payload={"to": "ann", "dir": str(tmp_path)})
    relay = start_process("relay_outbox", "--follow", name="relay", ready="relaying")
    wait_until(lambda: (tmp_path / "ann.txt").exists(), timeout=30,
               message=lambda: "the greeting to be written:\n" + qcluster.log()[-2000:]
               + relay.log()[-1000:])
    assert (tmp_path / "ann.txt").read_text() == "hello ann\n"
    assert Fault.objects.get(point=greetings.POINT, scope="").fired == 1, (
        "its fault point fired on the first attempt; the retry wrote the file")
    assert OutboxMessage.objects.published().filter(topic=greetings.TOPIC).count() == 1

    (tmp_path / "ann.txt").unlink()  # the greeting is lost: its check says so
    (check,) = [c for c in consistency_checks() if c.name == "greetings_unanswered"]
    assert (check.status, check.ids) == (Status.VIOLATION, ["ann"])
    with pytest.raises(SystemExit) as exit_:
        call_command("check_consistency")
    assert exit_.value.code == 1
    assert "every published greeting was written" in capsys.readouterr().out

    page = admin_client.get(reverse("admin:dashboard_panels"))
    assert b'id="panel-greetings"' in page.content
    assert b'<td class="num greetings-unanswered">1</td>' in page.content
    assert b"check-greetings_unanswered" in page.content
