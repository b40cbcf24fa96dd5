"""The whole talk from the dashboard, in a real Chromium, against a real server, cluster,
relay and recoverer on the test database.

Screenshots go to $SCREENSHOT_DIR (docs/*.png, the images of README.md and docs/:
`make screenshots`), else to tmp.
"""

import os
import re

import pytest

from tests.helpers import CHROMIUM, free_port, wait_until
from users.models import User

pytestmark = [
    pytest.mark.browser,
    # CI must run it: there, a missing chromium is a failure, not a skip.
    pytest.mark.skipif(not CHROMIUM and not os.environ.get("CI"),
                       reason="Debian's chromium is not installed (make test-deps)"),
]
# Playwright's sync API runs an event loop in this thread; the ORM calls below are plain
# synchronous test code, so Django's async-safety guard does not apply.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
# The web server runs the product's settings: the suite's throwaway app (tests/settings.py)
# must not show on the screenshots in docs/.
PRODUCT = {"DJANGO_SETTINGS_MODULE": "project.settings"}


@pytest.fixture
def live_stack(transactional_db, start_process):
    port = free_port()
    env = {"SAGA_LEASE_SECONDS": "2"}
    start_process("qcluster", ready="running.", **env)
    start_process("qcluster", name="qcluster-redis", ready="running.", Q_CLUSTER_NAME="redis",
                  **env)
    start_process("relay_outbox", "--follow", name="relay", ready="relaying", **env)
    start_process("recover_sagas", "--follow", name="recoverer", ready="recovering", **env)
    start_process("runserver", f"127.0.0.1:{port}", "--noreload", name="web",
                  ready="Quit the server", **env, **PRODUCT)
    User.objects.create_superuser(username="admin", password="s3cret-pass")
    return f"http://127.0.0.1:{port}"


