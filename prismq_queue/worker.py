"""Worker: runs handlers for claimed tasks, and owns the loop, concurrency, leases and shutdown."""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import os
import random
import socket
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Callable, Optional, Union

from .errors import InvalidArgument, PayloadError, QueueError
from .queue import Queue
from .records import CANCELLED, COMPLETE, F_KIND, FAIL, LOST, OK, RETRY, ClaimRequest, Finish, RoundTrip
from .retry import RetryPolicy
from .stop_signals import stop_signals
from .strategy import Strategy
from .task import Task
from .validation import check_seconds, check_type

log = logging.getLogger("prismq_queue.worker")

Handler = Callable[[Task], Any]

#: How long the worker waits before trying the database again after a failed round trip:
#: 0.05 s, doubling up to 5 s, each pause drawn within +/- 50% so that workers do not come
#: back in step after an outage. It never gives up: run() outlives outages of any length.
OUTAGE_BACKOFF = RetryPolicy(base_delay=0.05, factor=2.0, max_delay=5.0, jitter=0.5)

# Why the worker cancelled a running handler's Task.
_CANCELLED_IN_QUEUE = "cancelled in the queue"  # nothing to record: the queue already says cancelled
_CUT_OFF = "cut off at shutdown"  # hand the task back, unless its thread still runs

# Every handler runs in a Task of its own, with its own copy of the context:
# asyncio.timeout(), wait_for() and TaskGroup inside a handler cancel that Task,
# never the worker, and context variables a handler sets stay in its own copy.
if sys.version_info >= (3, 12):
    _EAGER_HANDLERS = True

    def _task_maker(loop: asyncio.AbstractEventLoop) -> Callable[[Any], asyncio.Task]:
        # An eager Task runs its first step at once, inside its own Task and its own
        # context: a handler that never waits finishes without an event loop round.
        if loop.get_task_factory() is not None:
            return loop.create_task  # the application chose how Tasks are made
        return partial(asyncio.Task, loop=loop, eager_start=True)
else:
    _EAGER_HANDLERS = False

    def _task_maker(loop: asyncio.AbstractEventLoop) -> Callable[[Any], asyncio.Task]:
        if loop.get_task_factory() is not None:
            return loop.create_task  # the application chose how Tasks are made
        # What loop.create_task does then, without its Python-level wrapper: about
        # 2,400 of the ~17,000 instructions a handler's Task costs on Python 3.11.
        # Without a partial and its loop= keyword too (a dict merged and parsed per
        # call): the Task finds the running loop, which is `loop`, in C.
        return asyncio.Task


# The worker's round trip (acknowledge, recover, claim) starts at once, inside the
# worker's own step: on SQLite it usually runs on the loop's thread and ends right
# there, so a task enqueued in this process reaches its handler without the three
# loop rounds a Task would add (its first step, its done callback, the shield's).
# Only the worker's own code runs in that step, never a handler.
if sys.version_info >= (3, 12):
    def _start_trip(loop: asyncio.AbstractEventLoop, coro: Any) -> "asyncio.Future[Any]":
        return asyncio.Task(coro, loop=loop, eager_start=True)
else:
    def _start_trip(loop: asyncio.AbstractEventLoop, coro: Any) -> "asyncio.Future[Any]":
        # Python 3.11 has no eager tasks: run the first step by hand, and hand the
        # rest, if the trip has to wait (a hop to the database thread), to a Task.
        try:
            waiting_on = coro.send(None)
        except StopIteration as done:
            return _settled(loop, done.value)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # whatever the trip raised is its outcome, as a Task's would be
            return _settled(loop, None, exc)
        return loop.create_task(_resume(coro, waiting_on))

    def _settled(loop: asyncio.AbstractEventLoop, value: Any,
                 exc: Optional[BaseException] = None) -> "asyncio.Future[Any]":
        future = loop.create_future()
        if isinstance(exc, asyncio.CancelledError):
            future.cancel()
        elif exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(value)
        return future

    async def _resume(coro: Any, waiting_on: Any) -> Any:
        """Drive `coro` on from where its first step stopped, waiting on `waiting_on`.

        None is a bare yield (asyncio.sleep(0)): the coroutine asks for one loop
        round, and this Task's first step comes one round later, so it goes on at once.
        """
        while True:
            if waiting_on is not None:
                # What a Task does with a future a coroutine yields: take it over
                # (the flag says "yielded, not yet taken"), then wait for it.
                waiting_on._asyncio_future_blocking = False
                try:
                    await waiting_on
                except (Exception, asyncio.CancelledError):
                    pass  # the coroutine reads the future's outcome itself when resumed
            try:
                waiting_on = coro.send(None)
            except StopIteration as done:
                return done.value
            if waiting_on is None:
                await asyncio.sleep(0)


