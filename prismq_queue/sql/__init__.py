"""The SQL of each backend, kept in files beside this module.

Per backend (`sqlite`, `postgres`):

- `<backend>.sql`: the named statements the backend runs ("-- name: x" lines),
  read by load();
- `<backend>/schema.sql`: the schema as it is today, top to bottom: what a new
  database gets;
- `<backend>/migrations/NNNN_what.sql`: the numbered steps that brought an older
  database to it, step N taking version N-1 to version N (step 1 is the first
  schema ever released, the base an old database is rebuilt from in the tests).

Both backends record one number, the version: the number of the last step the
database has had, or of the last step there is for a new database built from
schema.sql. schema() gives both with the plan that takes any older version to
today's; each backend only reads and writes the number its own way
(read_version and set_version in <backend>.sql).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

_HERE = Path(__file__).parent
_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
_STEP = re.compile(r"^(\d{4})_\w+\.sql$")


def _strip(text: str) -> str:
    """The SQL of a section: comment lines dropped (they document the file, not the statement)."""
    lines = [ln for ln in text.strip().splitlines() if not ln.lstrip().startswith("--")]
    return "\n".join(lines).strip()


@cache
def load(backend: str) -> dict[str, str]:
    """Return {name: statement} parsed from `<backend>.sql`."""
    parts = _NAME.split((_HERE / f"{backend}.sql").read_text(encoding="utf-8"))
    return {name: _strip(body).rstrip(";") for name, body in zip(parts[1::2], parts[2::2])}


@dataclass(frozen=True)
class Schema:
    """A backend's schema: today's, and the steps from each older version to it."""

    version: int  # what schema.sql creates: the number of the last migration step
    create: str  # schema.sql
    migrations: dict[int, str]  # N -> the step from version N-1 to version N

    def plan(self, found: int) -> list[tuple[int, str]]:
        """The scripts that take a database at version `found` to `version`, each with the version it reaches.

        A new database (version 0) gets schema.sql at once, not every step since
        the first release. A newer version than this one is the caller's to
        refuse, before it writes anything.
        """
        if not 0 <= found <= self.version:
            raise ValueError(f"no plan from schema version {found} (this prismq_queue writes {self.version})")
        if found == 0:
            return [(self.version, self.create)]
        return [(n, self.migrations[n]) for n in range(found + 1, self.version + 1)]


@cache
def schema(backend: str) -> Schema:
    """Read `<backend>/schema.sql` and `<backend>/migrations/`."""
    folder = _HERE / backend
    migrations = {}
    for path in (folder / "migrations").iterdir():
        match = _STEP.match(path.name)
        if match:
            migrations[int(match.group(1))] = _strip(path.read_text(encoding="utf-8"))
    version = max(migrations, default=0)
    if sorted(migrations) != list(range(1, version + 1)):
        raise RuntimeError(f"{folder / 'migrations'}: steps must be numbered 1..N without gaps, "
                           f"found {sorted(migrations)}")
    return Schema(version, _strip((folder / "schema.sql").read_text(encoding="utf-8")), migrations)
