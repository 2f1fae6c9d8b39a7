"""The prismq-queue command line, run as a real subprocess."""

import json
import subprocess
import sys

import pytest


def cli(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "prismq_queue", *args], capture_output=True, text=True, timeout=60)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_enqueue_list_stats_purge_backup_check(tmp_path):
    db = str(tmp_path / "cli.db")
    first = int(cli("enqueue", db, "resize", '{"w": 100}', "--priority", "10").stdout)
    second = int(cli("enqueue", db, "resize", "--key", "k1").stdout)
    assert int(cli("enqueue", db, "resize", "--key", "k1").stdout) == second
    listed = [json.loads(line) for line in cli("list", db, "--json").stdout.splitlines()]
    assert [t["id"] for t in listed] == [second, first] and listed[1]["payload"] == {"w": 100}
    stats = json.loads(cli("stats", db, "--json").stdout)
    assert stats["by_status"]["queued"] == 2
    assert "queued" in cli("stats", db).stdout
    assert "purged 0" in cli("purge", db, "--older-than", "0").stdout
    cli("backup", db, str(tmp_path / "copy.db"))
    assert json.loads(cli("stats", str(tmp_path / "copy.db"), "--json").stdout)["total"] == 2
    assert cli("check", db).stdout.strip() == "ok"


@pytest.mark.parametrize("args,message", [
    (["enqueue", "{db}", "t", "[1,"], "not valid JSON"),
    (["enqueue", "{db}", ""], "non-empty"),
    (["stats", "{missing}"], "does not exist"),
])
def test_errors_are_clear_and_exit_2(tmp_path, args, message):
    subs = {"db": str(tmp_path / "cli.db"), "missing": str(tmp_path / "no" / "x.db")}
    proc = cli(*[a.format(**subs) for a in args], check=False)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_help_lists_the_commands():
    out = cli("--help").stdout
    for command in ("stats", "enqueue", "list", "purge", "backup", "check"):
        assert command in out
