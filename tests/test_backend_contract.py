"""The backend contract (backends/base.py): an abstract base class whose required operations every
backend must have, keyword-only cycle() arguments, and the optional SQLite-only operations visible
as such, with the package's own error on a backend without them."""

import inspect
import time

import pytest

from prismq_queue import InvalidArgument, Queue, QueueError, UnsupportedOperation
from prismq_queue.backends.base import OPTIONAL_OPERATIONS, Backend
from prismq_queue.backends.sqlite import SQLiteBackend


def _complete_backend(**overrides):
    """A Backend subclass with every required operation, minus the names mapped to None."""
    async def anything(self, *args, **kwargs):
        return None

    def sync(self, *args):
        return None

    body = {name: (sync if name in ("arm", "disarm") else anything) for name in Backend.__abstractmethods__}
    body.update(overrides)
    return type("Toy", (Backend,), {k: v for k, v in body.items() if v is not None})


def test_a_backend_missing_a_required_operation_cannot_be_made():
    assert {"open", "close", "insert", "cycle", "extend", "get", "list_tasks", "cancel", "stats", "purge",
            "vacuum", "integrity_check", "arm", "disarm"} <= Backend.__abstractmethods__
    with pytest.raises(TypeError, match="cycle"):
        _complete_backend(cycle=None)()
    with pytest.raises(TypeError):
        Backend()
    _complete_backend()()  # with all of them it can


def test_every_operation_of_the_contract_says_what_it_does():
    for name in sorted(Backend.__abstractmethods__) + list(OPTIONAL_OPERATIONS):
        doc = inspect.getdoc(getattr(Backend, name))
        assert doc and len(doc) > 20, name


def test_optional_operations_are_visible_and_raise_the_package_error():
    toy = _complete_backend()()
    assert not toy.supports("checkpoint") and not toy.supports("backup")
    assert SQLiteBackend.supports("checkpoint") and SQLiteBackend.supports("backup")
    with pytest.raises(ValueError):
        Backend.supports("cycle")  # required, not optional


async def test_a_backend_without_the_optional_operations_refuses_them():
    toy = _complete_backend()()
    with pytest.raises(UnsupportedOperation, match="checkpoint.*Toy"):
        await toy.checkpoint("TRUNCATE")
    with pytest.raises(UnsupportedOperation, match="backup.*Toy"):
        await toy.backup("/nowhere/x.db")


@pytest.mark.parametrize("backend", ["Backend", "SQLiteBackend", "PostgresBackend"])
def test_cycle_takes_claim_recover_and_now_by_keyword_only(backend):
    if backend == "PostgresBackend":
        pytest.importorskip("asyncpg")
        from prismq_queue.backends.postgres import PostgresBackend as cls
    else:
        cls = {"Backend": Backend, "SQLiteBackend": SQLiteBackend}[backend]
    params = inspect.signature(cls.cycle).parameters
    assert [params[p].kind for p in ("claim", "recover", "now")] == [inspect.Parameter.KEYWORD_ONLY] * 3


async def test_cycle_refuses_positional_flags(queue):
    with pytest.raises(TypeError):
        await queue.backend.cycle((), None, True, time.time())
    assert (await queue.backend.cycle((), claim=None, recover=True, now=time.time())).recovered == 0


async def test_maintenance_on_postgres_gives_the_package_error(pg_location, tmp_path):
    from prismq_queue.backends.postgres import PostgresBackend

    assert not PostgresBackend.supports("checkpoint") and not PostgresBackend.supports("backup")
    dest = tmp_path / "copy.db"
    async with Queue(pg_location) as q:
        await q.enqueue("t", 1)
        with pytest.raises(UnsupportedOperation, match="pg_dump"):
            await q.backup(dest)
        with pytest.raises(UnsupportedOperation, match="checkpoint"):
            await q.checkpoint()
        with pytest.raises(InvalidArgument):
            await q.checkpoint(3)
        await q.vacuum()  # PostgreSQL has its own VACUUM: supported on both
        assert await q.integrity_check() == ["ok"]
        assert len(await q.list_tasks()) == 1
    assert not dest.exists()
    assert issubclass(UnsupportedOperation, QueueError)


async def test_backup_to_something_that_is_not_a_path_is_invalid(queue):
    for bad in (None, 3, ["x.db"]):
        with pytest.raises(InvalidArgument):
            await queue.backup(bad)
