"""molen side of the data-versioning benchmark: the counterpart of ``dvc_data_peer.py``.

Same subcommands, phases, workspace handling and JSON output as the DVC peer (read its
docstring), but timing molen's command line, ``<venv>/bin/molen ...``, as fresh subprocesses,
so each time includes molen's start-up (see ``cli_version``). Run it with molen's python
(``<repo>/.venv/bin/python``); it imports only the standard library, ``datasets.py`` and the
peer's helpers (never molen itself). Every subcommand prints exactly one JSON object on stdout;
progress goes to stderr.

``--dir D`` is the benchmark's own folder: it must be absent or empty, and is removed at the end
unless ``--keep``. Inside it: the workspace(s) ``ws`` (``ws-1``, ``ws-2``, ... where every
repeat needs a fresh one) and the local remote ``remote``. Nothing is deleted while measuring:
a finished workspace, a ``data/`` or ``.molen/cache`` to be restored is renamed into
``D/trash`` (see ``Bench.discard`` of the peer for why), and all of it goes at the end. Every
workspace is ``git init`` + ``molen init .`` + one commit, with a fixed git identity in the
environment. molen's default link strategy is ``reflink,copy`` (the same as DVC's cache
type): on ext4 that means copies. ``os.sync()`` runs before every timed command.

molen's processes run with no ``MOLEN_*`` variables (only ``--link`` sets
``MOLEN_DATA_LINK``), without ``PYTHONDONTWRITEBYTECODE`` and with
``PYTHONPYCACHEPREFIX=<repo>/.bench/pycache``: molen is an editable install, so without a
bytecode cache every process would compile molen from source, which no installed copy does
(see ``molen_env`` in ``bench_tracking.py``). Fill that cache first with the untimed
``warm_up`` subcommand (``bench_data.py`` does).

What is measured (medians of ``--repeat`` runs; data from ``datasets.py``):

``add_big --size-mib 1024``
    ``molen data add big.bin`` of one random file, a fresh workspace per repeat.
``add_many --count 20000``
    ``molen data add data`` of ``make_small_files``, a fresh workspace per repeat.
``status --count 20000``
    After ``molen data add data`` and a git commit of ``data.molen``: ``molen data status``
    with nothing changed (``--repeat`` times, default 5), and the same in a project tracking
    nothing (molen's fixed cost per data command).
``checkout --count 20000``
    After ``molen data add data``: move ``data/`` away (untimed), time ``molen data checkout``.
``push_pull_local --count 20000`` / ``push_pull_s3 --endpoint URL --bucket B``
    After ``molen data add data``, per repeat: ``molen data push`` to a fresh remote
    (``molen remote add origin D/remote``, ``D/remote-2``, ...; or ``s3://B/<prefix>``, ...
    with ``--endpoint-url URL`` and credentials from ``AWS_ACCESS_KEY_ID``/
    ``AWS_SECRET_ACCESS_KEY``, default ``testing``), a second ``molen data push`` with nothing
    to send, ``molen data fetch`` after moving ``.molen/cache`` away (workspace intact: a pure
    fetch; DVC runs ``dvc pull`` there) and ``molen data pull`` after moving ``.molen/cache`` and
    ``data/`` away (like a fresh clone: fetch + checkout). The counts molen prints are checked.
``cli_version``
    ``molen --version`` as a fresh process.
``warm_up [--endpoint URL --bucket B]``
    Untimed: a tiny add / status / push / fetch / pull / checkout cycle (and S3 if given), so
    that molen's bytecode cache and the page cache are warm before anything is measured.

Each result has ``tool``, ``molen_version``, ``benchmark``, ``seconds`` (list) and ``median``
of the main phase, ``phases`` (every timed command with its samples and molen's last output
line; also ``cpu_seconds``, the user + system time of molen's process), file counts and
bytes, and the machine facts that matter (cores, file system, link).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from datasets import (  # noqa: E402
    DEFAULT_BIG_SEED,
    DEFAULT_SMALL_COUNT,
    DEFAULT_SMALL_SEED,
    MIB,
    Generated,
    count_files,
    make_big_file,
    make_small_files,
)
from dvc_data_peer import (  # noqa: E402  (standard-library helpers shared with the peer)
    GIT_ENV,
    TIMEOUT,
    _filesystem,
    _last_line,
    _loadavg,
    _median,
)
from dvc_data_peer import Phase as _PeerPhase  # noqa: E402

DEFAULT_LINK = "reflink,copy"  # molen's own default for data.link
PYCACHE = REPO_ROOT / ".bench" / "pycache"


@dataclass
class Phase(_PeerPhase):
    """The peer's timed command, plus the CPU time (user + system) molen's process used."""

    cpu_seconds: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        data["cpu_seconds"] = [round(x, 3) for x in self.cpu_seconds]
        return data


def _log(message: str) -> None:
    print(f"[molen-side] {message}", file=sys.stderr, flush=True)


def _molen_exe(args: argparse.Namespace) -> Path:
    if args.molen:
        return Path(args.molen)
    exe = Path(sys.executable).parent / ("molen.exe" if os.name == "nt" else "molen")
    if not exe.exists():
        raise SystemExit(f"no molen next to {sys.executable}: run this with molen's python or pass --molen")
    return exe


def _molen_version() -> str | None:
    try:
        return importlib.metadata.version("molen")
    except importlib.metadata.PackageNotFoundError:
        return None


def _molen_source() -> dict[str, Any]:
    """The git commit of molen's checkout and whether src/ differs from it (work in progress)."""

    def git(*words: str) -> str:
        result = subprocess.run(
            ["git", *words], cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=60
        )
        return result.stdout.strip() if result.returncode == 0 else ""

    changed = [line for line in git("status", "--porcelain", "--", "src").splitlines() if line]
    return {"commit": git("rev-parse", "--short", "HEAD") or None, "src_changed_files": len(changed)}


