"""Pointer files: ``PATH.molen``, the small YAML file committed to git in place of the data.

# molen data pointer: commit this file; the data lives in the cache and on remotes
molen: 1
kind: file            # or: directory (then hash is the hash of its manifest)
hash: 3f2a…           # BLAKE3, 64 hex characters
size: 1048576         # bytes, all files together
files: 1
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from molen.atomic import write_atomic
from molen.errors import InvalidValueError
from molen.hashing import is_digest

__all__ = ["POINTER_SUFFIX", "Pointer", "pointer_path", "read_pointer", "write_pointer"]

POINTER_SUFFIX = ".molen"
_HEADER = "# molen data pointer: commit this file; the data lives in the cache and on remotes\n"


class Pointer(NamedTuple):
    """What a pointer file records about one tracked path."""

    kind: str
    hash: str
    size: int
    files: int

    def to_text(self) -> str:
        return (
            f"{_HEADER}molen: 1\nkind: {self.kind}\nhash: {self.hash}\n"
            f"size: {self.size}\nfiles: {self.files}\n"
        )

    @classmethod
    def from_text(cls, text: str, *, where: str) -> Pointer:
        """Parse pointer text; :class:`InvalidValueError` naming ``where`` when it is not one."""
        lines = text.splitlines()
        if len(lines) == 6 and lines[0] + "\n" == _HEADER and lines[1] == "molen: 1":
            # the form molen writes, read without a YAML parser (status reads every pointer)
            fields = dict(line.split(": ", 1) for line in lines[2:] if ": " in line)
            kind, digest = fields.get("kind"), fields.get("hash", "")
            size, files = fields.get("size", ""), fields.get("files", "")
            if kind in {"file", "directory"} and is_digest(digest) and size.isdigit() and files.isdigit():
                return cls(kind, digest, int(size), int(files))
        import yaml

        try:
            data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except yaml.YAMLError:
            data = None
        if (
            not isinstance(data, dict)
            or data.get("kind") not in {"file", "directory"}
            or not isinstance(data.get("hash"), str)
            or not is_digest(data["hash"])
        ):
            raise InvalidValueError(
                f"{where} is not a valid molen pointer file; restore it from git "
                "(git checkout -- FILE) or re-add the data with `molen data add`"
            )
        return cls(data["kind"], data["hash"], int(data.get("size", 0)), int(data.get("files", 1)))


def pointer_path(path: Path) -> Path:
    """The pointer file of a tracked path: ``data/raw.csv`` -> ``data/raw.csv.molen``."""
    return path.with_name(path.name + POINTER_SUFFIX)


def read_pointer(path: Path) -> Pointer:
    """Read the pointer file at ``path`` (a ``….molen`` file)."""
    return Pointer.from_text(path.read_text(), where=str(path))


def write_pointer(path: Path, pointer: Pointer) -> None:
    """Write a pointer file atomically (temporary name, then rename)."""
    try:
        write_atomic(path, pointer.to_text().encode())
    except OSError as exc:
        raise InvalidValueError(f"cannot write {path}: {exc.strerror}") from None
