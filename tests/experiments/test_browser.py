"""The saga styles side by side, in a real Chromium: an experiment started from the admin's
form with saga style `both`, run to its end by real processes, and its page read."""

import os
import re

import pytest

from tests.dashboard.test_browser import PRODUCT, log_in
from tests.helpers import CHROMIUM, free_port
from users.models import User

pytestmark = [
    pytest.mark.browser,
    # CI must run it: there, a missing chromium is a failure, not a skip.
    pytest.mark.skipif(not CHROMIUM and not os.environ.get("CI"),
                       reason="Debian's chromium is not installed (make test-deps)"),
]


@pytest.fixture
def web(transactional_db, start_process):
    port = free_port()
    start_process("runserver", f"127.0.0.1:{port}", "--noreload", name="web",
                  ready="Quit the server", **PRODUCT)
    User.objects.create_superuser(username="admin", password="s3cret-pass")
    return f"http://127.0.0.1:{port}"


def test_both_styles_side_by_side_on_the_experiment_page(web, page, shots):
    from playwright.sync_api import expect

    log_in(page, web, "admin", "/admin/experiments/experiment/")
    form = "#experiment-start"
    page.select_option(f"{form} select[name=preset]", "")
    page.fill(f"{form} input[name=signups]", "0")
    page.fill(f"{form} input[name=sagas]", "6")
    page.select_option(f"{form} select[name=style]", "both")
    page.fill(f"{form} input[name=seed]", "1")
    page.click(f"{form} input[type=submit]")
    expect(page.locator(".messagelist")).to_contain_text("--sagas 6 ")
    expect(page.locator(".messagelist")).to_contain_text("--style both --seed 1")
    # its page refreshes itself while the run goes on (a goto of ours could collide with
    # that navigation): wait for what it shows
    expect(page.locator(".experiment-status")).to_have_attribute(
        "data-status", re.compile("^(done|failed)$"), timeout=120_000)
    expect(page.locator(".experiment-status")).to_have_attribute("data-status", "done")
    expect(page.locator(".verdict")).to_contain_text("Targets met")
    table = page.locator("#experiment-styles table")
    for style, messages in (("orchestrated", "6"), ("choreographed", "18")):
        row = table.locator(f"tr.style-{style}")
        expect(row).to_have_attribute("data-started", "6")
        expect(row).to_have_attribute("data-half-done", "0")
        expect(row).to_have_attribute("data-flights-booked-twice", "0")
        expect(row).to_have_attribute("data-messages", messages)  # 1 job; 3 events each
    assert table.locator("tbody tr").all_inner_texts()[0].startswith("orchestrated")
    chart = page.locator("svg.chart-styles")
    expect(chart.locator("g.panel")).to_have_count(2)
    expect(chart.locator("g.panel-orchestrated text.panel-title")).to_have_text("orchestrated")
    expect(chart.locator("g.panel-choreographed text.panel-title")).to_have_text("choreographed")
    left = chart.locator("g.panel-orchestrated").bounding_box()
    right = chart.locator("g.panel-choreographed").bounding_box()
    assert left is not None
    assert right is not None
    assert left["x"] + left["width"] <= right["x"], "side by side"
    # the same scale in both panels: choreography's messages bar is three times as long
    short = chart.locator("g.panel-orchestrated rect.bar-messages_per_saga").bounding_box()
    long = chart.locator("g.panel-choreographed rect.bar-messages_per_saga").bounding_box()
    assert short is not None
    assert long is not None
    assert long["width"] == pytest.approx(3 * short["width"], rel=0.02)
    page.locator("#experiment-styles").screenshot(path=str(shots / "experiment-styles.png"))
