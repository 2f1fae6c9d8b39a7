"""The WAL is checkpointed in the background, so it does not grow without bound."""

import asyncio
import os

from prismq_queue import Queue


async def test_wal_stays_bounded_while_writing(db_path):
    payload = {"blob": "x" * 2000}
    async with Queue(db_path) as q:
        largest = 0
        for _ in range(16):  # about 16 x 0.5 MiB of committed data
            await q.enqueue_many([("t", payload)] * 250)
            await asyncio.sleep(0.3)  # room for the checkpointer, which polls every 0.2 s
            largest = max(largest, os.path.getsize(db_path + "-wal"))
        assert (await q.stats())["total"] == 4000
    assert largest < 4 * 1024 * 1024, f"WAL reached {largest} bytes: checkpoints are not running"
