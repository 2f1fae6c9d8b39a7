"""Shared fixtures: every queue lives in a real file in a fresh temp directory."""

import pytest

from prismq_queue import Queue


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / "tasks.db")


@pytest.fixture
async def queue(db_path):
    async with Queue(db_path) as q:
        yield q
