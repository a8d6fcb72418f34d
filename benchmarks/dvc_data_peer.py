"""DVC side ("peer") of the molen data-versioning benchmark.

Run this file with the python of the DVC peer venv (``benchmarks/peers.py`` builds it in
``.bench/dvc`` with ``ensure_dvc_venv()``), never with molen's: it imports only the standard
library and ``benchmarks/datasets.py`` (the shared, deterministic data generators), and times
DVC's own command line, ``<venv>/bin/dvc ...``, as fresh subprocesses, so each time includes
DVC's start-up (see ``cli_version``). Every subcommand prints exactly one JSON object on
stdout; progress goes to stderr.

``--dir D`` is the benchmark's own folder: it must be absent or empty, and is removed at the end
unless ``--keep``. Inside it: the workspace(s) ``ws`` (``ws-1``, ``ws-2``, ... where every
repeat needs a fresh one), the local remote ``remote``, and DVC's site cache and global/system
config folders (``DVC_SITE_CACHE_DIR``, ``DVC_GLOBAL_CONFIG_DIR``, ``DVC_SYSTEM_CONFIG_DIR``),
so nothing of DVC's leaks to or from ``/var/tmp/dvc`` or ``~/.config/dvc``. Nothing is deleted
while measuring: a finished workspace, a ``data/`` or ``.dvc/cache`` to be restored is renamed
into ``D/trash`` (see ``Bench.discard`` for why), and all of it goes at the end. Every workspace is
``git init`` + ``dvc init`` + ``dvc config core.analytics false`` + ``dvc config
core.check_update false`` (+ ``cache.type`` if ``--cache-type``) + one commit, with
``DVC_NO_ANALYTICS=1`` and a fixed git identity in the environment. DVC's default cache type is
``reflink,copy``: on ext4 (no reflinks) that means copies. ``os.sync()`` runs before every timed
command so the writeback of generated data is not billed to DVC; the page cache stays warm.

What is measured (medians of ``--repeat`` runs; data from ``datasets.py``):

``add_big --size-mib 1024``
    ``dvc add big.bin`` of one random file, a fresh workspace per repeat (generation untimed).
``add_many --count 20000``
    ``dvc add data`` of ``make_small_files`` (1-4 KiB files in 100 subfolders), a fresh
    workspace per repeat.
``status --count 20000``
    After ``dvc add data`` and a git commit of ``data.dvc``: ``dvc status`` (workspace against
    the cache, DVC's classic command) and ``dvc data status`` (git-status-like: HEAD, the .dvc
    files and the workspace), each ``--repeat`` times (default 5), with nothing changed; and
    ``dvc status`` in a repository tracking nothing (DVC's fixed cost per command).
``checkout --count 20000``
    After ``dvc add data``: move ``data/`` away (untimed), time ``dvc checkout``; repeated.
``push_pull_local --count 20000`` / ``push_pull_s3 --endpoint URL --bucket B``
    After ``dvc add data``, per repeat: ``dvc push`` to a fresh remote (``D/remote``,
    ``D/remote-2``, ...; or ``s3://B/<prefix>``, ``s3://B/<prefix>-2``, ... with
    ``endpointurl`` = URL and credentials from ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
    default ``testing``), a second ``dvc push`` with nothing to send, ``dvc pull`` after
    moving ``.dvc/cache`` away (workspace intact: a pure fetch) and ``dvc pull`` after moving
    ``.dvc/cache`` and ``data/`` away (like a fresh clone: fetch + checkout). Counts that DVC
    prints are checked (the first push must send every object, the second none).
``cli_version``
    ``dvc --version`` as a fresh process: DVC's start-up cost, included in every time above.

Each result has ``tool``, ``dvc_version``, ``benchmark``, ``seconds`` (list) and ``median`` of
the main phase, ``phases`` (every timed command with its samples and DVC's last output line),
file counts and bytes, and the machine facts that matter (cores, file system, cache type).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from datasets import (
    DEFAULT_BIG_SEED,
    DEFAULT_SMALL_COUNT,
    DEFAULT_SMALL_SEED,
    MIB,
    Generated,
    count_files,
    make_big_file,
    make_small_files,
)

TIMEOUT = 900  # seconds for one DVC command
GIT_ENV = {
    "GIT_AUTHOR_NAME": "molen bench",
    "GIT_AUTHOR_EMAIL": "bench@molen.invalid",
    "GIT_COMMITTER_NAME": "molen bench",
    "GIT_COMMITTER_EMAIL": "bench@molen.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}
DEFAULT_CACHE_TYPE = "reflink,copy"  # DVC's own default for cache.type


def _log(message: str) -> None:
    print(f"[dvc-peer] {message}", file=sys.stderr, flush=True)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _dvc_exe(args: argparse.Namespace) -> Path:
    if args.dvc:
        return Path(args.dvc)
    exe = Path(sys.executable).parent / ("dvc.exe" if os.name == "nt" else "dvc")
    if not exe.exists():
        raise SystemExit(
            f"no dvc next to {sys.executable}: run this script with the DVC venv's python "
            "(python benchmarks/peers.py dvc prints it) or pass --dvc"
        )
    return exe


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _filesystem(path: Path) -> str | None:
    """Type of the file system holding ``path`` (longest mount point prefix in /proc/mounts)."""
    target = os.path.realpath(path)
    best, fstype = "", None
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mount = parts[1].replace("\\040", " ")
                inside = target == mount or target.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, fstype = mount, parts[2]
    except OSError:
        return None
    return fstype


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _int_or_none(pattern: str, text: str) -> int | None:
    match = re.search(pattern, text)
    return int(match.group(1)) if match else None


@dataclass
class Phase:
    """One timed DVC command and its samples."""

    command: list[str]
    seconds: list[float] = field(default_factory=list)
    output: str = ""
    counts: list[int | None] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "command": " ".join(self.command),
            "seconds": self.seconds,
            "median": _median(self.seconds),
            "min": min(self.seconds) if self.seconds else None,
            "output": self.output,
        }
        if self.counts:
            data["counts"] = self.counts
        return data


class Bench:
    """The benchmark folder ``--dir``: environment, workspaces and the dvc/git runners."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dvc = str(_dvc_exe(args))
        self.root: Path = args.dir.resolve()
        if self.root.exists() and any(self.root.iterdir()):
            raise SystemExit(f"--dir {self.root} is not empty: use a fresh folder")
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "dvc-config"
        for sub in ("global", "system"):
            (config / sub).mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ)
        self.env.update(GIT_ENV)
        self.env.update(
            {
                "DVC_NO_ANALYTICS": "1",
                "DVC_SITE_CACHE_DIR": str(self.root / "site-cache"),
                "DVC_GLOBAL_CONFIG_DIR": str(config / "global"),
                "DVC_SYSTEM_CONFIG_DIR": str(config / "system"),
            }
        )
        self.setup_seconds = 0.0
        self.generate_seconds = 0.0
        self.trashed = 0
        self.loadavg_start = _loadavg()

    # -- running commands -------------------------------------------------------------------

    def _run(self, cmd: list[str], cwd: Path) -> tuple[float, str]:
        start = time.perf_counter()
        result = subprocess.run(
            cmd, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
        elapsed = time.perf_counter() - start
        if result.returncode != 0:
            sys.stderr.write(result.stdout + result.stderr)
            raise RuntimeError(f"{' '.join(cmd)} (in {cwd}) exited with {result.returncode}")
        return elapsed, result.stdout + result.stderr

    def setup(self, cmd: list[str], cwd: Path) -> str:
        """Run an untimed setup command (``dvc`` as the first word means DVC's executable)."""
        full = [self.dvc, *cmd[1:]] if cmd[0] == "dvc" else cmd
        elapsed, output = self._run(full, cwd)
        self.setup_seconds += elapsed
        return output

    def timed(self, phase: Phase, cwd: Path) -> str:
        """Run ``phase.command`` once (after ``os.sync()``), append its time, return its output."""
        if hasattr(os, "sync"):
            os.sync()
        cmd = [self.dvc, *phase.command[1:]] if phase.command[0] == "dvc" else phase.command
        elapsed, output = self._run(cmd, cwd)
        phase.seconds.append(elapsed)
        phase.output = _last_line(output)
        _log(f"{' '.join(phase.command)}: {elapsed:.3f} s ({phase.output})")
        return output

    # -- workspaces ---------------------------------------------------------------------------

    def new_workspace(self, name: str) -> Path:
        ws = self.root / name
        ws.mkdir()
        self.setup(["git", "init", "-q"], ws)
        self.setup(["dvc", "init", "-q"], ws)
        self.setup(["dvc", "config", "core.analytics", "false"], ws)
        self.setup(["dvc", "config", "core.check_update", "false"], ws)
        if self.args.cache_type:
            self.setup(["dvc", "config", "cache.type", self.args.cache_type], ws)
        self.setup(["git", "add", "-A"], ws)
        self.setup(["git", "commit", "-q", "-m", "dvc init"], ws)
        return ws

    def generate_many(self, ws: Path) -> Generated:
        start = time.perf_counter()
        made = make_small_files(ws / "data", self.args.count, self.args.seed)
        self.generate_seconds += time.perf_counter() - start
        return made

    def tracked_many(self, name: str = "ws") -> tuple[Path, Generated]:
        """A workspace whose ``data/`` (the small files) is added and committed (untimed)."""
        ws = self.new_workspace(name)
        made = self.generate_many(ws)
        _log(f"setup: dvc add data ({made.files} files)")
        self.setup(["dvc", "add", "-q", "data"], ws)
        self.setup(["git", "add", "data.dvc", ".gitignore"], ws)
        self.setup(["git", "commit", "-q", "-m", "track data"], ws)
        return ws, made

    def discard(self, path: Path) -> None:
        """Move ``path`` into ``D/trash`` (deleted by ``finish``), never delete it mid-run.

        On this machine's ext4 (mounted with ``discard``, on a virtual disk) creating 20,000
        files right after deleting 20,000 gets slower with every round (2 s, 7 s, 13 s for the
        same plain copy loop), while creating them next to a renamed-away tree stays at
        1.5-3.5 s; renaming keeps that file-system effect out of DVC's times.
        """
        if path.exists():
            self.trashed += 1
            trash = self.root / "trash"
            trash.mkdir(exist_ok=True)
            os.rename(path, trash / f"{self.trashed:03d}-{path.name}")

    def finish(self) -> None:
        if not self.args.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- results ------------------------------------------------------------------------------

    def result(self, benchmark: str, main: Phase, phases: dict[str, Phase], **extra: Any) -> dict:
        return {
            "tool": "dvc",
            "benchmark": benchmark,
            "dvc_version": _version("dvc"),
            "dvc_s3_version": _version("dvc-s3"),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "filesystem": _filesystem(self.root),
            "cache_type": self.args.cache_type or f"{DEFAULT_CACHE_TYPE} (default)",
            "repeat": len(main.seconds),
            "seconds": main.seconds,
            "median": _median(main.seconds),
            "phases": {name: phase.to_json() for name, phase in phases.items()},
            **extra,
            # Other work on the machine skews every time: load averages at start and end.
            "loadavg": {"start": self.loadavg_start, "end": _loadavg()},
            "setup_seconds": round(self.setup_seconds, 3),
            "generate_seconds": round(self.generate_seconds, 3),
        }


def _cache_objects(ws: Path) -> int:
    return count_files(ws / ".dvc" / "cache")[0]


def _check_files(ws: Path, made: Generated, what: str) -> None:
    files, size = count_files(ws / "data")
    if (files, size) != (made.files, made.bytes):
        raise RuntimeError(
            f"{what}: data/ holds {files} files / {size} bytes, expected {made.files} / {made.bytes}"
        )


def cmd_add_big(args: argparse.Namespace) -> dict[str, Any]:
    bench = Bench(args)
    size = args.size_mib * MIB
    phase = Phase(["dvc", "add", "big.bin"])
    for r in range(1, args.repeat + 1):
        ws = bench.new_workspace(f"ws-{r}")
        start = time.perf_counter()
        make_big_file(ws / "big.bin", size, args.seed)
        bench.generate_seconds += time.perf_counter() - start
        bench.timed(phase, ws)
        objects = _cache_objects(ws)
        if objects != 1 or not (ws / "big.bin.dvc").exists():
            raise RuntimeError(f"add_big: expected 1 cache object and big.bin.dvc, got {objects}")
        bench.discard(ws)
    bench.finish()
    return bench.result(
        "add_big",
        phase,
        {"add": phase},
        files=1,
        bytes=size,
        size_mib=args.size_mib,
        mib_per_second=args.size_mib / _median(phase.seconds),
        seed=args.seed,
    )


def cmd_add_many(args: argparse.Namespace) -> dict[str, Any]:
    bench = Bench(args)
    phase = Phase(["dvc", "add", "data"])
    made = None
    objects = 0
    for r in range(1, args.repeat + 1):
        ws = bench.new_workspace(f"ws-{r}")
        made = bench.generate_many(ws)
        bench.timed(phase, ws)
        objects = _cache_objects(ws)
        if objects != made.files + 1:  # every file plus the directory's .dir manifest
            raise RuntimeError(f"add_many: {objects} cache objects for {made.files} files")
        bench.discard(ws)
    bench.finish()
    assert made is not None
    return bench.result(
        "add_many",
        phase,
        {"add": phase},
        files=made.files,
        bytes=made.bytes,
        folders=made.folders,
        cache_objects=objects,
        files_per_second=made.files / _median(phase.seconds),
        seed=args.seed,
    )


def cmd_status(args: argparse.Namespace) -> dict[str, Any]:
    bench = Bench(args)
    ws, made = bench.tracked_many()
    status = Phase(["dvc", "status"])
    data_status = Phase(["dvc", "data", "status"])
    for _ in range(args.repeat):
        out = bench.timed(status, ws)
        if "up to date" not in out:
            raise RuntimeError(f"dvc status reports changes:\n{out}")
    for _ in range(args.repeat):
        out = bench.timed(data_status, ws)
        if "No changes" not in out:
            raise RuntimeError(f"dvc data status reports changes:\n{out}")
    # DVC's fixed cost for a repository command: the same `dvc status` with nothing tracked.
    empty = bench.new_workspace("empty")
    status_empty = Phase(["dvc", "status"])
    for _ in range(args.repeat):
        bench.timed(status_empty, empty)
    bench.finish()
    return bench.result(
        "status",
        status,
        {"status": status, "data_status": data_status, "status_empty_repo": status_empty},
        files=made.files,
        bytes=made.bytes,
        folders=made.folders,
        seed=args.seed,
    )


def cmd_checkout(args: argparse.Namespace) -> dict[str, Any]:
    bench = Bench(args)
    ws, made = bench.tracked_many()
    phase = Phase(["dvc", "checkout"])
    for _ in range(args.repeat):
        bench.discard(ws / "data")
        bench.timed(phase, ws)
        _check_files(ws, made, "checkout")
    bench.finish()
    return bench.result(
        "checkout",
        phase,
        {"checkout": phase},
        files=made.files,
        bytes=made.bytes,
        folders=made.folders,
        files_per_second=made.files / _median(phase.seconds),
        seed=args.seed,
    )


def _push_pull(
    args: argparse.Namespace, bench: Bench, remote_name: str, urls: list[str], configure: list[list[str]]
) -> dict[str, Any]:
    """The push / no-op push / pull / clone-like pull cycle, once per URL in ``urls``."""
    ws, made = bench.tracked_many()
    objects = _cache_objects(ws)
    phases = {
        "push": Phase(["dvc", "push"]),
        "push_noop": Phase(["dvc", "push"]),
        "pull_empty_cache": Phase(["dvc", "pull"]),
        "pull_empty_cache_and_workspace": Phase(["dvc", "pull"]),
    }
    for r, url in enumerate(urls):
        if r == 0:
            bench.setup(["dvc", "remote", "add", "-d", remote_name, url], ws)
            for cmd in configure:
                bench.setup(cmd, ws)
        else:
            bench.setup(["dvc", "remote", "modify", remote_name, "url", url], ws)
        _log(f"repeat {r + 1}/{len(urls)}: remote {url}")

        out = bench.timed(phases["push"], ws)
        pushed = _int_or_none(r"(\d+) files? pushed", out)
        phases["push"].counts.append(pushed)
        if pushed != objects:
            raise RuntimeError(f"first push sent {pushed} of {objects} objects (remote not empty?)")

        out = bench.timed(phases["push_noop"], ws)
        pushed = _int_or_none(r"(\d+) files? pushed", out) or 0
        phases["push_noop"].counts.append(pushed)
        if pushed or "up to date" not in out:
            raise RuntimeError(f"second push was not a no-op:\n{out}")

        bench.discard(ws / ".dvc" / "cache")
        out = bench.timed(phases["pull_empty_cache"], ws)
        phases["pull_empty_cache"].counts.append(_int_or_none(r"(\d+) files? fetched", out))
        if _cache_objects(ws) != objects:
            raise RuntimeError(f"pull restored {_cache_objects(ws)} of {objects} cache objects")
        _check_files(ws, made, "pull")

        bench.discard(ws / ".dvc" / "cache")
        bench.discard(ws / "data")
        out = bench.timed(phases["pull_empty_cache_and_workspace"], ws)
        phases["pull_empty_cache_and_workspace"].counts.append(_int_or_none(r"(\d+) files? fetched", out))
        _check_files(ws, made, "pull into an empty workspace")
    bench.finish()
    return {
        "main": phases["push"],
        "phases": phases,
        "extra": {
            "files": made.files,
            "bytes": made.bytes,
            "folders": made.folders,
            "cache_objects": objects,
            "remote_urls": urls,
            "seed": args.seed,
        },
    }


def cmd_push_pull_local(args: argparse.Namespace) -> dict[str, Any]:
    bench = Bench(args)
    urls = [str(bench.root / ("remote" if r == 1 else f"remote-{r}")) for r in range(1, args.repeat + 1)]
    out = _push_pull(args, bench, "local", urls, [])
    return bench.result("push_pull_local", out["main"], out["phases"], **out["extra"])


def cmd_push_pull_s3(args: argparse.Namespace) -> dict[str, Any]:
    bench = Bench(args)
    bench.env.update(
        {
            "AWS_ACCESS_KEY_ID": args.access_key,
            "AWS_SECRET_ACCESS_KEY": args.secret_key,
            "AWS_DEFAULT_REGION": args.region,
            "AWS_EC2_METADATA_DISABLED": "true",
            # No ~/.aws files: only the credentials above.
            "AWS_CONFIG_FILE": str(bench.root / "aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(bench.root / "aws-credentials"),
        }
    )
    bench.env.pop("AWS_PROFILE", None)
    bench.env.pop("AWS_SESSION_TOKEN", None)
    prefix = args.prefix.strip("/")
    urls = [f"s3://{args.bucket}/{prefix if r == 1 else f'{prefix}-{r}'}" for r in range(1, args.repeat + 1)]
    configure = [
        ["dvc", "remote", "modify", "s3", "endpointurl", args.endpoint],
        ["dvc", "remote", "modify", "s3", "region", args.region],
    ]
    out = _push_pull(args, bench, "s3", urls, configure)
    return bench.result("push_pull_s3", out["main"], out["phases"], endpoint=args.endpoint, **out["extra"])


def cmd_cli_version(args: argparse.Namespace) -> dict[str, Any]:
    bench = Bench(args)
    phase = Phase(["dvc", "--version"])
    for _ in range(args.repeat):
        bench.timed(phase, bench.root)
    bench.finish()
    return bench.result("cli_version", phase, {"version": phase})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="DVC peer of the molen data-versioning benchmark; prints one JSON object."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, repeat: int) -> None:
        p.add_argument("--dir", type=Path, required=True, help="fresh (absent or empty) folder")
        p.add_argument("--repeat", type=int, default=repeat)
        p.add_argument("--keep", action="store_true", help="keep --dir and the workspaces")
        p.add_argument("--dvc", help="dvc executable (default: the one next to this python)")
        p.add_argument(
            "--cache-type",
            help=f"set DVC's cache.type (e.g. hardlink, symlink); default DVC's {DEFAULT_CACHE_TYPE}",
        )

    def many(p: argparse.ArgumentParser) -> None:
        p.add_argument("--count", type=int, default=DEFAULT_SMALL_COUNT, help="small files")
        p.add_argument("--seed", type=int, default=DEFAULT_SMALL_SEED)

    p = sub.add_parser("add_big", help="time `dvc add big.bin` (fresh workspace per repeat)")
    common(p, 3)
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--seed", type=int, default=DEFAULT_BIG_SEED)
    p.set_defaults(func=cmd_add_big)

    p = sub.add_parser("add_many", help="time `dvc add data` of many small files")
    common(p, 3)
    many(p)
    p.set_defaults(func=cmd_add_many)

    p = sub.add_parser("status", help="time `dvc status` and `dvc data status`, nothing changed")
    common(p, 5)
    many(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("checkout", help="time `dvc checkout` of a deleted data/")
    common(p, 3)
    many(p)
    p.set_defaults(func=cmd_checkout)

    p = sub.add_parser("push_pull_local", help="push, no-op push and pulls with a local remote")
    common(p, 1)
    many(p)
    p.set_defaults(func=cmd_push_pull_local)

    p = sub.add_parser("push_pull_s3", help="push, no-op push and pulls with an S3 remote")
    common(p, 1)
    many(p)
    p.add_argument("--endpoint", required=True, help="S3 endpoint URL, e.g. http://127.0.0.1:PORT")
    p.add_argument("--bucket", required=True, help="existing bucket")
    p.add_argument("--prefix", default="dvc", help="key prefix of the remote (fresh per repeat)")
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--access-key", default=os.environ.get("AWS_ACCESS_KEY_ID", "testing"))
    p.add_argument("--secret-key", default=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"))
    p.set_defaults(func=cmd_push_pull_s3)

    p = sub.add_parser("cli_version", help="time `dvc --version` (start-up cost)")
    common(p, 5)
    p.set_defaults(func=cmd_cli_version)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("repeat", "count", "size_mib"):
        if getattr(args, name, 1) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be at least 1")
    result = args.func(args)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
