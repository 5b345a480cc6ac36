import pytest
from tests_support import generate_small_day, start_sandbox


@pytest.fixture(scope="session")
def day_dir(tmp_path_factory):
    """A small generated sandbox day (shared, read-only)."""
    return generate_small_day(tmp_path_factory.mktemp("day"))


@pytest.fixture(scope="module")
def sandbox(day_dir, tmp_path_factory):
    """A sandbox process of this test module (state is per module)."""
    sb = start_sandbox(day_dir, tmp_path_factory.mktemp("drop"))
    yield sb
    sb.stop()
