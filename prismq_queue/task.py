"""Task, the unit of work, and TaskStatus, its life cycle."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Optional


class TaskStatus(str, enum.Enum):
    """The states of a task; the string values are what the database stores."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value

    @property
    def finished(self) -> bool:
        return self in _FINISHED


_FINISHED = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})


@dataclass
class Task:
    """A task as read from the queue; `token` fences the lease of a claimed task."""

    id: int
    type: str
    payload: Any
    priority: int = 100
    status: TaskStatus = TaskStatus.QUEUED
    attempts: int = 0
    max_attempts: int = 5
    run_at: float = 0.0
    created_at: float = 0.0
    lease_until: Optional[float] = None
    token: Optional[int] = None
    worker_id: Optional[str] = None
    result: Any = None
    error: Optional[str] = None
    idempotency_key: Optional[str] = None
    finished_at: Optional[float] = None
