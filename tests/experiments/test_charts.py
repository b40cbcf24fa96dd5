import pytest

from experiments.charts import nice_step, throughput_chart


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
