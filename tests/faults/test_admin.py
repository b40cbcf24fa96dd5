from django.urls import reverse

from faults import services
from faults.models import Fault
from faults.points import POINTS
from users.models import User

URL = reverse("admin:faults_fault_changelist")


def test_the_fault_page_lists_every_declared_point_and_hides_per_job_faults(admin_client):
    services.arm(point="signup.part2", action="raise", times=1, scope="some-signup")
    page = admin_client.get(URL).content.decode()
    for point in POINTS:
        assert point in page
    assert "some-signup" not in page
    assert "some-signup" in admin_client.get(URL + "?for=job").content.decode()


def test_arm_and_disarm_actions(admin_client):
    services.sync_points()  # a row per declared point ("List them")
    fault = Fault.objects.get(point="email.send", scope="")
    admin_client.post(URL, {"action": "arm_crash_1", "_selected_action": [fault.pk]})
    fault.refresh_from_db()
    assert (fault.action, fault.remaining, fault.is_armed) == ("crash", 1, True)
    admin_client.post(URL, {"action": "disarm", "_selected_action": [fault.pk]})
    fault.refresh_from_db()
    assert not fault.is_armed


def test_staff_who_are_not_superusers_cannot_arm(db, client):
    client.force_login(User.objects.create_user(username="s", password="pw", is_staff=True,
                                                is_superuser=False))
    user = User.objects.get(username="s")
    from django.contrib.auth.models import Permission

    user.user_permissions.add(Permission.objects.get(codename="view_fault"))
    services.sync_points()
    fault = Fault.objects.get(point="email.send", scope="")
    page = client.get(URL).content.decode()
    assert "Arm: raise once" not in page
    client.post(URL, {"action": "arm_raise_1", "_selected_action": [fault.pk]})
    fault.refresh_from_db()
    assert not fault.is_armed
