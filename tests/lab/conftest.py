import pytest


@pytest.fixture(autouse=True)
def _empty_redis() -> None:
    """The lab has a Redis of its own: leave the project-local one (and a suite running beside
    this one on it, `make test`) alone."""
