import pytest

from experiments.charts import nice_step, style_chart, throughput_chart


@pytest.mark.parametrize(("span", "parts", "step"), [
    (6.3, 4, 2), (1.05, 4, 0.5), (4200, 4, 2000), (36, 8, 5), (9, 8, 2), (0.3, 4, 0.1)])
def test_axis_steps_are_round_numbers(span, parts, step):
    assert nice_step(span, parts) == pytest.approx(step)


def test_the_throughput_axes_read_in_round_numbers():
    samples = [{"t": t, "emails": e, "sagas_done": 0}
               for t, e in [(0, 0), (1, 0), (2, 6), (3, 9), (4, 15)]]
    chart = throughput_chart(samples, [])
    assert [t.label for t in chart.yticks] == ["0/s", "2/s", "4/s", "6/s", "8/s"]
    assert [t.label for t in chart.xticks] == ["0 s", "1 s", "2 s", "3 s", "4 s"]


def _style(started, completed, compensated, messages, commits, p50, p99, **more):
    return {"started": started, "completed": completed, "compensated": compensated,
            "stuck": 0, "half_done": 0, "messages_per_saga": messages,
            "commits_per_saga": commits, "outcome_p50_s": p50, "outcome_p99_s": p99, **more}


def test_the_styles_stand_side_by_side_each_measure_on_one_scale():
    chart = style_chart({
        "orchestrated": _style(10, 8, 2, 1.0, 8.0, 0.5, 1.0),
        "choreographed": _style(10, 6, 2, 3.0, 13.0, 1.0, 4.0, stuck=1, half_done=1)})
    left, right = chart.panels
    assert (left.style, right.style) == ("orchestrated", "choreographed")
    assert left.x + left.width < right.x, "side by side, not overlapping"
    assert right.x + right.width <= chart.width

    def width(panel, key):
        return sum(b.width for b in panel.bars if b.key == key)

    assert width(right, "messages_per_saga") == pytest.approx(
        3 * width(left, "messages_per_saga"), rel=0.01)
    assert width(left, "commits_per_saga") == pytest.approx(
        8 / 13 * width(right, "commits_per_saga"), rel=0.01)
    # p50 and p99 share a scale: a p50 of 1 s is as long as a p99 of 1 s
    assert width(right, "outcome_p50_s") == pytest.approx(width(left, "outcome_p99_s"))
    assert width(right, "outcome_p99_s") == pytest.approx(4 * width(right, "outcome_p50_s"),
                                                   rel=0.01)
    # how they ended: one stacked bar of all the started sagas, on a common scale
    assert [b.key for b in right.bars[:4]] == ["completed", "compensated", "stuck", "half_done"]
    assert sum(b.width for b in right.bars[:4]) == pytest.approx(
        sum(b.width for b in left.bars[:2]))
    assert right.bars[1].x == pytest.approx(right.bars[0].x + right.bars[0].width, abs=0.2)
    assert {"3.00", "13.00", "1.000 s", "4.000 s"} <= {v.text for v in right.values}
    assert [r.text for r in chart.rows] == ["sagas", "messages per saga", "commits per saga",
                                            "request to outcome p50", "request to outcome p99"]


def test_a_style_whose_sagas_never_ended_shows_no_time_and_no_bar():
    chart = style_chart({"choreographed": _style(3, 0, 0, 1.0, 2.0, None, None,
                                                 half_done=3)})
    (panel,) = chart.panels
    assert not [b for b in panel.bars if b.key.startswith("outcome")]
    assert [v.text for v in panel.values][-2:] == ["-", "-"]
    assert [b.key for b in panel.bars if b.key == "half_done"] == ["half_done"]
