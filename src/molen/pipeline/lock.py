"""``molen.lock``: what each stage's last execution used and made; committed to git.

Per stage: the command, the version (content hash) of every dep, the value of every param,
the version of every out, metric and plot file, and the run that recorded it. The file is
JSON (which YAML readers read too), sorted and indented so that git diffs stay readable, and
written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from molen.atomic import write_atomic
from molen.data.pointer import Pointer
from molen.errors import InvalidValueError

if TYPE_CHECKING:
    from molen.data.tracked import TrackedPath

__all__ = ["LOCK_NAME", "StageRecord", "lock_outs", "read_lock", "write_lock"]

LOCK_NAME = "molen.lock"
_SCHEMA = 1


class StageRecord(NamedTuple):
    """One stage as it last ran: cmd, deps and outs (path → version), params (key → value)."""

    cmd: str
    deps: dict[str, Pointer]
    params: dict[str, Any]
    outs: dict[str, Pointer]
    run: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "cmd": self.cmd,
            "deps": {path: _pointer(p) for path, p in sorted(self.deps.items())},
            "params": dict(sorted(self.params.items())),
            "outs": {path: _pointer(p) for path, p in sorted(self.outs.items())},
            **({"run": self.run} if self.run else {}),
        }

    @classmethod
    def from_json(cls, data: Any, where: str) -> StageRecord:
        try:
            return cls(
                cmd=str(data["cmd"]),
                deps={path: _parse_pointer(value) for path, value in data.get("deps", {}).items()},
                params=dict(data.get("params", {})),
                outs={path: _parse_pointer(value) for path, value in data.get("outs", {}).items()},
                run=data.get("run"),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise InvalidValueError(
                f"{where} is damaged; restore it from git (git checkout -- {LOCK_NAME}) or rerun "
                "`molen repro --force`"
            ) from None


def _pointer(pointer: Pointer) -> dict[str, Any]:
    return {"kind": pointer.kind, "hash": pointer.hash, "size": pointer.size, "files": pointer.files}


def _parse_pointer(value: dict[str, Any]) -> Pointer:
    return Pointer(str(value["kind"]), str(value["hash"]), int(value["size"]), int(value["files"]))


def read_lock(root: Path) -> dict[str, StageRecord]:
    """The stage records of the project at ``root`` (empty when there is no lock yet)."""
    path = root / LOCK_NAME
    try:
        document = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except ValueError:
        document = None
    if not isinstance(document, dict) or not isinstance(document.get("stages"), dict):
        raise InvalidValueError(
            f"{path} is not a molen lock file; restore it from git or rerun `molen repro --force`"
        )
    if document.get("schema", _SCHEMA) > _SCHEMA:
        raise InvalidValueError(f"{path} was written by a newer molen; upgrade molen to read it")
    return {
        name: StageRecord.from_json(data, f"{path} (stage {name})")
        for name, data in document["stages"].items()
    }


def lock_outs(root: Path) -> list[TrackedPath]:
    """Every out, metric and plot version molen.lock records, as data to push, pull or check out."""
    from molen.data.tracked import TrackedPath

    found = {path: pointer for record in read_lock(root).values() for path, pointer in record.outs.items()}
    return [TrackedPath(path, pointer) for path, pointer in sorted(found.items())]


def write_lock(root: Path, records: dict[str, StageRecord]) -> None:
    """Replace the lock file with ``records`` (atomically)."""
    document = {
        "schema": _SCHEMA,
        "stages": {name: records[name].to_json() for name in sorted(records)},
    }
    write_atomic(root / LOCK_NAME, (json.dumps(document, indent=2) + "\n").encode())
