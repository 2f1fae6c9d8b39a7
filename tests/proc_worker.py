"""A worker process for the multi-process tests: logs every task it runs, one id per line.

usage: python proc_worker.py DB LOG [--sleep S] [--concurrency N] [--lease S] [--forever]
"""

import argparse
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from prismq_queue import Queue, Worker  # noqa: E402


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("log")
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--lease", type=float, default=30.0)
    parser.add_argument("--forever", action="store_true")
    args = parser.parse_args()
    log = open(args.log, "a", buffering=1)

    async def handler(task):
        log.write(f"{task.id}\n")  # line-buffered: on disk before the task can be acknowledged
        if args.sleep:
            await asyncio.sleep(args.sleep)
        return os.getpid()

    async with Queue(args.db) as queue:
        worker = Worker(queue, concurrency=args.concurrency, lease_seconds=args.lease,
                        heartbeat_interval=args.lease / 3)
        worker.register("job", handler)
        print("ready", flush=True)
        await worker.run(until_empty=not args.forever)
    log.close()


if __name__ == "__main__":
    asyncio.run(main())
