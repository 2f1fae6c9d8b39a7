"""prismq_queue: a durable async task queue in one SQLite file or a PostgreSQL database."""

from .errors import (
    DatabaseError, InvalidArgument, LeaseLost, PayloadError, QueueBusy, QueueClosed, QueueError,
    SchemaVersionError, TaskCancelled, TaskNotFound, UnsupportedOperation,
)
from .queue import Queue
from .retry import RetryPolicy
from .strategy import Strategy
from .task import Task, TaskStatus
from .worker import Worker

__version__ = "0.6.0"

__all__ = [
    "Queue", "Worker", "Task", "TaskStatus", "Strategy", "RetryPolicy",
    "QueueError", "InvalidArgument", "PayloadError", "DatabaseError", "SchemaVersionError", "QueueClosed",
    "QueueBusy", "LeaseLost", "TaskCancelled", "TaskNotFound", "UnsupportedOperation", "__version__",
]
