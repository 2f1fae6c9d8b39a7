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
_SECTION = re.compile(r"^--\s*(name|fragment):\s*(\w+)\s*$", re.MULTILINE)
# "{fragment arg=value ...}": values are SQL without spaces or braces, or a
# placeholder "{name}" (passed on, to be filled where the including text is).
_INCLUDE = re.compile(r"\{(\w+)((?:\s+\w+=(?:[^\s{}]+|\{\w+\}))*)\}")
_STEP = re.compile(r"^(\d{4})_\w+\.sql$")


def _strip(text: str) -> str:
    """The SQL of a section: comment lines dropped (they document the file, not the statement)."""
    lines = [ln for ln in text.strip().splitlines() if not ln.lstrip().startswith("--")]
    return "\n".join(lines).strip()


def include(text: str, fragments: dict[str, str]) -> str:
    """`text` with each "{name arg=value ...}" of a name in `fragments` replaced by that fragment.

    In the fragment, each "{arg}" is replaced by its value. load() runs this with the
    file's "-- fragment:" sections; a backend runs it again with pieces it chooses
    per call site (the claim of each strategy, say). Placeholders of other names are
    left for the backend.
    """
    def expand(match: re.Match) -> str:
        name, args = match.group(1), match.group(2)
        if name not in fragments:
            return match.group(0)  # a placeholder the backend fills ({schema}, {order}, ...)
        body = fragments[name]
        for arg in args.split():
            key, value = arg.split("=", 1)
            if "{" + key + "}" not in body:
                raise ValueError(f"fragment {name!r} has no {{{key}}}")
            body = body.replace("{" + key + "}", value)
        return body

    return _INCLUDE.sub(expand, text)


@cache
def load(backend: str) -> dict[str, str]:
    """Return {name: statement} parsed from `<backend>.sql`, fragments included."""
    parts = _SECTION.split((_HERE / f"{backend}.sql").read_text(encoding="utf-8"))
    sections = list(zip(parts[1::3], parts[2::3], parts[3::3]))
    fragments = {name: _strip(body) for kind, name, body in sections if kind == "fragment"}
    return {name: include(_strip(body), fragments).rstrip(";")
            for kind, name, body in sections if kind == "name"}


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