def error_text(exc: BaseException) -> str:
    """'Type: message' for a failed attempt; a placeholder message when the exception's str() fails too."""
    try:
        message = str(exc)
    except BaseException as failure:  # a broken __str__ must not take the worker down with it
        message = f"<str() of the exception raised {type(failure).__name__}>"
    return f"{type(exc).__name__}: {message}"


class Worker:
    """Claims tasks from a Queue in batches and runs up to `concurrency` handlers at once."""

    def __init__(self, queue: Queue, concurrency: int = 50, lease_seconds: float = 30.0, *,
                 strategy: Union[Strategy, str] = Strategy.PRIORITY, worker_id: Optional[str] = None,
                 grace_period: float = 10.0, heartbeat_interval: Optional[float] = None,
                 poll_interval: float = 1.0, handle_signals: bool = True,
                 outage_backoff: Optional[RetryPolicy] = None) -> None:
        if not isinstance(queue, Queue):
            raise InvalidArgument(f"Worker needs a Queue, got {queue!r}")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise InvalidArgument(f"concurrency must be an integer >= 1, got {concurrency!r}")
        lease_seconds = check_seconds("lease_seconds", lease_seconds)
        grace_period = check_seconds("grace_period", grace_period, allow_equal=True)
        poll_interval = check_seconds("poll_interval", poll_interval)
        if heartbeat_interval is not None:
            heartbeat_interval = check_seconds("heartbeat_interval", heartbeat_interval)
        if outage_backoff is not None and not isinstance(outage_backoff, RetryPolicy):
            raise InvalidArgument(f"outage_backoff must be a RetryPolicy, got {outage_backoff!r}")
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
        #: pauses between tries of the database while it fails (only its delays are used)
        self.outage_backoff = outage_backoff if outage_backoff is not None else OUTAGE_BACKOFF
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._handlers: dict[str, tuple[Handler, bool]] = {}
        self._active: dict[int, tuple[Task, Optional[asyncio.Task]]] = {}
        self._done: list[Finish] = []  # finish records waiting for the next round trip
        self._interrupted: dict[int, str] = {}  # running tasks the worker cancelled, and why
        self._stopping = False  # set by stop(), even before run(): a stop is never forgotten
        self._wake_future: Optional[asyncio.Future] = None
        self._taker = (self._hand_off_request, self._take)  # offered to the queue while idle (see _wait)
        self._pause_future: Optional[asyncio.Future] = None
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # set by run(), read only under it
        self._loop_thread: Optional[int] = None
        self._executor: Optional[ThreadPoolExecutor] = None
        self._rng = random.Random()
        # What this worker did, for callers and benchmarks.
        self.completed = 0
        self.failed = 0
        self.retried = 0
        self.refused = 0

    # -- configuration ------------------------------------------------------

    def register(self, task_type: str, handler: Optional[Handler] = None, *,
                 retry: Optional[RetryPolicy] = None) -> Any:
        """Run `handler(task)` for tasks of `task_type`; usable as a decorator. `retry` sets the type's policy."""
        check_type(task_type)

        def add(fn: Handler) -> Handler:
            if not callable(fn):
                raise InvalidArgument(f"handler for {task_type!r} is not callable: {fn!r}")
            self._handlers[task_type] = (fn, inspect.iscoroutinefunction(fn))
            if retry is not None:
                self.queue.set_retry_policy(task_type, retry)
            return fn

        return add if handler is None else add(handler)

    def stop(self) -> None:
        """Stop claiming; running handlers get `grace_period` seconds to finish. Before run(), run() returns at once."""
        self._stopping = True
        self._wake()
        pause = self._pause_future
        if pause is not None and not pause.done():
            pause.set_result(None)

    # -- the loop ---------------------------------------------------------

    async def run(self, until_empty: bool = False) -> None:
        """Work until stop() (or SIGINT/SIGTERM); with until_empty, also once nothing is due and nothing runs."""
        self._loop = loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        if self.handle_signals:
            stop_signals.add(self, loop)
        heartbeat = loop.create_task(self._heartbeat())
        try:
            await self._work(until_empty)
        finally:
            try:
                await self._shutdown(heartbeat)
            finally:
                self._stopping = False  # this stop is spent; a later run() works again
                if self.handle_signals:
                    stop_signals.discard(self)
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
            request = (queue.claim_request(self.worker_id, free, self.strategy, self.lease_seconds)
                       if free > 0 else None)
            if request is None and not finishes:
                self._start_all(claimed)
                claimed = []
                await self._wait(None)  # every slot busy: wait for a handler to finish
                continue
            # One trip: acknowledge what finished, recover expired leases, claim. While
            # the database thread works on it, this thread runs the last batch's handlers.
            trip = _start_trip(self._loop, queue.round_trip(finishes, request, recover=True))
            self._start_all(claimed)
            try:
                # Shielded: cancelling run() must not cut the trip loose after the
                # database committed its claim (the claimed tasks would be stranded).
                result = await asyncio.shield(trip)
            except asyncio.CancelledError:
                await self._settle(trip, finishes)
                raise
            except QueueError as exc:
                claimed = []
                self._done = finishes + self._done  # keep them for the next try
                failures += 1
                log.warning("worker %s: round trip failed (%s); trying again (failure %d in a row)",
                            self.worker_id, exc, failures)
                await self._pause(self.outage_backoff.delay(failures, self._rng))
                continue
            failures = 0
            claimed = result.tasks
            if result.outcomes is not None:
                self._count_refused(finishes, result.outcomes)
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

    async def _settle(self, trip: asyncio.Future, finishes: list[Finish]) -> None:
        """run() was cancelled during a round trip: let the trip end, then hand back what it claimed."""
        while not trip.done():
            try:
                await asyncio.wait((trip,))
            except asyncio.CancelledError:
                pass  # cancelled again: the trip still has to end before its claim can be handed back
        if trip.cancelled() or trip.exception() is not None:
            self._done = finishes + self._done
            return
        result = trip.result()
        if result.outcomes is not None:
            self._count_refused(finishes, result.outcomes)
        self._done.extend(self.queue.release_record(task) for task in result.tasks)

    def _idle_timeout(self, result: RoundTrip) -> float:
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
            self.queue.arm(self._wake_threadsafe, self._taker)
        try:
            await future
        finally:
            self._wake_future = None
            if timer is not None:
                timer.cancel()
            if want_work:
                self.queue.disarm(self._wake_threadsafe)

    async def _pause(self, seconds: float) -> None:
        """Back off after a failure: sleep `seconds` whatever finishes meanwhile; only stop() cuts it short."""
        if self._stopping:
            return
        future = self._pause_future = self._loop.create_future()
        timer = self._loop.call_later(seconds, _resolve, future)
        try:
            await future
        finally:
            self._pause_future = None
            timer.cancel()

    def _wake(self) -> None:
        future = self._wake_future
        if future is not None and not future.done():
            future.set_result(None)

    def _hand_off_request(self) -> Optional[ClaimRequest]:
        """A claim of one task for the local hand-off (Queue.arm), or None if this worker cannot take one now.

        It can while it waits for work (its last claim came up short), nothing woke
        it yet, it has a free slot, and the enqueue runs on its own loop's thread:
        just when an insert would wake it to claim the new task itself.
        """
        future = self._wake_future
        if (future is None or future.done() or self._stopping or len(self._active) >= self.concurrency
                or threading.get_ident() != self._loop_thread):
            return None
        return self.queue.claim_request(self.worker_id, 1, self.strategy, self.lease_seconds)

    def _take(self, task: Task) -> None:
        """Start the handler of a task the queue inserted claimed for this worker (the local hand-off).

        In a Task started the ordinary way, never eagerly: an eager first step would
        run the handler inside the producer's enqueue() call.
        """
        self._active[task.id] = (task, self._loop.create_task(self._execute(task)))

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
        """Start a handler, each in a Task of its own (see _task_maker), for each claimed task."""
        if not tasks:
            return
        make = _task_maker(self._loop)  # asked once a batch: a few hundred instructions a call
        active, execute = self._active, self._execute
        for task in tasks:
            if _EAGER_HANDLERS:
                active[task.id] = (task, None)
                handle = make(execute(task))
                if task.id in active:  # its eager first step may have finished it already
                    active[task.id] = (task, handle)
            else:
                active[task.id] = (task, make(execute(task)))  # its first step comes a loop round later

    async def _execute(self, task: Task) -> None:
        queue = self.queue
        entry = self._handlers.get(task.type)
        thread: Optional[concurrent.futures.Future] = None
        record: Optional[tuple] = None
        try:
            if entry is None:
                record = queue.fail_record(task, f"no handler registered for task type {task.type!r}", retry=False)
            else:
                fn, is_async = entry
                if is_async:
                    result = await fn(task)
                else:
                    thread = self._thread_pool().submit(fn, task)
                    result = await asyncio.wrap_future(thread, loop=self._loop)
                    thread = None
                    if inspect.isawaitable(result):
                        result = await result
                try:
                    record = queue.complete_record(task, result)
                except PayloadError as exc:
                    record = queue.fail_record(task, str(exc), retry=False)
        except asyncio.CancelledError as exc:
            record = self._interrupted_record(task, exc, thread)
        except GeneratorExit:
            raise  # this coroutine is being closed (a Task destroyed while pending): nothing to record
        except (SystemExit, KeyboardInterrupt) as exc:
            # They end the process (the event loop lets them through): count the attempt first.
            record = queue.fail_record(task, error_text(exc), retry=True)
            raise
        except BaseException as exc:  # the handler failed, however odd its exception: retry per policy
            record = queue.fail_record(task, error_text(exc), retry=True)
        finally:
            self._active.pop(task.id, None)
            if self._interrupted:
                self._interrupted.pop(task.id, None)
            if record is not None:
                self._done.append(record)
                if record[F_KIND] is COMPLETE:  # the common case, counted inline: once per task
                    self.completed += 1
                else:
                    self._count(record[F_KIND])
            wake = self._wake_future  # self._wake(), inline: once per task
            if wake is not None and not wake.done():
                wake.set_result(None)

    def _interrupted_record(self, task: Task, exc: BaseException,
                            thread: Optional[concurrent.futures.Future]) -> Optional[Finish]:
        """The record for a handler that ended in CancelledError: a failure unless somebody cancelled it."""
        queue = self.queue
        reason = self._interrupted.get(task.id)
        if reason == _CANCELLED_IN_QUEUE:
            return None
        if reason is None:
            cancelling = getattr(asyncio.current_task(), "cancelling", None)  # Python 3.11+
            if cancelling is not None and not cancelling():
                # Nobody cancelled this Task: the handler raised CancelledError itself
                # (or let one through from something it awaited). A failed attempt,
                # or it would be handed back and run again at once, forever.
                return queue.fail_record(task, error_text(exc), retry=True)
        if thread is not None:  # cut off while its handler runs in a thread
            if thread.running():
                # The thread cannot be stopped: keep the lease (it runs out after
                # lease_seconds) rather than hand back a task that is still running.
                log.warning("worker %s: task %s still runs in its thread; keeping its lease", self.worker_id, task.id)
                return None
            if thread.done() and not thread.cancelled():
                failure = thread.exception()
                if failure is not None:
                    return queue.fail_record(task, error_text(failure), retry=True)
                try:
                    return queue.complete_record(task, thread.result())
                except PayloadError as error:
                    return queue.fail_record(task, str(error), retry=False)
        return queue.release_record(task)  # cut off: hand it back, its attempt not counted

    def _thread_pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="prismq-handler")
        return self._executor

    def _count(self, kind: str) -> None:
        if kind == COMPLETE:
            self.completed += 1
        elif kind == RETRY:
            self.retried += 1
        elif kind == FAIL:
            self.failed += 1

    def _count_refused(self, finishes: list[Finish], outcomes: list[str]) -> None:
        for (kind, task_id, _, _, _), outcome in zip(finishes, outcomes):
            if outcome != OK:
                self.refused += 1
                log.warning("worker %s: %s of task %s refused (%s)", self.worker_id, kind, task_id, outcome)

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
                    self._interrupted[task.id] = _CANCELLED_IN_QUEUE
                    handle.cancel()
                elif outcome == LOST:
                    log.warning("worker %s: lease of task %s was lost", self.worker_id, task.id)

    async def _shutdown(self, heartbeat: asyncio.Task) -> None:
        deadline = time.monotonic() + self.grace_period
        try:
            # The heartbeat goes on until the last handler has ended: a handler that
            # finishes within the grace period still holds its lease when it reports.
            running = [handle for _, handle in self._active.values() if handle is not None]
            if running and self.grace_period > 0:
                await asyncio.wait(running, timeout=self.grace_period)
            leftover = [(task, handle) for task, handle in self._active.values() if handle is not None]
            for task, handle in leftover:
                self._interrupted.setdefault(task.id, _CUT_OFF)
                handle.cancel()  # each records a release as it unwinds (or keeps its lease if its thread runs)
            if leftover:
                await asyncio.wait([handle for _, handle in leftover], timeout=5)
        finally:
            heartbeat.cancel()
        await self._flush(deadline)

    async def _flush(self, deadline: float) -> None:
        """Write the finish records still held, trying again (with backoff) until the grace period ends."""
        failures = 0
        while self._done:
            finishes, self._done = self._done, []
            try:
                outcomes = (await self.queue.round_trip(finishes, None, recover=False)).outcomes
            except QueueError as exc:
                self._done = finishes + self._done
                failures += 1
                pause = self.outage_backoff.delay(failures, self._rng)
                if time.monotonic() + pause > deadline:
                    log.error("worker %s: could not record %d finished task(s) before the grace period ended (%s)",
                              self.worker_id, len(self._done), exc)
                    raise
                log.warning("worker %s: final flush failed (%s); trying again", self.worker_id, exc)
                await asyncio.sleep(pause)
                continue
            if outcomes is not None:
                self._count_refused(finishes, outcomes)


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)