def _count(pattern: str, text: str) -> int | None:
    """The first number (with thousands commas) captured by ``pattern`` in ``text``."""
    match = re.search(pattern, text)
    return int(match.group(1).replace(",", "")) if match else None


def molen_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """molen's environment: no MOLEN_* settings, bytecode cached in .bench/pycache."""
    env = dict(os.environ if base is None else base)
    for key in [k for k in env if k.startswith("MOLEN_")]:
        del env[key]
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    return env


class Bench:
    """The benchmark folder ``--dir``: environment, workspaces and the molen/git runners."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.molen = str(_molen_exe(args))
        self.root: Path = args.dir.resolve()
        if self.root.exists() and any(self.root.iterdir()):
            raise SystemExit(f"--dir {self.root} is not empty: use a fresh folder")
        self.root.mkdir(parents=True, exist_ok=True)
        self.env = molen_env()
        self.env.update(GIT_ENV)
        if args.link:
            self.env["MOLEN_DATA_LINK"] = args.link
        self.setup_seconds = 0.0
        self.generate_seconds = 0.0
        self.trashed = 0
        self.last_cpu = 0.0
        self.loadavg_start = _loadavg()

    # -- running commands -------------------------------------------------------------------

    def _run(self, cmd: list[str], cwd: Path) -> tuple[float, str]:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        result = subprocess.run(
            cmd, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
        elapsed = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.last_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if result.returncode != 0:
            sys.stderr.write(result.stdout + result.stderr)
            raise RuntimeError(
                f"{' '.join(cmd)} (in {cwd}) exited with {result.returncode}: "
                f"{_last_line(result.stderr) or _last_line(result.stdout)}"
            )
        return elapsed, result.stdout + result.stderr

    def _full(self, cmd: list[str]) -> list[str]:
        return [self.molen, *cmd[1:]] if cmd[0] == "molen" else cmd

    def setup(self, cmd: list[str], cwd: Path) -> str:
        """Run an untimed setup command (``molen`` as the first word means molen's executable)."""
        elapsed, output = self._run(self._full(cmd), cwd)
        self.setup_seconds += elapsed
        return output

    def timed(self, phase: Phase, cwd: Path) -> str:
        """Run ``phase.command`` once (after ``os.sync()``), append its time, return its output."""
        if hasattr(os, "sync"):
            os.sync()
        elapsed, output = self._run(self._full(phase.command), cwd)
        phase.seconds.append(elapsed)
        if isinstance(phase, Phase):
            phase.cpu_seconds.append(self.last_cpu)
        phase.output = _last_line(output)
        _log(f"{' '.join(phase.command)}: {elapsed:.3f} s, CPU {self.last_cpu:.3f} s ({phase.output})")
        return output

    # -- workspaces ---------------------------------------------------------------------------

    def new_workspace(self, name: str) -> Path:
        ws = self.root / name
        ws.mkdir()
        self.setup(["git", "init", "-q"], ws)
        self.setup(["molen", "init", "."], ws)
        self.setup(["git", "add", "-A"], ws)
        self.setup(["git", "commit", "-q", "-m", "molen init"], ws)
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
        _log(f"setup: molen data add data ({made.files} files)")
        self.setup(["molen", "data", "add", "data"], ws)
        self.setup(["git", "add", "data.molen", ".gitignore"], ws)
        self.setup(["git", "commit", "-q", "-m", "track data"], ws)
        return ws, made

    def discard(self, path: Path) -> None:
        """Move ``path`` into ``D/trash`` (deleted by ``finish``), never delete it mid-run
        (the peer's ``Bench.discard`` explains the ext4 + discard effect this avoids)."""
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
            "tool": "molen",
            "benchmark": benchmark,
            "molen_version": _molen_version(),
            "molen_source": _molen_source(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "filesystem": _filesystem(self.root),
            "link": self.args.link or f"{DEFAULT_LINK} (default)",
            "repeat": len(main.seconds),
            "seconds": main.seconds,
            "median": _median(main.seconds),
            "phases": {name: phase.to_json() for name, phase in phases.items()},
            **extra,
            "loadavg": {"start": self.loadavg_start, "end": _loadavg()},
            "setup_seconds": round(self.setup_seconds, 3),
            "generate_seconds": round(self.generate_seconds, 3),
        }


def _cache_objects(ws: Path) -> int:
    """Objects in the cache, loose (``.molen/cache/ab/cdef…``) or packed (``packs/``), as the
    store itself lists them (untimed)."""
    from molen.stores.objects.local import LocalObjectStore

    cache = ws / ".molen" / "cache"
    if not cache.is_dir():
        return 0
    return sum(1 for _ in LocalObjectStore(cache).digests())


def _check_files(ws: Path, made: Generated, what: str) -> None:
    files, size = count_files(ws / "data")
    if (files, size) != (made.files, made.bytes):
        raise RuntimeError(
            f"{what}: data/ holds {files} files / {size} bytes, expected {made.files} / {made.bytes}"
        )


def _jobs(args: argparse.Namespace) -> list[str]:
    return ["-j", str(args.jobs)] if getattr(args, "jobs", None) else []


def cmd_add_big(args: argparse.Namespace) -> dict[str, Any]:
    bench = Bench(args)
    size = args.size_mib * MIB
    phase = Phase(["molen", "data", "add", "big.bin"])
    for r in range(1, args.repeat + 1):
        ws = bench.new_workspace(f"ws-{r}")
        start = time.perf_counter()
        make_big_file(ws / "big.bin", size, args.seed)
        bench.generate_seconds += time.perf_counter() - start
        bench.timed(phase, ws)
        objects = _cache_objects(ws)
        if objects != 1 or not (ws / "big.bin.molen").exists():
            raise RuntimeError(f"add_big: expected 1 cache object and big.bin.molen, got {objects}")
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
    phase = Phase(["molen", "data", "add", "data"])
    made = None
    objects = 0
    for r in range(1, args.repeat + 1):
        ws = bench.new_workspace(f"ws-{r}")
        made = bench.generate_many(ws)
        bench.timed(phase, ws)
        objects = _cache_objects(ws)
        if objects != made.files + 1:  # every file plus the folder's manifest
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
    status = Phase(["molen", "data", "status"])
    for _ in range(args.repeat):
        out = bench.timed(status, ws)
        if "unchanged" not in out or re.search(r"modified|deleted|not-in-cache", out):
            raise RuntimeError(f"molen data status reports changes:\n{out}")
    # molen's fixed cost for a data command: the same status with nothing tracked.
    empty = bench.new_workspace("empty")
    status_empty = Phase(["molen", "data", "status"])
    for _ in range(args.repeat):
        out = bench.timed(status_empty, empty)
        if "nothing is tracked" not in out:
            raise RuntimeError(f"molen data status in an empty project:\n{out}")
    bench.finish()
    return bench.result(
        "status",
        status,
        {"status": status, "status_empty_repo": status_empty},
        files=made.files,
        bytes=made.bytes,
        folders=made.folders,
        seed=args.seed,
    )


def cmd_checkout(args: argparse.Namespace) -> dict[str, Any]:
    bench = Bench(args)
    ws, made = bench.tracked_many()
    phase = Phase(["molen", "data", "checkout"])
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
    args: argparse.Namespace, bench: Bench, urls: list[str], remote_options: list[str]
) -> dict[str, Any]:
    """The push / no-op push / fetch / clone-like pull cycle, once per URL in ``urls``."""
    ws, made = bench.tracked_many()
    objects = _cache_objects(ws)
    jobs = _jobs(args)
    phases = {
        "push": Phase(["molen", "data", "push", *jobs]),
        "push_noop": Phase(["molen", "data", "push", *jobs]),
        "pull_empty_cache": Phase(["molen", "data", "fetch", *jobs]),
        "pull_empty_cache_and_workspace": Phase(["molen", "data", "pull", *jobs]),
    }
    for r, url in enumerate(urls):
        if r > 0:
            bench.setup(["molen", "remote", "remove", "origin"], ws)
        bench.setup(["molen", "remote", "add", "origin", url, *remote_options], ws)
        _log(f"repeat {r + 1}/{len(urls)}: remote {url}")

        out = bench.timed(phases["push"], ws)
        pushed = _count(r"pushed ([\d,]+) object", out)
        phases["push"].counts.append(pushed)
        if pushed != objects:
            raise RuntimeError(f"first push sent {pushed} of {objects} objects (remote not empty?)\n{out}")

        out = bench.timed(phases["push_noop"], ws)
        pushed = _count(r"pushed ([\d,]+) object", out)
        phases["push_noop"].counts.append(pushed)
        if pushed != 0:
            raise RuntimeError(f"second push was not a no-op:\n{out}")

        bench.discard(ws / ".molen" / "cache")
        out = bench.timed(phases["pull_empty_cache"], ws)
        phases["pull_empty_cache"].counts.append(_count(r"fetched ([\d,]+) object", out))
        if _cache_objects(ws) != objects:
            raise RuntimeError(f"fetch restored {_cache_objects(ws)} of {objects} cache objects")
        _check_files(ws, made, "fetch")

        bench.discard(ws / ".molen" / "cache")
        bench.discard(ws / "data")
        out = bench.timed(phases["pull_empty_cache_and_workspace"], ws)
        phases["pull_empty_cache_and_workspace"].counts.append(_count(r"fetched ([\d,]+) object", out))
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


