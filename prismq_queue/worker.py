"""Worker: runs handlers for claimed tasks, and owns the loop, concurrency, leases and shutdown."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional, Union

from .backends.base import CANCELLED, LOST, OK
from .errors import InvalidArgument, PayloadError, QueueError
from .queue import Queue, _check_type, check_seconds
from .retry import RetryPolicy
from .strategy import Strategy
from .task import Task

log = logging.getLogger("prismq_queue.worker")

Handler = Callable[[Task], Any]


class Worker:
    """Claims tasks from a Queue in batches and runs up to `concurrency` handlers at once."""

    def __init__(self, queue: Queue, concurrency: int = 50, lease_seconds: float = 30.0, *,
                 strategy: Union[Strategy, str] = Strategy.PRIORITY, worker_id: Optional[str] = None,
                 grace_period: float = 10.0, heartbeat_interval: Optional[float] = None,
                 poll_interval: float = 1.0, handle_signals: bool = True) -> None:
        if not isinstance(queue, Queue):
            raise InvalidArgument(f"Worker needs a Queue, got {queue!r}")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise InvalidArgument(f"concurrency must be an integer >= 1, got {concurrency!r}")
        lease_seconds = check_seconds("lease_seconds", lease_seconds)
        grace_period = check_seconds("grace_period", grace_period, allow_equal=True)
        poll_interval = check_seconds("poll_interval", poll_interval)
        if heartbeat_interval is not None:
            heartbeat_interval = check_seconds("heartbeat_interval", heartbeat_interval)
        try:
            self.strategy = Strategy(strategy)
        except ValueError:
            raise InvalidArgument(f"unknown strategy {strategy!r}") from None
        self.queue = queue
        self.concurrency = concurrency
        self.lease_seconds = float(lease_seconds)
        self.grace_period = float(grace_period)
        self.heartbeat_interval = heartbeat_interval or self.lease_seconds / 3
        self.poll_interval = float(poll_interval)
        self.handle_signals = handle_signals
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._handlers: dict[str, tuple[Handler, bool]] = {}
        self._active: dict[int, tuple[Task, asyncio.Task]] = {}
        self._done: list[tuple] = []  # finish records waiting for the next round trip
        self._cancelled: set[int] = set()  # running tasks that were cancelled in the queue
        self._stopping = False
        self._wake_future: Optional[asyncio.Future] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._loop_thread: Optional[int] = None
        self._executor: Optional[ThreadPoolExecutor] = None
        # What this worker did, for callers and benchmarks.
        self.completed = 0
        self.failed = 0
        self.retried = 0
        self.refused = 0

    # -- configuration ------------------------------------------------------

    def register(self, task_type: str, handler: Optional[Handler] = None, *,
                 retry: Optional[RetryPolicy] = None) -> Any:
        """Run `handler(task)` for tasks of `task_type`; usable as a decorator. `retry` sets the type's policy."""
        _check_type(task_type)

        def add(fn: Handler) -> Handler:
            if not callable(fn):
                raise InvalidArgument(f"handler for {task_type!r} is not callable: {fn!r}")
            self._handlers[task_type] = (fn, inspect.iscoroutinefunction(fn))
            if retry is not None:
                self.queue.set_retry_policy(task_type, retry)
            return fn

        return add if handler is None else add(handler)

    def stop(self) -> None:
        """Stop claiming; running handlers get `grace_period` seconds to finish."""
        self._stopping = True
        self._wake()

    # -- the loop ---------------------------------------------------------

    async def run(self, until_empty: bool = False) -> None:
        """Work until stop() (or SIGINT/SIGTERM); with until_empty, also once nothing is due and nothing runs."""
        self._loop = loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._stopping = False
        signals = self._install_signals(loop)
        heartbeat = loop.create_task(self._heartbeat())
        try:
            await self._work(until_empty)
        finally:
            heartbeat.cancel()
            try:
                await self._shutdown()
            finally:
                for sig in signals:
                    loop.remove_signal_handler(sig)
                if self._executor is not None:
                    self._executor.shutdown(wait=False)
                    self._executor = None

    async def _work(self, until_empty: bool) -> None:
        queue = self.queue
        claimed: list[Task] = []  # leased by the last trip, not started yet
        failures = 0
        while not self._stopping:
            free = self.concurrency - len(self._active) - len(claimed)
            finishes, self._done = self._done, []
            request = (queue._claim_request(self.worker_id, free, self.strategy, self.lease_seconds)
                       if free > 0 else None)
            if request is None and not finishes:
                self._start_all(claimed)
                claimed = []
                await self._wait(None)  # every slot busy: wait for a handler to finish
                continue
            # One trip: acknowledge what finished, recover expired leases, claim. While
            # the database thread works on it, this thread runs the last batch's handlers.
            trip = asyncio.ensure_future(queue._cycle(finishes, request, True))
            self._start_all(claimed)
            try:
                outcomes, claimed, result = await trip
            except QueueError as exc:
                claimed = []
                self._done = finishes + self._done  # keep them for the next try
                failures += 1
                log.warning("worker %s: round trip failed (%s); retrying", self.worker_id, exc)
                await self._wait(min(0.05 * 2 ** failures, 5.0))
                continue
            failures = 0
            if outcomes is not None:
                self._count_refused(finishes, outcomes)
            if request is not None and len(claimed) == request.limit:
                continue  # a full batch: more may be waiting, so claim again while it runs
            self._start_all(claimed)
            claimed = []
            if self._done:
                continue
            if until_empty and not self._active:
                return
            if request is None or len(self._active) >= self.concurrency:
                await self._wait(None)
            else:
                await self._wait(self._idle_timeout(result), want_work=True)
        for task in claimed:  # stopping: hand back what never started
            self._done.append(queue.release_record(task))

    def _idle_timeout(self, result: Any) -> float:
        now = time.time()
        timeout = self.poll_interval
        for moment in (result.next_due, result.next_expiry):
            if moment is not None:
                timeout = min(timeout, max(moment - now, 0.0) + 0.0005)
        return timeout

    async def _wait(self, timeout: Optional[float], want_work: bool = False) -> None:
        """Sleep until a handler finishes, stop() is called, work may be ready (want_work), or timeout."""
        if self._done or self._stopping:
            return
        loop = self._loop
        future = self._wake_future = loop.create_future()
        timer = loop.call_later(timeout, self._wake) if timeout is not None else None
        if want_work:
            self.queue.arm(self._wake_threadsafe)
        try:
            await future
        finally:
            self._wake_future = None
            if timer is not None:
                timer.cancel()
            if want_work:
                self.queue.disarm(self._wake_threadsafe)

    def _wake(self) -> None:
        future = self._wake_future
        if future is not None and not future.done():
            future.set_result(None)

    def _wake_threadsafe(self) -> None:
        if threading.get_ident() == self._loop_thread:
            self._wake()  # an enqueue through the same Queue, on the loop's own thread
            return
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._wake)
            except RuntimeError:
                pass  # the loop closed in the meantime: nobody is waiting any more

    # -- running handlers -----------------------------------------------------

    def _start_all(self, tasks: list[Task]) -> None:
        for task in tasks:
            self._start(task)

    def _start(self, task: Task) -> None:
        # Start the handler eagerly: run its coroutine up to its first real wait
        # right here. A handler that never waits (a cache hit, a no-op) finishes
        # without a Task or an event-loop round; one that waits continues in a
        # Task from where it stopped (what asyncio's eager task factory does).
        self._active[task.id] = (task, None)
        coro = self._execute(task)
        try:
            waiting_on = coro.send(None)
        except StopIteration:
            return
        except BaseException:
            coro.close()
            raise
        if task.id in self._active:
            self._active[task.id] = (task, self._loop.create_task(_continue(coro, waiting_on)))

    async def _execute(self, task: Task) -> None:
        queue = self.queue
        entry = self._handlers.get(task.type)
        record: Optional[tuple]
        try:
            if entry is None:
                record = queue.fail_record(task, f"no handler registered for task type {task.type!r}", retry=False)
            else:
                fn, is_async = entry
                if is_async:
                    result = await fn(task)
                else:
                    result = await self._loop.run_in_executor(self._thread_pool(), fn, task)
                    if inspect.isawaitable(result):
                        result = await result
                try:
                    record = queue.complete_record(task, result)
                except PayloadError as exc:
                    record = queue.fail_record(task, str(exc), retry=False)
        except asyncio.CancelledError:
            # Cancelled in the queue: nothing to record. Cut off by shutdown: hand it back.
            record = None if task.id in self._cancelled else queue.release_record(task)
        except Exception as exc:  # the handler failed: retry per policy
            record = queue.fail_record(task, exc, retry=True)
        self._active.pop(task.id, None)
        self._cancelled.discard(task.id)
        if record is not None:
            self._done.append(record)
            self._count(record[0])
        self._wake()

    def _thread_pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="prismq-handler")
        return self._executor

    def _count(self, kind: str) -> None:
        if kind == "complete":
            self.completed += 1
        elif kind == "retry":
            self.retried += 1
        elif kind == "fail":
            self.failed += 1

    def _count_refused(self, finishes: list[tuple], outcomes: list[str]) -> None:
        for record, outcome in zip(finishes, outcomes):
            if outcome != OK:
                self.refused += 1
                log.warning("worker %s: %s of task %s refused (%s)", self.worker_id, record[0], record[1], outcome)

    # -- leases and shutdown ---------------------------------------------------

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            tasks = [task for task, _ in self._active.values()]
            if not tasks:
                continue
            try:
                outcomes = await self.queue.extend_leases(tasks, self.lease_seconds)
            except QueueError as exc:
                log.warning("worker %s: heartbeat failed (%s)", self.worker_id, exc)
                continue
            for task, outcome in zip(tasks, outcomes):
                handle = self._active.get(task.id, (None, None))[1]
                if outcome == CANCELLED and handle is not None:
                    self._cancelled.add(task.id)
                    handle.cancel()
                elif outcome == LOST:
                    log.warning("worker %s: lease of task %s was lost", self.worker_id, task.id)

    async def _shutdown(self) -> None:
        running = [handle for _, handle in self._active.values() if handle is not None]
        if running and self.grace_period > 0:
            await asyncio.wait(running, timeout=self.grace_period)
        leftover = [handle for _, handle in self._active.values() if handle is not None]
        for handle in leftover:
            handle.cancel()  # each records a release as it unwinds
        if leftover:
            await asyncio.wait(leftover, timeout=5)
        if self._done:
            finishes, self._done = self._done, []
            outcomes, _, _ = await self.queue._cycle(finishes, None, False)
            if outcomes is not None:
                self._count_refused(finishes, outcomes)

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> list[int]:
        installed: list[int] = []
        if not self.handle_signals:
            return installed
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.stop)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread, or a platform without loop signal handlers
        return installed


async def _continue(coro: Any, waiting_on: Any) -> Any:
    """Drive a coroutine that was started outside a Task, from the wait it stopped at."""
    return await _Resumed(coro, waiting_on)


class _Resumed:
    """Awaitable that hands the coroutine's pending wait to the running Task, then steps the coroutine."""

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Any, first: Any) -> None:
        self._coro, self._first = coro, first

    def __await__(self) -> Any:
        coro, yielded = self._coro, self._first
        while True:
            try:
                sent = yield yielded
            except BaseException as exc:  # cancellation and the like go to the handler
                step = coro.throw
                arg: Any = exc
            else:
                step, arg = coro.send, sent
            try:
                yielded = step(arg)
            except StopIteration as stop:
                return stop.value
