"""``python -m molen`` is the ``molen`` command."""

from molen.cli import main

main()
