"""Strategy: the order in which a claim picks ready tasks, and the decisions behind it.

Every claim policy is decided here, once: the order of claimed tasks, how
WEIGHTED_RANDOM finds the priority levels to draw from and how it draws. A
backend only runs the SQL each step asks for (see backends/sqlite.py and
backends/postgres.py).
"""

from __future__ import annotations

import enum
import random
from collections import Counter
from operator import itemgetter
from typing import Any, Callable, Optional, Sequence

# Positions in a claimed row, as every backend returns it.
from .records import C_ID as _ID, C_PRIORITY as _PRIORITY, C_RUN_AT as _RUN_AT

MAX_LEVELS = 64  # WEIGHTED_RANDOM draws among at most this many ready priority levels
# WEIGHTED_RANDOM's search for the levels that hold due tasks (see LevelSearch):
# its first round walks this many levels, or reads this many due tasks.
LEVEL_VISITS = 2 * MAX_LEVELS
DUE_ROWS = 1024
SEARCH_GROWTH = 8
# PRIORITY on PostgreSQL: the claim walks at most this many levels that hold
# queued tasks, one index seek each, taking each one's due tasks in turn; past
# them it reads the rest in order (see pick_priority in sql/postgres.sql).
PRIORITY_WALK = 16


class Strategy(str, enum.Enum):
    """How `claim` chooses among the tasks that are due."""

    FIFO = "fifo"  # first due, first out
    LIFO = "lifo"  # most recently due first
    PRIORITY = "priority"  # lowest priority number first, FIFO within a priority
    WEIGHTED_RANDOM = "weighted_random"  # priority levels drawn with weight 1/(1+p-pmin)

    def __str__(self) -> str:
        return self.value


# Sort keys of claimed rows, as itemgetters: called once per claimed task, and a
# Python function would cost a frame each time.
_due_key = itemgetter(_RUN_AT, _ID)
_priority_key = itemgetter(_PRIORITY, _RUN_AT, _ID)


# The order a claim hands its tasks back in, by strategy: (sort key, reversed).
# UPDATE ... RETURNING gives rows in no defined order, so every backend sorts.
# WEIGHTED_RANDOM's tasks go by level (low numbers first), then first due.
CLAIM_ORDER: dict[str, tuple[Callable[[tuple], Any], bool]] = {
    Strategy.FIFO.value: (_due_key, False),
    Strategy.LIFO.value: (_due_key, True),
    Strategy.PRIORITY.value: (_priority_key, False),
    Strategy.WEIGHTED_RANDOM.value: (_priority_key, False),
}


def in_claim_order(rows: list[tuple], strategy: str) -> list[tuple]:
    """`rows` (claimed, in any order) sorted in place into the order `strategy` hands them out."""
    key, reverse = CLAIM_ORDER[strategy]
    rows.sort(key=key, reverse=reverse)
    return rows


class LevelSearch:
    """WEIGHTED_RANDOM: find the lowest MAX_LEVELS priority levels that hold due tasks.

    Two ways find them: walking the levels that hold queued tasks (cheap when
    they are few) and reading the due tasks themselves (cheap when they are
    few). Either can be the expensive one: 100,000 levels of delayed tasks, or
    a long backlog at one level. So each goes a bounded distance in turn, the
    bounds growing eightfold a round, until one of them finishes: a claim costs
    within a constant factor of the cheaper way, whatever the other would cost.
    A backend runs the round's queries and reports back:

        search = LevelSearch(limit)
        while not (search.walked(<walk at most search.visits levels>)
                   or search.read(<read at most search.rows due tasks>)):
            pass
        search.levels, search.target
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.visits = LEVEL_VISITS
        self.rows = DUE_ROWS
        self.levels: list[int] = []
        self.target = 0  # how many tasks to draw: the due tasks of those levels, at most `limit`

    def walked(self, found: Sequence[tuple[Optional[int], int]]) -> bool:
        """The walk's rows: (level, due tasks counted up to limit), and (None, _) if it reached the end.

        True when they settle it: the walk found MAX_LEVELS levels, or saw every level.
        """
        levels = sorted((level, n) for level, n in found if level is not None)
        if len(found) == MAX_LEVELS or len(levels) < len(found):
            self._settle(levels)
            return True
        return False

    def read(self, due: Sequence[tuple[int, int]]) -> bool:
        """The due tasks read, counted by level, lowest level first: (level, count).

        True when they settle it: fewer than `rows` came back, so these are all.
        """
        if sum(n for _, n in due) < self.rows:
            self._settle(due[:MAX_LEVELS])
            return True
        self.visits *= SEARCH_GROWTH
        self.rows *= SEARCH_GROWTH
        return False

    def _settle(self, found: Sequence[tuple[int, int]]) -> None:
        self.levels = [level for level, _ in found]
        # Only as many slots are drawn as there are due tasks, so the draw's cost
        # follows the tasks returned, not `limit` (a limit of 2**40 is not an allocation).
        self.target = min(self.limit, sum(n for _, n in found))


class WeightedDraw:
    """WEIGHTED_RANDOM's draw: one priority level per free slot, with weight 1 / (1 + p - pmin).

    Low numbers are favoured, yet every level keeps a share, so nothing starves.
    Within a level tasks go first due, first out (the backend's query). A level
    that runs dry gives its slots back to the next round's draw:

        draw = WeightedDraw(levels, target, rng)
        while (draws := draw.next()):       # {level: how many}
            draw.took(<claim draws[level] first due tasks of each level>)
        draw.claimed
    """

    def __init__(self, levels: list[int], target: int, rng: random.Random) -> None:
        self.levels = list(levels)
        self.target = target
        self.claimed: list[tuple] = []
        self._rng = rng
        self._draws: dict[int, int] = {}

    def next(self) -> dict[int, int]:
        """How many tasks to take from each level this round ({} when done), lowest level first."""
        wanted = self.target - len(self.claimed)
        if wanted <= 0 or not self.levels:
            return {}
        base = self.levels[0]
        drawn = Counter(self._rng.choices(self.levels, [1.0 / (1 + p - base) for p in self.levels], k=wanted))
        self._draws = {level: drawn[level] for level in sorted(drawn)}
        return self._draws

    def took(self, rows: Sequence[tuple]) -> None:
        """The rows this round claimed; the levels that gave fewer than drawn ran dry and drop out."""
        got = Counter(row[_PRIORITY] for row in rows)
        self.levels = [p for p in self.levels if got[p] >= self._draws.get(p, 0)]
        self.claimed.extend(rows)
