"""The ``molen`` command. Commands parse input, call one service function, and render."""

from __future__ import annotations

import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    """Run the ``molen`` command; a :class:`~molen.errors.MolenError` becomes one red line."""
    args = sys.argv[1:] if argv is None else argv
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
