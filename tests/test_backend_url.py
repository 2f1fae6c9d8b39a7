import pytest

from prismq_queue import InvalidArgument, Queue
from prismq_queue.backends.sqlite import SQLiteBackend


def test_plain_path_and_sqlite_url_pick_sqlite(tmp_path):
    assert isinstance(Queue(str(tmp_path / "a.db")).backend, SQLiteBackend)
    assert Queue(tmp_path / "a.db").backend.path == str(tmp_path / "a.db")
    assert Queue(f"sqlite:///{tmp_path}/b.db").backend.path == f"{tmp_path}/b.db"


@pytest.mark.parametrize("bad", ["", None, 42, "redis://localhost/0"])
def test_unusable_locations_are_refused(bad):
    with pytest.raises(InvalidArgument):
        Queue(bad)


def test_unknown_durability_is_refused(tmp_path):
    with pytest.raises(InvalidArgument):
        Queue(str(tmp_path / "a.db"), durability="sometimes")
