"""Trials without an interpreter start each: a warm process per Ray worker that forks them.

A trial of a sweep on Ray (see :mod:`molen.compute.cluster`) is `molen data checkout` and then
`molen repro` in an unpacked working copy. As two fresh processes, each trial paid two
interpreter starts and molen's imports (SQLAlchemy, boto3, …): ~1.5 CPU-seconds, as much as a
small training. The trial still needs a process of its own: its environment and folder are its
own, it ends its run KILLED on SIGTERM (molen's exit handlers), and it must die with the worker
that started it.

So each Ray worker starts, once, a *zygote*: ``python -m molen.compute.zygote``, which imports
what a trial needs, says it is ready and then waits on its stdin. For each trial the worker
writes one JSON line (folder, targets, environment, log file); the zygote forks a child
(single-threaded, so forking is safe, unlike forking the Ray worker itself with its gRPC
threads), answers the child's pid, waits for it and answers its exit status. The child redirects its
output to the log file, takes the trial's environment and folder, and runs the same two commands
in-process (:func:`molen.cli.main`), so a trial records exactly what the commands record.

Lifetimes: the zygote gets SIGTERM when its worker dies, and each child when the zygote dies
(``PR_SET_PDEATHSIG``), so a killed worker takes its trial down before Ray retries the task
elsewhere. Ray may kill a dead worker's processes outright, before they can end their runs:
the driver ends such a run KILLED once the sweep's tasks are over. A cancelled task (Ctrl-C
on the driver) sends SIGTERM to its child and waits for it to end its run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

__all__ = ["Zygote", "die_with_parent", "run_trial", "start"]

#: how long a cancelled trial gets to end its run after SIGTERM
STOP_WAIT = 30.0


def die_with_parent() -> None:
    """Get SIGTERM when the parent process dies (Linux; elsewhere a no-op)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Zygote:
    """The worker's side: one zygote process, started on first use and again if it died."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[str] | None = None

    def _ready(self) -> subprocess.Popen[str]:
        if self.process is None or self.process.poll() is not None:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "molen.compute.zygote"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,
            )
            assert self.process.stdout is not None
            _answer(self.process.stdout)  # {"ready": true} once its imports are done
        return self.process

    def run(self, folder: Path, targets: list[str], env: dict[str, str]) -> tuple[int, str]:
        """Run the trial in ``folder`` with ``env`` added to this process's environment: its
        exit status (0: every stage ran) and what it printed. Interrupted (a cancelled task),
        it stops the trial with SIGTERM and waits for its run to end."""
        process = self._ready()
        assert process.stdin is not None and process.stdout is not None
        log = folder.parent / "trial.log"
        request = {"folder": str(folder), "targets": targets, "env": {**os.environ, **env}, "log": str(log)}
        process.stdin.write(json.dumps(request) + "\n")
        process.stdin.flush()
        started = _answer(process.stdout)
        pid = int(started["pid"])
        try:
            code = int(_answer(process.stdout)["status"])
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)  # the trial and its running stage
            self._await_stop(process, pid)
            raise
        return code, log.read_text(errors="replace") if log.exists() else ""

    def _await_stop(self, process: subprocess.Popen[str], pid: int) -> None:
        """After SIGTERM: the child's exit status line, or kill the zygote and the child."""
        import threading

        assert process.stdout is not None
        stream = process.stdout
        finished = threading.Event()

        def read() -> None:
            stream.readline()
            finished.set()

        threading.Thread(target=read, daemon=True).start()
        if not finished.wait(STOP_WAIT):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            process.kill()
            self.process = None


def _answer(stream: IO[str]) -> dict[str, Any]:
    line = stream.readline()
    if not line:
        raise RuntimeError("the trial's zygote process ended unexpectedly")
    answer: dict[str, Any] = json.loads(line)
    return answer


_ZYGOTE = Zygote()


def start() -> None:
    """Start this worker's zygote now and wait until it is ready (a warm-up before the trials
    arrive)."""
    _ZYGOTE._ready()