def test_the_talk_from_the_dashboard(live_stack, page, shots):
    from playwright.sync_api import expect

    page.goto(f"{live_stack}/admin/login/?next=/admin/dashboard/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "s3cret-pass")
    page.click("input[type=submit]")
    expect(page.locator("h1")).to_have_text("Dashboard")

    # "die in part 2", for the next three signups, whoever they are
    page.select_option("#fault-form select[name=point]", "signup.part2")
    page.select_option("#fault-form select[name=action]", "raise")
    page.fill("#fault-form input[name=times]", "3")
    page.click("#fault-form input[type=submit]")
    expect(page.locator(".messagelist")).to_contain_text("Armed signup.part2: raise, 3 time(s)")

    for name, mode in (("matt-dw", "dual-write"), ("matt-outbox", "outbox"), ("matt-que", "que")):
        page.fill("#signup-form input[name=name]", name)
        page.select_option("#signup-form select[name=mode]", mode)
        page.select_option("#signup-form select[name=fault]", "")
        page.click("#signup-form input[type=submit]")
        expect(page.locator(".messagelist")).to_contain_text(f"Signup of {name} ({mode}) enqueued")

    # The page refreshes itself; wait for what it shows to settle.
    row = page.locator
    expect(row("tr.mode-dual-write")).to_have_attribute("data-lost", "1", timeout=30_000)
    expect(row("tr.mode-outbox")).to_have_attribute("data-emails", "1", timeout=30_000)
    expect(row("tr.mode-que")).to_have_attribute("data-emails", "1", timeout=30_000)
    expect(row("tr.mode-dual-write td.lost")).to_contain_text("matt-dw")
    expect(row("tr.mode-outbox")).to_have_attribute("data-lost", "0")
    expect(row("tr.mode-que")).to_have_attribute("data-lost", "0")
    expect(row("tr.check-dual_write_lost_email")).to_have_attribute("data-status", "expected")
    expect(row("tr.check-reliable_signups_lost_email")).to_have_attribute("data-status", "ok")
    expect(row("#panel-faults")).to_contain_text("none")  # all three firings used up
    expect(row("tr.mode-dual-write td.store")).to_have_text("Redis")
    expect(row("tr.mode-outbox td.store")).to_contain_text("Redis via the relay")
    expect(row("tr.mode-que td.store")).to_have_text("PostgreSQL")
    page.screenshot(path=str(shots / "dashboard.png"), full_page=True)

    # Redis stops: que carries on, the outbox waits, dual-write loses.
    page.select_option("#redis-form select[name=action]", "stop")
    page.click("#redis-form input[type=submit]")
    expect(page.locator(".messagelist")).to_contain_text("Redis stopped")
    expect(row("#panel-redis")).to_have_attribute("data-up", "0", timeout=10_000)
    for name, mode in (("rita-dw", "dual-write"), ("rita-outbox", "outbox"), ("rita-que", "que")):
        page.fill("#signup-form input[name=name]", name)
        page.select_option("#signup-form select[name=mode]", mode)
        page.select_option("#signup-form select[name=fault]", "")
        page.click("#signup-form input[type=submit]")
    expect(row("tr.mode-que")).to_have_attribute("data-emails", "2", timeout=30_000)
    expect(row("tr.mode-dual-write")).to_have_attribute("data-lost", "2", timeout=30_000)
    expect(row("tr.mode-outbox")).to_have_attribute("data-emails", "1")
    expect(row("tr.mode-outbox")).to_have_attribute("data-users", "2", timeout=30_000)
    expect(row("#panel-outbox")).to_contain_text("waiting", timeout=10_000)
    page.screenshot(path=str(shots / "dashboard-redis-down.png"), full_page=True)
    page.select_option("#redis-form select[name=action]", "start")
    page.click("#redis-form input[type=submit]")
    expect(page.locator(".messagelist")).to_contain_text("Redis started")
    expect(row("tr.mode-outbox")).to_have_attribute("data-emails", "2", timeout=30_000)
    expect(row("tr.mode-outbox")).to_have_attribute("data-lost", "0")
    expect(row("tr.check-reliable_signups_lost_email")).to_have_attribute("data-status", "ok")

    # A trip with the car failing: compensations in reverse order, on the timeline.
    page.fill("#trip-form input[name=customer]", "alice")
    page.select_option("#trip-form select[name=fail]", "car")
    page.select_option("#trip-form select[name=crash]", "")
    page.click("#trip-form input[type=submit]")
    expect(page.locator(".messagelist")).to_contain_text("Trip saga")
    message = page.locator(".messagelist").inner_text()
    found = re.search(r"Trip saga (\d+) started", message)
    assert found, message
    saga_id = found.group(1)

    def compensated() -> bool:
        page.goto(f"{live_stack}/admin/sagas/saga/{saga_id}/change/")
        return page.locator(".saga-state").inner_text() == "compensated"

    wait_until(compensated, timeout=30, interval=0.5, message="the saga to be compensated")
    # ...and the same page is one click away from the dashboard
    page.goto(f"{live_stack}/admin/dashboard/")
    page.click(f"#panel-recent-sagas tr.saga-{saga_id} a:has-text('timeline')")
    expect(page).to_have_url(re.compile(f"/admin/sagas/saga/{saga_id}/change/$"))
    expect(page.locator("svg.saga-timeline g.event")).to_have_count(11)
    labels = page.locator("svg.saga-timeline g.event text.label").all_text_contents()
    steps = [re.sub(r"^\d+\. ", "", label) for label in labels]
    assert steps == [
        "Saga START", "T: book hotel", "T: hotel success", "T: book car", "T: car FAIL",
        "Saga ABORT", "C: cancel car", "C: car success", "C: cancel hotel", "C: hotel success",
        "Saga END (compensated)",
    ]
    expect(page.locator("svg.saga-timeline g.event-fail")).to_have_count(2)
    page.screenshot(path=str(shots / "saga-timeline.png"), full_page=True)


@pytest.fixture
def web(transactional_db, start_process):
    port = free_port()
    start_process("runserver", f"127.0.0.1:{port}", "--noreload", name="web",
                  ready="Quit the server", **PRODUCT)
    User.objects.create_superuser(username="admin", password="s3cret-pass")
    return f"http://127.0.0.1:{port}"


def test_the_talk_experiment_from_the_admin(web, page, shots):
    """Start the `talk` preset from the Experiments page, watch it, read the result."""
    from playwright.sync_api import expect

    page.goto(f"{web}/admin/login/?next=/admin/experiments/experiment/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "s3cret-pass")
    page.click("input[type=submit]")
    page.select_option("#experiment-start select[name=preset]", "talk")
    page.fill("#experiment-start input[name=seed]", "2026")
    page.click("#experiment-start input[type=submit]")
    expect(page.locator(".messagelist")).to_contain_text("manage.py experiment --preset talk "
                                                         "--seed 2026")
    url = page.url

    def finished() -> bool:
        page.goto(url)
        return page.locator(".experiment-status").get_attribute("data-status") in ("done",
                                                                                  "failed")

    wait_until(finished, timeout=120, interval=1, message="the experiment to finish")
    expect(page.locator(".experiment-status")).to_have_attribute("data-status", "done")
    expect(page.locator(".verdict")).to_contain_text("Targets met")
    expect(page.locator("tr.mode-dual-write")).to_have_attribute("data-lost", "1")
    expect(page.locator("tr.mode-outbox")).to_have_attribute("data-lost", "0")
    expect(page.locator("tr.mode-que")).to_have_attribute("data-lost", "0")
    for mode in ("dual-write", "outbox", "que"):  # nothing was killed: nothing sent twice
        expect(page.locator(f"tr.mode-{mode}")).to_have_attribute("data-resent", "0")
    expect(page.locator("svg.chart-outcomes rect")).to_have_count(4)  # 3 all-green, 1 red
    expect(page.locator("svg.chart-throughput polyline")).to_have_count(2)
    expect(page.locator(".half-done")).to_have_attribute("data-n", "0")
    page.screenshot(path=str(shots / "experiment.png"), full_page=True)
    page.goto(f"{web}/admin/experiments/experiment/")
    expect(page.locator("#result_list")).to_contain_text("targets met")


def viewer_and_staff() -> None:
    """A viewer (staff in the Viewers group) and a plain staff user. The groups come from a
    migration, which a transactional test's flush removes: made again if needed."""
    import importlib

    from django.apps import apps
    from django.contrib.auth.models import Group
    from django.db import connection

    if Group.objects.filter(name__in=["Viewers", "Operators"]).count() != 2:
        importlib.import_module("dashboard.migrations.0002_viewers_and_operators").fill_groups(
            apps, connection.alias)
    viewer = User.objects.create_user(username="vera", password="s3cret-pass", is_staff=True)
    viewer.groups.add(Group.objects.get(name="Viewers"))
    User.objects.create_user(username="stan", password="s3cret-pass", is_staff=True)


def log_in(page, base: str, username: str, next_url: str = "/admin/") -> None:
    page.goto(f"{base}/admin/login/?next={next_url}")
    page.fill("#id_username", username)
    page.fill("#id_password", "s3cret-pass")
    page.click("input[type=submit]")


def test_a_viewer_sees_the_dashboard_without_controls_and_a_styled_403(web, page, tmp_path):
    from playwright.sync_api import expect

    viewer_and_staff()
    not_found = []
    page.on("response", lambda r: not_found.append(r.url) if r.status == 404 else None)
    log_in(page, web, "vera", "/admin/dashboard/")
    expect(page.locator("h1")).to_have_text("Dashboard")
    for panel in ("signups", "invariants", "outbox", "queue", "redis", "sagas", "faults",
                  "recent-sagas"):
        expect(page.locator(f"#panel-{panel}")).to_be_visible()
    expect(page.locator("#read-only-note")).to_contain_text("Operators")
    expect(page.locator(".dash-controls form")).to_have_count(0)
    expect(page.locator("input[type=submit]")).to_have_count(0)
    first = page.locator(".refreshed").last.inner_text()
    expect(page.locator(".refreshed").last).not_to_have_text(first, timeout=10_000)  # live
    page.screenshot(path=str(tmp_path / "dashboard-viewer.png"), full_page=True)

    # The dashboard's links open, read-only: the outbox, the queue, the sagas.
    page.click("#panel-outbox caption a")
    expect(page.locator("#content h1")).to_contain_text("outbox message")
    expect(page.locator("select[name=action]")).to_have_count(0)  # no action to run
    page.goto(f"{web}/admin/dashboard/")
    page.click("#panel-sagas caption a")
    expect(page).to_have_url(f"{web}/admin/sagas/saga/")
    expect(page.locator("text=Start a trip")).to_have_count(0)

    # What only operators may open: the admin's own 403 page, styled, with the way in.
    response = page.goto(f"{web}/admin/sagas/saga/start/")
    assert response.status == 403
    expect(page.locator("#site-name")).to_have_text("Reliable background work")
    expect(page.locator("h1")).to_have_text("Not allowed (403)")
    expect(page.locator("#user-tools")).to_contain_text("vera")
    header = page.locator("#header").evaluate("e => getComputedStyle(e).backgroundColor")
    assert header not in ("rgba(0, 0, 0, 0)", "transparent"), "the admin's CSS is applied"
    page.screenshot(path=str(tmp_path / "403-viewer.png"), full_page=True)

    # Staff without a group: 403 for the dashboard, and a home page with nothing to open.
    page.click("#logout-form button")
    log_in(page, web, "stan")
    expect(page.locator("#content-main")).to_contain_text("permission to view or edit anything")
    expect(page.locator("#dashboard-link")).to_have_count(0)
    assert page.goto(f"{web}/admin/dashboard/").status == 403
    expect(page.locator("h1")).to_have_text("Not allowed (403)")
    assert not not_found, f"404s (the favicon?): {not_found}"


# Every fetch the page makes, counted and (when window.__delay is set) slowed down.
COUNT_FETCHES = """
window.__inflight = 0; window.__most = 0; window.__fetches = 0; window.__delay = 0;
const realFetch = window.fetch.bind(window);
window.fetch = async (...args) => {
  window.__inflight++; window.__fetches++;
  window.__most = Math.max(window.__most, window.__inflight);
  try {
    if (window.__delay) await new Promise(r => setTimeout(r, window.__delay));
    return await realFetch(...args);
  } finally { window.__inflight--; }
};
"""


def test_the_panels_refresh_one_at_a_time_back_off_and_stop_when_signed_out(web, page):
    """Found in issue 18: a refresh slower than its 2 s interval stacked requests (one open
    tab could occupy every web worker), and an expired session pasted the login page into
    the panels."""
    from playwright.sync_api import expect

    page.add_init_script(COUNT_FETCHES)
    log_in(page, web, "admin", "/admin/dashboard/")
    expect(page.locator("h1")).to_have_text("Dashboard")
    page.evaluate("window.__delay = 2500")  # the server now takes longer than the interval
    start = page.evaluate("window.__fetches")
    wait_until(lambda: page.evaluate("window.__fetches") >= start + 2, timeout=40,
               message="two slow refreshes")
    assert page.evaluate("window.__most") == 1, "refreshes overlapped"
    panels = page.locator("#dashboard-panels")
    assert int(panels.get_attribute("data-interval")) >= 5000, "no back-off after a slow one"

    page.evaluate("window.__delay = 0")
    page.context.clear_cookies()  # the session ends
    expect(page.locator("#dashboard-signed-out")).to_contain_text("your session ended",
                                                                 timeout=40_000)
    expect(panels.locator("#panel-signups")).to_be_visible()  # the last panels stay
    expect(panels.locator("#login-form")).to_have_count(0)
    assert panels.get_attribute("data-stopped") == "signed out"
