"""Several worker processes, each with its own connection, on one queue (a SQLite file, a PostgreSQL
schema); and a worker killed mid-run."""

import asyncio
import signal

import pytest

from procs import executions, spawn
from prismq_queue import LeaseLost, Queue, TaskStatus, Worker

pytestmark = pytest.mark.slow


async def test_four_processes_complete_every_task_exactly_once(tmp_path, location):
    async with Queue(location) as q:
        ids = await q.enqueue_many([("job", i) for i in range(2000)])
    # 2 ms per task: one process alone would need over a second, so all four
    # get to work even when starting a Python process is slow.
    procs = [spawn(location, str(tmp_path / f"w{i}.log"), "--concurrency", "8", "--sleep", "0.002")
             for i in range(4)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert "database is locked" not in err
    runs = executions(tmp_path)
    assert set(runs) == set(ids)
    assert max(runs.values()) == 1  # no task ran twice
    async with Queue(location) as q:
        stats = await q.stats()
        assert stats["by_status"]["completed"] == 2000 and stats["total"] == 2000
        pids = {t.result for t in await q.list_tasks(status="completed", limit=2000)}
    assert len(pids) >= 2  # the work really was shared between processes


async def test_killed_worker_tasks_are_recovered_after_the_lease(tmp_path, location):
    async with Queue(location) as q:
        ids = await q.enqueue_many([("job", i) for i in range(30)])
    victim = spawn(location, str(tmp_path / "victim.log"), "--sleep", "0.5", "--concurrency", "5",
                   "--lease", "1.0", "--forever")
    assert victim.stdout.readline().strip() == "ready"
    while sum(executions(tmp_path).values()) < 5:  # it holds 5 leases, mid-handler
        await asyncio.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)

    async with Queue(location) as q:
        stranded = await q.list_tasks(status="running")
        assert stranded, "the killed worker should have left leased tasks behind"
        with pytest.raises(LeaseLost):  # a stranger's token never finishes a task
            forged = stranded[0]
            forged.token += 1
            await q.complete(forged)
        # A 30 s poll: the rescuer must wake when the stranded leases run out, not by polling.
        rescuer = Worker(q, concurrency=10, lease_seconds=5, poll_interval=30)

        async def handler(task):
            with open(tmp_path / "rescuer.log", "a") as f:
                f.write(f"{task.id}\n")

        rescuer.register("job", handler)
        runner = asyncio.create_task(rescuer.run())
        for _ in range(3000):  # the stranded tasks come back once their leases run out
            if (await q.stats())["by_status"]["completed"] == 30:
                break
            await asyncio.sleep(0.02)
        rescuer.stop()
        await runner
        tasks = [await q.get(i) for i in ids]
    assert all(t.status == TaskStatus.COMPLETED for t in tasks)
    for t in stranded:
        again = next(x for x in tasks if x.id == t.id)
        assert again.attempts == 2  # the lost attempt was counted, then it ran again
    runs = executions(tmp_path)
    assert set(runs) == set(ids)
