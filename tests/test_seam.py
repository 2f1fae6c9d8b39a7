"""The seam between Worker and Queue: the worker's round trip is a documented Queue method, the
worker touches nothing private of the Queue, and a backend keeps its own bookkeeping."""

import ast
import asyncio
import pathlib

import pytest

import prismq_queue
from prismq_queue import InvalidArgument, LeaseLost, TaskStatus
from prismq_queue.records import RoundTrip

WORKER_SOURCE = pathlib.Path(prismq_queue.__file__).with_name("worker.py")


def test_worker_uses_no_private_name_of_the_queue():
    tree = ast.parse(WORKER_SOURCE.read_text())
    private = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("queue", "prismq_queue.queue") and node.level <= 1:
            private += [f"import {a.name}" for a in node.names if a.name.startswith("_")]
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value
            # queue._x, self.queue._x
            if (isinstance(owner, ast.Name) and owner.id == "queue") or \
                    (isinstance(owner, ast.Attribute) and owner.attr == "queue"):
                private.append(f"line {node.lineno}: .{node.attr}")
    assert private == []


async def test_round_trip_acknowledges_recovers_and_claims_at_once(queue):
    a, b, c = await queue.enqueue_many([("t", 1), ("t", 2), ("t", 3)])
    first = await queue.round_trip((), queue.claim_request("w", 2), recover=True)
    assert isinstance(first, RoundTrip)
    assert [t.id for t in first.tasks] == [a, b] and first.outcomes is None and first.recovered == 0
    done = [queue.complete_record(first.tasks[0], {"ok": 1}), queue.release_record(first.tasks[1])]
    second = await queue.round_trip(done, queue.claim_request("w", 5), recover=True)
    assert second.outcomes is None
    # (whether the claim sees the task released by the same trip differs by backend)
    assert c in [t.id for t in second.tasks] and a not in [t.id for t in second.tasks]
    assert second.next_expiry is not None  # a claim that came up short says when a lease ends
    assert (await queue.get(a)).status == TaskStatus.COMPLETED and (await queue.get(a)).result == {"ok": 1}


async def test_round_trip_reports_a_refused_record_instead_of_raising(queue):
    (tid,) = await queue.enqueue_many([("t", 1)])
    (task,) = (await queue.round_trip((), queue.claim_request("w", 1))).tasks
    await queue.cancel(tid)
    trip = await queue.round_trip([queue.complete_record(task, None)], None, recover=False)
    assert trip.outcomes == ["cancelled"] and trip.tasks == []
    assert (await queue.get(tid)).status == TaskStatus.CANCELLED


async def test_round_trip_takes_recover_by_keyword_only(queue):
    with pytest.raises(TypeError):
        await queue.round_trip((), None, True)


async def test_claim_request_checks_its_arguments(queue):
    for bad in ({"worker_id": ""}, {"limit": -1}, {"limit": True}, {"strategy": "random"},
                {"lease_seconds": 0}, {"lease_seconds": float("nan")}):
        args = {"worker_id": "w", "limit": 1, **bad}
        with pytest.raises(InvalidArgument):
            queue.claim_request(**args)
    request = queue.claim_request("w", 3, "fifo", 10)
    assert (request.worker_id, request.limit, request.strategy) == ("w", 3, "fifo")


async def test_a_stale_round_trip_record_is_fenced(queue):
    await queue.enqueue("t", 1)
    (old,) = (await queue.round_trip((), queue.claim_request("w1", 1, lease_seconds=0.001))).tasks
    await asyncio.sleep(0.01)
    (new,) = (await queue.round_trip((), queue.claim_request("w2", 1))).tasks  # recovers, claims again
    assert new.id == old.id and new.token != old.token
    trip = await queue.round_trip([queue.complete_record(old, None)], None, recover=False)
    assert trip.outcomes == ["lost"]
    with pytest.raises(LeaseLost):
        await queue.complete(old)


async def test_the_sqlite_backend_counts_its_own_inserts_in_flight(db_path):
    # The change watcher leaves this process's own enqueues to the Queue; the backend
    # must know they are in flight whoever calls insert(), not only through Queue.
    from prismq_queue import Queue
    from prismq_queue.backends.sqlite import SQLiteBackend

    async with Queue(db_path) as q:
        backend = q.backend
        seen = []

        def counting_insert(c, rows):
            seen.append(backend.local_writes)
            return SQLiteBackend._insert(c, rows)

        backend._insert = counting_insert
        row = ("t", "1", 100, 0.0, 5, 0.0, None)
        await backend.insert([row])
        assert seen == [1] and backend.local_writes == 0
        with pytest.raises(InvalidArgument):  # a failed insert must not leave the count raised
            await backend.insert([("t", "\ud800", 100, 0.0, 5, 0.0, None)])
        assert backend.local_writes == 0
