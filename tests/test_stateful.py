"""A Hypothesis state machine drives the queue with random operations against a plain Python model."""

import asyncio
import itertools
import os
import shutil
import tempfile

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from prismq_queue import LeaseLost, Queue, RetryPolicy, Strategy, TaskCancelled


class QueueModel(RuleBasedStateMachine):
    """Model: id -> [status, priority, due_seq, attempts, max_attempts]; held leases: id -> Task."""

    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp()
        self.loop = asyncio.new_event_loop()
        # No backoff, so a retried task is due at once and the order stays predictable.
        self.q = Queue(os.path.join(self.dir, "model.db"), retry=RetryPolicy(base_delay=0, jitter=0))
        self.run(self.q.open())
        self.model = {}
        self.held = {}
        self.seq = itertools.count()

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def teardown(self):
        self.run(self.q.close())
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(priority=st.integers(-3, 3), max_attempts=st.integers(1, 3))
    def enqueue(self, priority, max_attempts):
        tid = self.run(self.q.enqueue("t", {"p": priority}, priority=priority, max_attempts=max_attempts))
        assert tid not in self.model
        self.model[tid] = ["queued", priority, next(self.seq), 0, max_attempts]

    @rule(n=st.integers(1, 5), priority=st.integers(-3, 3))
    def enqueue_many(self, n, priority):
        ids = self.run(self.q.enqueue_many([("t", i, {"priority": priority}) for i in range(n)]))
        seq = next(self.seq)  # one batch shares one enqueue time; ties go by id
        for tid in ids:
            self.model[tid] = ["queued", priority, seq, 0, 5]

    @rule(limit=st.integers(0, 4))
    def claim(self, limit):
        got = self.run(self.q.claim("w", limit=limit, strategy=Strategy.PRIORITY))
        ready = sorted((m[1], m[2], tid) for tid, m in self.model.items() if m[0] == "queued")
        assert [t.id for t in got] == [tid for _, _, tid in ready[:limit]]
        for task in got:
            m = self.model[task.id]
            m[0], m[3] = "running", m[3] + 1
            assert task.attempts == m[3]
            self.held[task.id] = task

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def complete(self, data):
        tid = data.draw(st.sampled_from(sorted(self.held)))
        task = self.held.pop(tid)
        if self.model[tid][0] == "cancelled":
            try:
                self.run(self.q.complete(task, "r"))
                raise AssertionError("completing a cancelled task must be refused")
            except TaskCancelled:
                return
        self.run(self.q.complete(task, "r"))
        self.model[tid][0] = "completed"

    @precondition(lambda self: self.held)
    @rule(data=st.data(), retry=st.booleans())
    def fail(self, data, retry):
        tid = data.draw(st.sampled_from(sorted(self.held)))
        task = self.held.pop(tid)
        m = self.model[tid]
        if m[0] == "cancelled":
            try:
                self.run(self.q.fail(task, "e", retry=retry))
                raise AssertionError("failing a cancelled task must be refused")
            except TaskCancelled:
                return
        status = self.run(self.q.fail(task, "e", retry=retry))
        if retry and m[3] < m[4]:
            m[0], m[2] = "queued", next(self.seq)
        else:
            m[0] = "failed"
        assert status.value == m[0]

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def cancel(self, data):
        tid = data.draw(st.sampled_from(sorted(self.model)))
        m = self.model[tid]
        expected = m[0] in ("queued", "running")
        assert self.run(self.q.cancel(tid)) == expected
        if expected:
            m[0] = "cancelled"

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def stale_holder_is_fenced(self, data):
        # A copy of a held task with a forged token is a stranger: always refused.
        tid = data.draw(st.sampled_from(sorted(self.held)))
        task = self.held[tid]
        forged = type(task)(**{**task.__dict__, "token": task.token + 1})
        try:
            self.run(self.q.complete(forged, "x"))
            raise AssertionError("a forged token must not complete a task")
        except (LeaseLost, TaskCancelled):
            pass

    @invariant()
    def stats_match_the_model(self):
        stats = self.run(self.q.stats())
        counts = {s: 0 for s in ("queued", "running", "completed", "failed", "cancelled")}
        for m in self.model.values():
            counts[m[0]] += 1
        assert stats["by_status"] == counts

    @invariant()
    def rows_match_the_model(self):
        for tid, m in list(self.model.items())[-5:]:
            task = self.run(self.q.get(tid))
            assert (task.status.value, task.priority, task.attempts) == (m[0], m[1], m[3])


QueueModel.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
TestQueueModel = QueueModel.TestCase