def run_trial(folder: Path, targets: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run one trial through this worker's zygote (see :meth:`Zygote.run`)."""
    return _ZYGOTE.run(folder, targets, env)


# -- the zygote process ---------------------------------------------------------------------------

#: imported once by the zygote, before any fork (what `molen data checkout` and `molen repro` use)
PRELOAD = (
    "molen.cli",
    "molen.cli.quick",
    "molen.cli.render",
    "molen.data.tracked",
    "molen.pipeline.experiments",
    "molen.pipeline.repro",
    "molen.pipeline.spec",
    "molen.tracking.runs",
    "molen.tracking.recorder",
    "molen.stores.metadata.sql",
    "molen.stores.objects.s3",
    "molen.envlock",
    "sqlalchemy.dialects.postgresql.psycopg",
    "psycopg",
    "boto3",
    "botocore.session",
    "s3transfer.manager",
    "yaml",
    "psutil",  # a run's system facts
    "encodings.idna",  # host names in URLs
    "resource",
    "pwd",
)


def _child(request: dict[str, Any]) -> int:
    """In the forked child: the trial, as `molen data checkout && molen repro TARGETS`."""
    from molen.cli import main
    from molen.pipeline.experiments import REPORT_ENV

    nothing = os.open(os.devnull, os.O_RDONLY)  # stdin is the zygote's requests: not the stages'
    os.dup2(nothing, 0)
    os.close(nothing)
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ[REPORT_ENV] = str(Path(request["folder"]) / ".molen-report.json")
    os.chdir(request["folder"])
    for command in (["data", "checkout"], ["repro", *request["targets"]]):
        sys.argv = ["molen", *command]  # what its run records as the command
        try:
            main(command)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if code != 0:
                return code
    return 0


#: the environment variables that choose the stores and their credentials
STORE_ENV = ("AWS_", "MOLEN_TRACKING_", "MOLEN_OBJECTS_")


def _open_stores(request: dict[str, Any], opened: dict[str, str]) -> None:
    """In the zygote, before forking: open the trial's object store (an S3 client costs ~0.1
    CPU-second to build) so that every child inherits it, and store there the list of
    installed packages that every trial's run attaches, once for all of them; and the metadata
    store. Their connections are closed before any fork, so none is shared with a child.
    Reopened when the credentials or stores change."""
    from molen import workspace
    from molen.config import load_settings

    env = request["env"]
    # what names the stores and their credentials (not a trial's own MOLEN_EXP_*, for instance)
    key = json.dumps(sorted((k, v) for k, v in env.items() if k.startswith(STORE_ENV)))
    if opened.get("key") == key:
        return
    saved, here = dict(os.environ), os.getcwd()
    workspace._object_stores.clear()
    opened["key"] = key
    try:
        os.environ.clear()
        os.environ.update(env)
        os.chdir(request["folder"])
        opened_workspace = workspace.Workspace(load_settings(request["folder"]))
        store = opened_workspace.objects
        client = getattr(store, "client", None)
        if client is not None:  # its listing's description, read here once (no request is sent)
            client.get_paginator("list_objects_v2")
        if opened_workspace.settings["tracking.capture_packages"]:
            from molen.tracking.capture import package_snapshot
            from molen.tracking.runs import store_object

            store_object(opened_workspace, package_snapshot())  # a child finds it stored
        if client is not None:
            client.close()  # its connections: a child opens its own
        elif hasattr(store, "close"):
            store.close()  # a molen server's: the connection of this thread, which a child would inherit
        # the runs' database too: its schema checked and its dialect set up here, once (~20
        # CPU-ms a trial); its pool emptied, so each child connects on its own
        engine = getattr(opened_workspace.metadata, "engine", None)
        if engine is not None:
            engine.dispose()
    except Exception:  # the child meets the same problem and reports it
        from molen.stores.metadata import close_metadata_stores

        workspace._object_stores.clear()
        close_metadata_stores()
    finally:
        os.chdir(here)
        os.environ.clear()
        os.environ.update(saved)


def _serve() -> None:  # pragma: no cover - runs as the zygote process (tested through Ray)
    import importlib

    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    with contextlib.suppress(Exception):  # S3's service description, read once for every trial
        from molen.stores.objects.s3 import warm

        warm()
    from molen.tracking.capture import package_snapshot

    package_snapshot()  # the installed packages, listed once for every trial's run
    import gc

    gc.freeze()  # the collector leaves what is loaded alone: a child copies fewer pages of it
    current: list[int] = []

    def stop(signum: int, frame: Any) -> None:
        """The worker died (or asked): take the running trial and its stages down too."""
        for pid in current:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    print(json.dumps({"ready": True}), flush=True)
    opened: dict[str, str] = {}
    for line in sys.stdin:
        request = json.loads(line)
        _open_stores(request, opened)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                die_with_parent()
                os.setpgid(0, 0)  # a group of its own: the trial and its stages stop together
                code = _child(request)
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                import atexit

                atexit._run_exitfuncs()  # a run still open ends here, as at any process's exit
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        current[:] = [pid]
        with contextlib.suppress(PermissionError, ProcessLookupError):
            os.setpgid(pid, pid)  # also from this side, so a kill right after the answer finds the group
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        current.clear()
        print(json.dumps({"status": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":  # pragma: no cover
    _serve()
