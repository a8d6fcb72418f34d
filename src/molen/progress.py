"""Progress reporting, as services see it: a small protocol the interfaces implement.

Services call :meth:`Progress.start`, :meth:`Progress.advance` and :meth:`Progress.finish`;
the CLI passes a Rich progress bar, the Python API the silent :data:`SILENT`.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["SILENT", "Progress"]


class Progress(Protocol):
    def start(self, description: str, total: int | None) -> None: ...

    def advance(self, amount: int = 1) -> None: ...

    def finish(self) -> None: ...


class _Silent:
    def start(self, description: str, total: int | None) -> None:
        pass

    def advance(self, amount: int = 1) -> None:
        pass

    def finish(self) -> None:
        pass


SILENT: Progress = _Silent()
