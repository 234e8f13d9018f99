"""A throwaway test database for the benchmarks, made and dropped as the test suite does."""

import tempfile
from contextlib import contextmanager


@contextmanager
def test_databases():
    """Django set up on `settings.test` (or DATABASE_URL's PostgreSQL), with `test_<name>` databases."""
    import django
    from django.conf import settings

    django.setup()
    from django.test.utils import get_runner, setup_test_environment

    setup_test_environment()
    settings.MEDIA_ROOT = tempfile.mkdtemp(prefix="gc-bench-")
    runner = get_runner(settings)(verbosity=0, interactive=False)
    old_config = runner.setup_databases()
    try:
        yield
    finally:
        runner.teardown_databases(old_config)
