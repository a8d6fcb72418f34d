#!/usr/bin/env bash
# Prepare a development environment for molen. Safe to run repeatedly.
#
#   scripts/bootstrap.sh              # .venv with molen installed editable, with [dev] extras
#   scripts/bootstrap.sh --postgres   # ... and PostgreSQL server binaries for the test suite
#   scripts/bootstrap.sh --browser    # ... and Chromium, for the web UI's browser tests
#
# Works from any directory; needs python3 (and apt-get when something is missing).
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.molen-installed"

want_postgres=0
want_browser=0
for arg in "$@"; do
  case "$arg" in
    --postgres) want_postgres=1 ;;
    --browser) want_browser=1 ;;
    -h | --help)
      sed -n '2,8s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
      exit 0
      ;;
    *)
      echo "molen: unknown argument: $arg (expected --postgres or --browser)" >&2
      exit 2
      ;;
  esac
done

say() { printf 'molen: %s\n' "$*" >&2; }

# Run a command as root: directly if we are root, through sudo if it exists.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    say "need root to run: $*  (not root and sudo is not installed)"
    return 1
  fi
}

apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    say "apt-get not found; please install these packages yourself: $*"
    return 1
  fi
  say "installing system packages: $*…"
  # Callers use `apt_install ... || ...`, which turns off `set -e` in here: check each step.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || return 1
  as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null || return 1
}

sha256_of() {
  if command -v sha256sum >/dev/null 2>&1; then
    sha256sum "$1" | cut -d' ' -f1
  else
    python3 -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$1"
  fi
}

# --- virtual environment ---------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  command -v python3 >/dev/null 2>&1 || { say "python3 not found; install Python 3.10 or newer"; exit 1; }
  say "creating virtual environment in $VENV…"
  if ! python3 -m venv "$VENV"; then
    # Debian ships venv/ensurepip separately; a failed attempt leaves a half-made directory.
    rm -rf -- "$VENV"
    py_ver="$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    apt_install python3-venv || apt_install "python${py_ver}-venv"
    python3 -m venv "$VENV"
  fi
  rm -f -- "$STAMP"
fi

want_hash="$(sha256_of "$ROOT/pyproject.toml")"
have_hash="$(cat "$STAMP" 2>/dev/null || true)"
if [ "$want_hash" != "$have_hash" ]; then
  say "upgrading pip…"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  say "installing molen (editable, with dev extras)…"
  (cd "$ROOT" && "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[dev]")
  printf '%s\n' "$want_hash" >"$STAMP"
else
  say "virtual environment is up to date"
fi

# --- PostgreSQL server binaries (for the test suite) ---------------------------
have_initdb() { compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; }

if [ "$want_postgres" -eq 1 ]; then
  if have_initdb; then
    say "PostgreSQL server binaries found"
  else
    say "PostgreSQL server binaries not found…"
    apt_install postgresql
    if ! have_initdb; then
      say "installed postgresql but found no /usr/lib/postgresql/*/bin/initdb"
      exit 1
    fi
  fi
fi

# --- the web UI's front-end libraries (pinned, hash-checked, from the npm registry) -----
"$VENV/bin/python" "$ROOT/scripts/vendor_ui.py"

# --- Chromium (the web UI's browser tests drive it with Playwright) -------------------
if [ "$want_browser" -eq 1 ]; then
  if command -v chromium >/dev/null 2>&1; then
    say "Chromium found"
  else
    say "Chromium not found…"
    apt_install chromium
    command -v chromium >/dev/null 2>&1 || { say "installed chromium but found no chromium command"; exit 1; }
  fi
fi

say "ready"
