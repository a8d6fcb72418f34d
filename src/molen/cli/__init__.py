"""The ``molen`` command. Commands parse input, call one service function, and render."""

from __future__ import annotations

import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    """Run the ``molen`` command; a :class:`~molen.errors.MolenError` becomes one red line.
    Without ``argv`` (the process's command line), the process is about to exit after it."""
    try:
        _run(sys.argv[1:] if argv is None else argv)
    finally:
        if argv is None:
            import gc

            # the interpreter's last collections walk everything loaded (~0.5 s once Ray,
            # SQLAlchemy and boto3 are): frozen, it exits at once
            gc.freeze()


def _run(args: list[str]) -> None:
    if args in (["--version"], ["-V"]):
        # answered before the command tree is built: the fastest path people time
        from molen._version import __version__

        print(f"molen {__version__}")
        return
    from molen.cli.quick import run_quick
    from molen.errors import MolenError

    try:
        if run_quick(args):
            return
        from molen.cli.app import build

        build(args)(args=args, prog_name="molen")
    except MolenError as exc:
        from molen.cli.render import error

        error(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("molen: interrupted", file=sys.stderr)
        sys.exit(130)
