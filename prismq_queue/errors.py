"""The package's exception hierarchy: every error a caller can see derives from QueueError."""


class QueueError(Exception):
    """Base class of every error raised by prismq_queue."""


class InvalidArgument(QueueError, ValueError):
    """A call got input it cannot accept (bad type name, payload, priority, ...); nothing was written."""


class PayloadError(InvalidArgument):
    """A payload or result is not JSON-serializable."""


class DatabaseError(QueueError):
    """The database cannot be opened or used: for SQLite a missing directory, a file that is not a
    database, a corrupt file; for PostgreSQL a server or database that cannot be reached, a failed statement."""


class SchemaVersionError(DatabaseError):
    """The database (file or schema) was written by a newer prismq_queue; it was left untouched."""


class QueueClosed(QueueError):
    """The queue is not open."""


class QueueBusy(QueueError):
    """The database stayed locked by other writers for longer than the queue's busy timeout."""


class LeaseLost(QueueError):
    """The task's lease was taken over by another claim; this holder can no longer finish it."""


class TaskCancelled(QueueError):
    """The task was cancelled while it ran; its completion was refused."""


class TaskNotFound(QueueError, KeyError):
    """No task has that id."""


class UnsupportedOperation(QueueError, NotImplementedError):
    """A call this backend cannot do (on PostgreSQL: checkpoint, backup; use pg_dump)."""
