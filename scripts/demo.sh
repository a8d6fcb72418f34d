#!/usr/bin/env bash
# Run the molen demo (arguments are passed on to `python -m molen.demo`).
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"

bash "$ROOT/scripts/bootstrap.sh"
# No cd: paths given to the demo stay relative to the caller's directory.
exec "$ROOT/.venv/bin/python" -m molen.demo "$@"
