"""Fetch the front-end libraries of ``molen ui`` into ``src/molen/ui/static/vendor/``.

The packages, their versions, the files taken from each and the SHA-512 of each tarball are
pinned in ``src/molen/ui/vendor.json``; a tarball whose hash differs is refused. Tarballs come
from the npm registry (``NPM_REGISTRY``, default https://registry.npmjs.org) and are cached in
``~/.cache/molen/npm``. No Node.js is needed, here or for users: the files are served as they are.

    python scripts/vendor_ui.py            # fetch what is missing
    python scripts/vendor_ui.py --check    # exit 1 if any file is missing
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UI = ROOT / "src" / "molen" / "ui"
TARGET = UI / "static" / "vendor"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "molen" / "npm"


def _tarball(name: str, version: str, integrity: str) -> bytes:
    algorithm, _, expected = integrity.partition("-")
    cached = CACHE / f"{name}-{version}.tgz"
    if cached.is_file():
        data = cached.read_bytes()
    else:
        registry = os.environ.get("NPM_REGISTRY", "https://registry.npmjs.org").rstrip("/")
        url = f"{registry}/{name}/-/{name.rsplit('/', 1)[-1]}-{version}.tgz"
        print(f"vendor_ui: fetching {url}", file=sys.stderr)
        with urllib.request.urlopen(url, timeout=120) as answer:
            data = answer.read()
    digest = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
    if digest != expected:
        raise SystemExit(f"vendor_ui: {name}@{version}: the tarball's {algorithm} is not the pinned one")
    if not cached.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=CACHE, delete=False) as sink:
            sink.write(data)
        os.replace(sink.name, cached)
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that every file is there")
    options = parser.parse_args(argv)
    pinned = json.loads((UI / "vendor.json").read_text())["packages"]
    missing = [p for p in pinned if not all((TARGET / out).is_file() for out in p["files"].values())]
    if options.check or not missing:
        for package in missing:
            print(
                f"vendor_ui: {package['name']} is missing; run python scripts/vendor_ui.py", file=sys.stderr
            )
        return 1 if missing else 0
    TARGET.mkdir(parents=True, exist_ok=True)
    for package in missing:
        data = _tarball(package["name"], package["version"], package["integrity"])
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            for member, out in package["files"].items():
                source = archive.extractfile(member)
                if source is None:
                    raise SystemExit(f"vendor_ui: {package['name']} has no file {member}")
                partial = TARGET / f".{out}.part"
                partial.write_bytes(source.read())
                os.replace(partial, TARGET / out)
        print(f"vendor_ui: {package['name']}@{package['version']} ({package['license']})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