def _s3_env(bench: Bench, args: argparse.Namespace) -> None:
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


def cmd_push_pull_local(args: argparse.Namespace) -> dict[str, Any]:
    bench = Bench(args)
    urls = [str(bench.root / ("remote" if r == 1 else f"remote-{r}")) for r in range(1, args.repeat + 1)]
    out = _push_pull(args, bench, urls, [])
    return bench.result("push_pull_local", out["main"], out["phases"], **out["extra"])


def cmd_push_pull_s3(args: argparse.Namespace) -> dict[str, Any]:
    bench = Bench(args)
    _s3_env(bench, args)
    prefix = args.prefix.strip("/")
    urls = [f"s3://{args.bucket}/{prefix if r == 1 else f'{prefix}-{r}'}" for r in range(1, args.repeat + 1)]
    out = _push_pull(args, bench, urls, ["--endpoint-url", args.endpoint])
    return bench.result("push_pull_s3", out["main"], out["phases"], endpoint=args.endpoint, **out["extra"])


def cmd_cli_version(args: argparse.Namespace) -> dict[str, Any]:
    bench = Bench(args)
    phase = Phase(["molen", "--version"])
    for _ in range(args.repeat):
        bench.timed(phase, bench.root)
    bench.finish()
    return bench.result("cli_version", phase, {"version": phase})


