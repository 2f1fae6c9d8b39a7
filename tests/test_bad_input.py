"""Bad input gets a clear QueueError subclass, and nothing is written."""

import os
import sqlite3

import pytest

from prismq_queue import (
    DatabaseError, InvalidArgument, PayloadError, Queue, QueueClosed, QueueError, SchemaVersionError,
)


async def count(q):
    return (await q.stats())["total"]


@pytest.mark.parametrize("payload", [object(), {1, 2}, {"f": float("nan")}, b"bytes", {"fn": len}])
async def test_payload_must_be_json(queue, payload):
    with pytest.raises(PayloadError):
        await queue.enqueue("t", payload)
    assert await count(queue) == 0


@pytest.mark.parametrize("task_type", ["", "   ", None, 7])
async def test_task_type_must_be_a_non_empty_string(queue, task_type):
    with pytest.raises(InvalidArgument):
        await queue.enqueue(task_type, {})
    assert await count(queue) == 0


@pytest.mark.parametrize("kwargs", [{"max_attempts": -1}, {"max_attempts": 0}, {"max_attempts": 1.5},
                                    {"priority": "high"}, {"priority": 1.5}, {"delay": -1},
                                    {"delay": float("inf")}, {"run_at": "tomorrow"}, {"idempotency_key": ""},
                                    {"delay": 5, "run_at": 10.0}, {"priority": 2**63}, {"max_attempts": 2**64}])
async def test_bad_options_are_refused(queue, kwargs):
    with pytest.raises(InvalidArgument):
        await queue.enqueue("t", {}, **kwargs)
    assert await count(queue) == 0


@pytest.mark.parametrize("task_type,payload", [("t", {"text": "\ud800"}), ("\udfff", None)])
async def test_text_that_is_not_unicode_is_refused(queue, task_type, payload):
    with pytest.raises(InvalidArgument):
        await queue.enqueue(task_type, payload)
    assert await count(queue) == 0


async def test_one_bad_item_rejects_the_whole_batch(queue):
    with pytest.raises(PayloadError):
        await queue.enqueue_many([("t", 1), ("t", 2), ("t", object())])
    with pytest.raises(InvalidArgument):
        await queue.enqueue_many([("t", 1), ("", 2)])
    with pytest.raises(InvalidArgument):
        await queue.enqueue_many([("t", 1, {"prioritty": 3})])
    with pytest.raises(InvalidArgument):
        await queue.enqueue_many(["just a string"])
    assert await count(queue) == 0


async def test_result_must_be_json_and_the_task_stays_leased(queue):
    tid = await queue.enqueue("t")
    (task,) = await queue.claim("w")
    with pytest.raises(PayloadError):
        await queue.complete(task, object())
    assert (await queue.get(tid)).status.value == "running"


async def test_claim_arguments_are_checked(queue):
    for kwargs in ({"limit": -1}, {"strategy": "random"}, {"lease_seconds": 0}, {"limit": "3"}):
        with pytest.raises(InvalidArgument):
            await queue.claim("w", **kwargs)
    with pytest.raises(InvalidArgument):
        await queue.claim("")
    with pytest.raises(InvalidArgument):
        await queue.complete("not a task")


async def test_missing_directory(tmp_path):
    with pytest.raises(DatabaseError, match="does not exist"):
        await Queue(str(tmp_path / "nope" / "tasks.db")).open()
    assert not (tmp_path / "nope").exists()


async def test_path_under_a_regular_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("I am a file")
    with pytest.raises(DatabaseError, match="not a directory"):
        await Queue(str(blocker / "tasks.db")).open()
    assert blocker.read_text() == "I am a file"


@pytest.mark.parametrize("content", [b"hello, this is plain text\n" * 10, b"SQLite format 3\x00" + b"\xff" * 200])
async def test_file_that_is_not_a_database_is_left_untouched(tmp_path, content):
    path = tmp_path / "notes.db"
    path.write_bytes(content)
    with pytest.raises(DatabaseError):
        await Queue(str(path)).open()
    assert path.read_bytes() == content
    assert not (tmp_path / "notes.db-wal").exists()


async def test_file_from_a_newer_version_is_refused_and_unchanged(tmp_path):
    path = tmp_path / "future.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE prismq_tasks (id INTEGER PRIMARY KEY)")
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(SchemaVersionError, match="newer"):
        await Queue(str(path)).open()
    assert path.read_bytes() == before
    assert not os.path.exists(str(path) + "-wal")


async def test_memory_database_is_refused():
    with pytest.raises(DatabaseError):
        Queue(":memory:")


async def test_calls_on_a_closed_queue(location):
    q = Queue(location)
    with pytest.raises(QueueClosed):
        await q.enqueue("t")
    await q.open()
    await q.close()
    with pytest.raises(QueueClosed):
        await q.get(1)


def test_every_error_is_a_queue_error():
    for exc in (InvalidArgument, PayloadError, DatabaseError, SchemaVersionError, QueueClosed):
        assert issubclass(exc, QueueError)
