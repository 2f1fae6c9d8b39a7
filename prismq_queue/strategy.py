"""Strategy: the order in which a claim picks ready tasks."""

import enum


class Strategy(str, enum.Enum):
    """How `claim` chooses among the tasks that are due."""

    FIFO = "fifo"  # first due, first out
    LIFO = "lifo"  # most recently due first
    PRIORITY = "priority"  # lowest priority number first, FIFO within a priority
    WEIGHTED_RANDOM = "weighted_random"  # priority levels drawn with weight 1/(1+p-pmin)

    def __str__(self) -> str:
        return self.value
