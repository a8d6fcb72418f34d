#!/usr/bin/env bash
# Lint, type-check and test molen. Extra arguments go to pytest:
#
#   scripts/test.sh                              # everything
#   scripts/test.sh tests/test_infrastructure.py -x
#
# Every check runs even if an earlier one fails; the exit status is non-zero if any failed.
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"

bash "$ROOT/scripts/bootstrap.sh" --postgres --browser
cd "$ROOT"

# Only the code directories that exist (ruff reports missing paths as errors).
code_dirs=()
for d in src tests benchmarks; do
  [ -d "$d" ] && code_dirs+=("$d")
done

failed=()
step() {
  local name="$1"
  shift
  printf '\n==> %s\n' "$name"
  if "$@"; then
    return 0
  fi
  failed+=("$name")
}

step "ruff check" .venv/bin/ruff check "${code_dirs[@]}"
step "ruff format --check" .venv/bin/ruff format --check "${code_dirs[@]}"
step "mypy" .venv/bin/mypy
step "pytest" .venv/bin/pytest -n 2 --dist loadgroup -q "$@"

echo
if [ "${#failed[@]}" -gt 0 ]; then
  printf 'molen: FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "molen: all checks passed"
