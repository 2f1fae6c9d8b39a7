"""Records: the named shapes of what passes between Queue, Worker and the backends.

They are tuples underneath (NamedTuple) so that the hot path keeps the cost of
tuples: built once per task or per round trip, read by unpacking or by name.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

from .task import Task


class RoundTrip(NamedTuple):
    """What one Queue.round_trip() did."""

    #: an outcome per finish record ("ok", "cancelled", "lost", "missing"), or None: every record applied
    outcomes: Optional[list[str]]
    #: the tasks the trip's claim leased, in the strategy's order
    tasks: list[Task]
    #: expired leases the trip recovered
    recovered: int
    #: earliest run_at of a queued task, when the claim came up short (None otherwise or if none)
    next_due: Optional[float]
    #: earliest lease end of a running task, when the claim came up short (None otherwise or if none)
    next_expiry: Optional[float]
