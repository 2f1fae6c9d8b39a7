"""Backend selection: a URL picks the backend, whose module is imported only when used."""

from __future__ import annotations

import os

from ..errors import InvalidArgument
from .base import Backend


def from_url(url: "str | os.PathLike[str]", **options) -> Backend:
    """Return a backend for `url`: a file path or sqlite:///path for SQLite, postgresql:// for PostgreSQL."""
    if isinstance(url, os.PathLike):
        url = os.fspath(url)
    if not isinstance(url, str) or not url:
        raise InvalidArgument(f"queue location must be a non-empty path or URL, got {url!r}")
    scheme, sep, rest = url.partition("://")
    if not sep or len(scheme) == 1:  # a plain path (or a Windows drive letter)
        from .sqlite import SQLiteBackend

        return SQLiteBackend(url, **options)
    scheme = scheme.lower()
    if scheme == "sqlite":
        from .sqlite import SQLiteBackend

        # sqlite:///relative.db and sqlite:////absolute.db, as SQLAlchemy spells them.
        return SQLiteBackend(rest[1:] if rest.startswith("/") else rest, **options)
    if scheme in ("postgresql", "postgres"):
        from .postgres import PostgresBackend  # imports asyncpg: only for a PostgreSQL URL

        return PostgresBackend(url, **options)
    raise InvalidArgument(f"unsupported queue URL scheme {scheme!r} "
                          f"(expected a path, sqlite:///path or postgresql://user@host:port/db)")