def cmd_warm_up(args: argparse.Namespace) -> dict[str, Any]:
    """Untimed: every command of the benchmark once on a few files (bytecode and page cache)."""
    bench = Bench(args)
    start = time.perf_counter()
    bench.setup(["molen", "--version"], bench.root)
    ws, made = bench.tracked_many()
    make_big_file(ws / "big.bin", 8 * MIB, args.seed)  # above SMALL: the large-file path
    bench.setup(["molen", "data", "add", "big.bin"], ws)
    bench.setup(["molen", "data", "status"], ws)
    remotes = [(str(bench.root / "remote"), [])]
    if args.endpoint:
        _s3_env(bench, args)
        remotes.append((f"s3://{args.bucket}/{args.prefix.strip('/')}", ["--endpoint-url", args.endpoint]))
    for r, (url, options) in enumerate(remotes):
        if r > 0:
            bench.setup(["molen", "remote", "remove", "origin"], ws)
        bench.setup(["molen", "remote", "add", "origin", url, *options], ws)
        bench.setup(["molen", "data", "push"], ws)
        bench.setup(["molen", "data", "push"], ws)
        bench.discard(ws / ".molen" / "cache")
        bench.setup(["molen", "data", "fetch"], ws)
        bench.discard(ws / ".molen" / "cache")
        bench.discard(ws / "data")
        bench.setup(["molen", "data", "pull"], ws)
        _check_files(ws, made, "warm-up pull")
    bench.discard(ws / "data")
    bench.setup(["molen", "data", "checkout"], ws)
    _check_files(ws, made, "warm-up checkout")
    bench.finish()
    return {
        "tool": "molen",
        "benchmark": "warm_up",
        "molen_version": _molen_version(),
        "files": made.files,
        "s3": bool(args.endpoint),
        "seconds": round(time.perf_counter() - start, 3),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="molen side of the data-versioning benchmark; prints one JSON object."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, repeat: int) -> None:
        p.add_argument("--dir", type=Path, required=True, help="fresh (absent or empty) folder")
        p.add_argument("--repeat", type=int, default=repeat)
        p.add_argument("--keep", action="store_true", help="keep --dir and the workspaces")
        p.add_argument("--molen", help="molen executable (default: the one next to this python)")
        p.add_argument(
            "--link",
            help=f"set data.link (MOLEN_DATA_LINK, e.g. hardlink); default molen's {DEFAULT_LINK}",
        )

    def many(p: argparse.ArgumentParser) -> None:
        p.add_argument("--count", type=int, default=DEFAULT_SMALL_COUNT, help="small files")
        p.add_argument("--seed", type=int, default=DEFAULT_SMALL_SEED)

    def transfers(p: argparse.ArgumentParser) -> None:
        p.add_argument("--jobs", "-j", type=int, help="molen data push/fetch/pull -j (default: data.jobs)")

    def s3(p: argparse.ArgumentParser, required: bool) -> None:
        p.add_argument("--endpoint", required=required, help="S3 endpoint URL, e.g. http://127.0.0.1:PORT")
        p.add_argument("--bucket", required=required, help="existing bucket")
        p.add_argument("--prefix", default="molen", help="key prefix of the remote (fresh per repeat)")
        p.add_argument("--region", default="us-east-1")
        p.add_argument("--access-key", default=os.environ.get("AWS_ACCESS_KEY_ID", "testing"))
        p.add_argument("--secret-key", default=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"))

    p = sub.add_parser("add_big", help="time `molen data add big.bin` (fresh workspace per repeat)")
    common(p, 3)
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--seed", type=int, default=DEFAULT_BIG_SEED)
    p.set_defaults(func=cmd_add_big)

    p = sub.add_parser("add_many", help="time `molen data add data` of many small files")
    common(p, 3)
    many(p)
    p.set_defaults(func=cmd_add_many)

    p = sub.add_parser("status", help="time `molen data status`, nothing changed")
    common(p, 5)
    many(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("checkout", help="time `molen data checkout` of a deleted data/")
    common(p, 3)
    many(p)
    p.set_defaults(func=cmd_checkout)

    p = sub.add_parser("push_pull_local", help="push, no-op push, fetch and pull with a local remote")
    common(p, 1)
    many(p)
    transfers(p)
    p.set_defaults(func=cmd_push_pull_local)

    p = sub.add_parser("push_pull_s3", help="push, no-op push, fetch and pull with an S3 remote")
    common(p, 1)
    many(p)
    transfers(p)
    s3(p, required=True)
    p.set_defaults(func=cmd_push_pull_s3)

    p = sub.add_parser("cli_version", help="time `molen --version` (start-up cost)")
    common(p, 5)
    p.set_defaults(func=cmd_cli_version)

    p = sub.add_parser("warm_up", help="untimed: every command once on a few files")
    common(p, 1)
    p.add_argument("--count", type=int, default=50, help="small files")
    p.add_argument("--seed", type=int, default=DEFAULT_SMALL_SEED)
    s3(p, required=False)
    p.set_defaults(func=cmd_warm_up)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("repeat", "count", "size_mib"):
        if getattr(args, name, 1) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be at least 1")
    if bool(getattr(args, "endpoint", None)) != bool(getattr(args, "bucket", None)):
        raise SystemExit("--endpoint and --bucket go together")
    result = args.func(args)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
