import pytest

from tests.pgbroker.test_liveness import Events


@pytest.fixture
def events(tmp_path) -> Events:
    """What the jobs of tests/pgbroker/tasks.py wrote: their starts, ends and overlaps."""
    return Events(tmp_path / "events")
