"""A throwaway PostgreSQL server for tests and benchmarks: initdb + pg_ctl into a temp directory.

    with TempPostgres() as pg:          # starts a server on 127.0.0.1, a free port
        Queue(pg.url)                   # postgresql://prismq@127.0.0.1:PORT/prismq_test

or from a shell (prints the URL, stops the server on Ctrl-C / SIGTERM):

    python -m tools.pg_server

`make bench`, `make compare` and `make noise` run the PostgreSQL benchmarks against the
servers bench_servers() starts (one with fsync off, one with default durability) and
always stops them, also on an exception, Ctrl-C or SIGTERM.

PostgreSQL refuses to run as root, so when this runs as root the server runs as
an unprivileged user ("postgres" if it exists, else "nobody"), and its directory
is created where that user can reach it. The server is for tests only: trust
authentication on the loopback interface, fsync off.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, Iterator, Optional

INSTALL_HINT = ("PostgreSQL server binaries (initdb, pg_ctl) were not found; install them with "
                "'apt-get install postgresql' (Debian/Ubuntu) or put their directory on PATH "
                "(or set PRISMQ_PG_BINDIR)")
USER = "prismq"
DATABASE = "prismq_test"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def find_bindir() -> Optional[str]:
    """The directory holding initdb and pg_ctl: $PRISMQ_PG_BINDIR, PATH, or /usr/lib/postgresql/*/bin."""
    candidates = []
    if os.environ.get("PRISMQ_PG_BINDIR"):
        candidates.append(os.environ["PRISMQ_PG_BINDIR"])
    for name in ("initdb", "pg_ctl"):
        found = shutil.which(name)
        if found:
            candidates.append(os.path.dirname(os.path.realpath(found)))

    def version(path: str) -> tuple:
        parts = path.rstrip("/").split("/")
        try:
            return tuple(int(x) for x in parts[-2].split("."))
        except (ValueError, IndexError):
            return (0,)

    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    candidates += ["/usr/local/pgsql/bin"]
    for directory in candidates:
        if all(os.access(os.path.join(directory, b), os.X_OK) for b in ("initdb", "pg_ctl", "postgres")):
            return directory
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_account() -> Optional[pwd.struct_passwd]:
    """None when not root; else an unprivileged account to run the server as."""
    if os.geteuid() != 0:
        return None
    for name in (os.environ.get("PRISMQ_PG_USER"), "postgres", "nobody"):
        if not name:
            continue
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    # Neither exists: make a system account for it.
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "prismq-pg"],
                   check=True, capture_output=True)
    return pwd.getpwnam("prismq-pg")


class TempPostgres:
    """A PostgreSQL server in a temporary directory, stopped and removed by stop()."""

    def __init__(self, bindir: Optional[str] = None, database: str = DATABASE, durable: bool = False) -> None:
        # durable: PostgreSQL's default durability (fsync, full page writes), as a real
        # deployment runs; otherwise both are off, which is faster and fine for tests
        self.durable = durable
        self.bindir = bindir or find_bindir()
        if self.bindir is None:
            raise PostgresUnavailable(INSTALL_HINT)
        self.database = database
        self.account = _server_account()
        self.dir: Optional[str] = None
        self.port: Optional[int] = None
        self.url: Optional[str] = None

    # -- helpers ---------------------------------------------------------------

    def _bin(self, name: str) -> str:
        return os.path.join(self.bindir, name)

    def _run(self, *cmd: str, timeout: float = 120) -> subprocess.CompletedProcess:
        kwargs: dict = {}
        env = dict(os.environ, LC_ALL="C", LANG="C")
        if self.account is not None:  # root: run as the unprivileged account
            kwargs.update(user=self.account.pw_uid, group=self.account.pw_gid, extra_groups=[])
            env["HOME"] = self.dir
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=self.dir, **kwargs)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n"
                               f"{self._log_tail()}")
        return proc

    def _log_tail(self) -> str:
        try:
            with open(os.path.join(self.dir, "server.log"), encoding="utf-8", errors="replace") as f:
                return "server log:\n" + f.read()[-3000:]
        except (OSError, TypeError):
            return ""

    def _make_dir(self) -> str:
        # The unprivileged account must reach the directory, so when running as
        # root it goes in a world-traversable place, not under a root-only one.
        bases = [None] if self.account is None else [None, "/tmp", "/var/tmp", "/dev/shm"]
        for base in bases:
            path = tempfile.mkdtemp(prefix="prismq-pg-", dir=base)
            if self.account is None:
                return path
            os.chown(path, self.account.pw_uid, self.account.pw_gid)
            probe = subprocess.run(["test", "-w", path], user=self.account.pw_uid, group=self.account.pw_gid,
                                   extra_groups=[])
            if probe.returncode == 0:
                return path
            shutil.rmtree(path, ignore_errors=True)
        raise RuntimeError(f"no temporary directory is reachable by user {self.account.pw_name!r}")

    # -- life cycle --------------------------------------------------------------

    def start(self) -> "TempPostgres":
        self.dir = self._make_dir()
        data = os.path.join(self.dir, "data")
        try:
            self._run(self._bin("initdb"), "-D", data, "-U", USER, "--auth=trust", "-E", "UTF8",
                      "--no-locale", "--no-sync")
            for attempt in range(5):
                self.port = _free_port()
                options = (("" if self.durable else "-F -c fsync=off -c full_page_writes=off ")
                           + f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} "
                           "-c max_connections=200 -c shared_buffers=64MB")
                try:
                    self._run(self._bin("pg_ctl"), "-D", data, "-l", os.path.join(self.dir, "server.log"),
                              "-w", "-t", "60", "-o", options, "start")
                    break
                except RuntimeError:
                    if attempt == 4:  # the port was taken between choosing and binding, five times
                        raise
            self._run(self._bin("createdb") if os.path.exists(self._bin("createdb")) else "createdb",
                      "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, self.database)
        except BaseException:
            self.stop()
            raise
        self.url = f"postgresql://{USER}@127.0.0.1:{self.port}/{self.database}"
        return self

    def stop(self) -> None:
        if self.dir is None:
            return
        data = os.path.join(self.dir, "data")
        if os.path.exists(os.path.join(data, "postmaster.pid")):
            try:
                self._run(self._bin("pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop", timeout=60)
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def __enter__(self) -> "TempPostgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# The servers the PostgreSQL benchmarks read (benchmarks/_store.py SERVER_ENV): fsync and
# full_page_writes off for most figures, PostgreSQL's default durability for the figures a
# deployment gets. Either variable, if set, names a server to use instead; "skip" (or 0,
# no, off) measures no PostgreSQL figure.
BENCH_SERVERS = (("PRISMQ_BENCH_PG", False), ("PRISMQ_BENCH_PG_DURABLE", True))
SKIP_WORDS = ("0", "no", "off", "skip")

# The figures that need one of those servers: a backend parameter 'postgresql' or
# 'postgresql_durable', a class named after PostgreSQL, pgqueuer and prismq_queue_pg in the
# peers. Without a server they are skipped on every commit alike, so a gate that passes
# has not looked at them: it must say so (tools/compare.py).
PG_FIGURE_RE = re.compile(r"'postgresql(_durable)?'|Postgres|\bPg|Pg\b|'pgqueuer'|'prismq_queue_pg'")


def is_pg_figure(name: str) -> bool:
    """Whether a benchmark's display name is one of the figures measured on PostgreSQL."""
    return bool(PG_FIGURE_RE.search(name))


class BenchServers:
    """What bench_servers() set up: the URL of each server variable, or why it has none."""

    def __init__(self) -> None:
        self.urls: Dict[str, str] = {}
        self.missing: Dict[str, str] = {}

    @property
    def unmeasured(self) -> Optional[str]:
        """Why PostgreSQL figures go unmeasured in this run, or None when every server is there."""
        if not self.missing:
            return None
        return "; ".join(f"{var}: {why}" for var, why in self.missing.items())


@contextlib.contextmanager
def bench_servers(log=print) -> Iterator[BenchServers]:
    """Throwaway loopback servers for the PostgreSQL benchmarks, for the body of the `with`.

    Sets PRISMQ_BENCH_PG and PRISMQ_BENCH_PG_DURABLE to their URLs while it lasts. Missing
    server binaries are reported once and the run goes on without PostgreSQL (the status
    says why: status.unmeasured). The servers are stopped and the variables restored on
    any exit: an exception, Ctrl-C (KeyboardInterrupt), or SIGTERM (turned into SystemExit
    here, so the same clean-up runs).
    """
    status = BenchServers()
    servers = []
    saved_env = {var: os.environ.get(var) for var, _ in BENCH_SERVERS}
    restore_term = None
    if threading.current_thread() is threading.main_thread():  # signal handlers live there only
        restore_term = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        unavailable = None
        for var, durable in BENCH_SERVERS:
            given = os.environ.get(var)
            if given and given.lower() in SKIP_WORDS:
                del os.environ[var]
                status.missing[var] = f"{var}={given}"
                continue
            if given:  # a server of the caller's
                status.urls[var] = given
                continue
            if unavailable is not None:  # said once already
                status.missing[var] = unavailable
                continue
            try:
                server = TempPostgres(durable=durable)
            except PostgresUnavailable as exc:
                unavailable = str(exc)
                log(f"PostgreSQL figures will not be measured: {exc}")
                status.missing[var] = unavailable
                continue
            try:
                server.start()
            except Exception as exc:  # a server that would not start must not stop the SQLite figures
                status.missing[var] = f"the throwaway server did not start ({exc})"
                log(f"PostgreSQL figures of {var} will not be measured: {status.missing[var]}")
                continue
            servers.append(server)
            os.environ[var] = status.urls[var] = server.url
            log(f"PostgreSQL benchmarks ({var}) on a throwaway server"
                f"{' with default durability' if durable else ''}: {server.url}")
        yield status
    finally:
        for server in servers:
            server.stop()
        for var, value in saved_env.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
        if restore_term is not None:
            signal.signal(signal.SIGTERM, restore_term)


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def main() -> None:
    try:
        server = TempPostgres().start()
    except PostgresUnavailable as exc:
        sys.exit(str(exc))
    print(server.url, flush=True)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    try:
        while not stopping:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
