"""The schema revisions this molen knows (standard library only: the quick SQLite reader
checks them without importing SQLAlchemy or Alembic)."""

from __future__ import annotations

__all__ = ["HEAD", "KNOWN_REVISIONS"]

#: Every revision in ``migrations/versions``, oldest first; the last is the head.
KNOWN_REVISIONS = ("0001", "0002", "0003", "0004")
HEAD = KNOWN_REVISIONS[-1]
