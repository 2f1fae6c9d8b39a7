"""Named SQL statements, kept in .sql files beside this module, one file per backend."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


@cache
def load(backend: str) -> dict[str, str]:
    """Return {name: statement} parsed from `<backend>.sql`."""
    text = (Path(__file__).with_name(f"{backend}.sql")).read_text(encoding="utf-8")
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2]):
        lines = [ln for ln in body.strip().splitlines() if not ln.lstrip().startswith("--")]
        queries[name] = "\n".join(lines).strip().rstrip(";")
    return queries
