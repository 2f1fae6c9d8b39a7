"""Shared fixtures. The `queue` fixture runs each test on both backends: a SQLite
queue in a real file in a fresh temp directory, and a PostgreSQL queue in a fresh
schema of a throwaway server that the tests start themselves (tools/pg_server.py).

PRISMQ_TEST_PG=postgresql://... uses that server instead (each test gets its own
schema, dropped at the end); PRISMQ_TEST_PG=skip skips the PostgreSQL tests.
Without PostgreSQL installed they skip with a message saying how to install it,
except under CI (CI=true), where they fail: there they must really run.
"""

import asyncio
import itertools
import os

import pytest

from prismq_queue import Queue

# Tests that take the `queue` fixture but exercise SQLite itself (its file, WAL
# maintenance, a second connection opened from db_path): they run on SQLite
# only; tests/test_postgres.py has their PostgreSQL counterparts.
SQLITE_ONLY = {
    "test_maintenance_backup_checkpoint_vacuum_integrity",
}
SCHEMA_PREFIX = f"prismq_test_{os.getpid()}_"
_schemas = itertools.count()


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / "tasks.db")


def _pg_unavailable(why):
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"the PostgreSQL tests must run in CI, but: {why}", pytrace=False)
    pytest.skip(f"PostgreSQL tests skipped: {why}")


@pytest.fixture(scope="session")
def pg_url():
    """The URL of a PostgreSQL database for the tests (a throwaway server unless PRISMQ_TEST_PG names one)."""
    setting = os.environ.get("PRISMQ_TEST_PG", "").strip()
    if setting.lower() in ("0", "no", "off", "skip"):
        pytest.skip(f"PostgreSQL tests skipped (PRISMQ_TEST_PG={setting})")
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        _pg_unavailable("asyncpg is not installed (pip install -e '.[test]', or pip install asyncpg)")
    if setting:
        yield setting
        asyncio.run(_drop_test_schemas(setting))
        return
    from tools.pg_server import PostgresUnavailable, TempPostgres

    try:
        server = TempPostgres()
    except PostgresUnavailable as exc:
        _pg_unavailable(str(exc))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


async def _drop_test_schemas(url):
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        names = await conn.fetch("SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)", SCHEMA_PREFIX)
        for (name,) in names:
            await conn.execute(f'DROP SCHEMA "{name}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
def pg_location(pg_url):
    """A PostgreSQL queue URL naming a fresh schema."""
    return f"{pg_url}{'&' if '?' in pg_url else '?'}schema={SCHEMA_PREFIX}{next(_schemas)}"


@pytest.fixture(params=["sqlite", "postgres"])
def location(request, db_path):
    """Where a test's queue lives, on each backend: a file path, or a PostgreSQL URL with a fresh schema."""
    if request.param == "sqlite":
        return db_path
    return request.getfixturevalue("pg_location")


@pytest.fixture
async def queue(location):
    async with Queue(location) as q:
        yield q


def pytest_collection_modifyitems(config, items):
    for item in items:
        callspec = getattr(item, "callspec", None)
        if (callspec is not None and callspec.params.get("location") == "postgres"
                and item.originalname in SQLITE_ONLY):
            item.add_marker(pytest.mark.skip(reason="SQLite-specific; tests/test_postgres.py covers PostgreSQL"))
