"""Recording runs: :func:`start_run` and the :class:`ActiveRun` it returns.

A run started while another is active becomes its child (nested runs). The active runs form
one stack per process; the module-level functions in :mod:`molen` act on its top.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import threading
import time
import uuid
from pathlib import Path, PurePosixPath
from types import FrameType, TracebackType
from typing import Any

from molen.entities import Artifact, DataInput, Metric, RunRecord, RunStatus
from molen.errors import ConflictError, InvalidNameError, InvalidValueError, NotFoundError, UsageError
from molen.tracking import capture
from molen.tracking.recorder import RunRecorder, flush_all
from molen.tracking.validation import (
    _valid_keys,
    check_key,
    check_metric_value,
    check_name,
    check_step,
    check_text_value,
)
from molen.workspace import Workspace, open_workspace

__all__ = ["ActiveRun", "active_run", "end_run", "require_active_run", "start_run"]

_stack: list[ActiveRun] = []
#: Runs whose end() could not be written (the store was down): ended again at exit.
_unended: list[ActiveRun] = []
_stack_lock = threading.RLock()
_stored_objects: set[tuple[str, str]] = set()  # (store url, digest) known to be stored


class ActiveRun:
    """A run being recorded. Use it as a context manager, or call :meth:`end`.

    Example::

        with molen.start_run(experiment="churn") as run:
            run.log_params({"max_depth": 8})
            run.log_metric("auc", 0.91)
    """

    def __init__(
        self,
        workspace: Workspace,
        *,
        run_id: str,
        name: str,
        experiment: str,
        parent_id: str | None,
        owned: bool = True,
    ) -> None:
        self.workspace = workspace
        self.id = run_id
        self.name = name
        self.experiment = experiment
        self.parent_id = parent_id
        self.status = RunStatus.RUNNING
        self._owned = owned
        self._params: dict[str, str] = {}
        settings = workspace.settings
        self._recorder = RunRecorder(
            workspace.metadata,
            run_id,
            flush_interval=float(settings["tracking.flush_interval"]),
            heartbeat_interval=float(settings["tracking.heartbeat_interval"]),
        )

    def __repr__(self) -> str:
        return f"<ActiveRun {self.id[:8]} {self.name!r} {self.status}>"

    # -- context manager ------------------------------------------------------------------------

    def __enter__(self) -> ActiveRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.end(_status_for(exc))  # an exception still propagates; the run says why it ended

    # -- params, tags, metrics ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.status != RunStatus.RUNNING:
            raise UsageError(f"run {self.id[:8]} has ended ({self.status}); start a new run to log more")

    def log_param(self, key: str, value: Any) -> None:
        """Record one hyperparameter. Params are immutable: logging another value is refused."""
        self.log_params({key: value})

    def log_params(self, params: dict[str, Any]) -> None:
        """Record several params (buffered like metrics; a changed value is refused at once)."""
        self._check_open()
        checked = {
            check_key(key, "param"): check_text_value(key, value, "param") for key, value in params.items()
        }
        for key, value in checked.items():
            held = self._params.get(key)
            if held is not None and held != value:
                raise ConflictError(
                    f"param {key!r} of run {self.id[:8]} is already {held!r}, cannot change it to "
                    f"{value!r}; params are immutable: start a new run, or use a tag"
                )
        self._params.update(checked)
        self._recorder.add_params(checked)

    def set_tag(self, key: str, value: Any) -> None:
        """Set a tag (a mutable label); setting it again replaces the value."""
        self.set_tags({key: value})

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Set several tags (buffered like metrics)."""
        self._check_open()
        checked = {check_key(key, "tag"): check_text_value(key, value, "tag") for key, value in tags.items()}
        self._recorder.add_tags(checked)

    def log_metric(
        self, key: str, value: float, step: int | None = None, timestamp: int | None = None
    ) -> None:
        """Record one value of a metric (buffered; written in batches in the background).

        ``step`` defaults to 0, ``timestamp`` (milliseconds since the epoch) to now.
        NaN and infinite values are stored as they are.
        """
        if self.status != RunStatus.RUNNING:
            self._check_open()
        if key not in _valid_keys:
            check_key(key, "metric")
        if type(value) is not float:
            value = check_metric_value(key, value)
        self._recorder.add(
            Metric(
                key,
                value,
                0 if step is None else check_step(key, step),
                int(time.time() * 1000) if timestamp is None else check_step(key, timestamp),
            )
        )

    def log_metrics(
        self, metrics: dict[str, float], step: int | None = None, timestamp: int | None = None
    ) -> None:
        """Record one value of each of several metrics, with a shared step and timestamp."""
        moment = int(time.time() * 1000) if timestamp is None else timestamp
        for key, value in metrics.items():
            self.log_metric(key, value, step, moment)

    def flush(self) -> None:
        """Write buffered metrics now (normally done in the background and at the end)."""
        self._recorder.flush()

    # -- artifacts and data ----------------------------------------------------------------------

    def _store_object(self, data: bytes) -> str:
        return store_object(self.workspace, data)

    def _attach(self, artifact_path: str, digest: str, size: int) -> Artifact:
        artifact = Artifact(_artifact_path(artifact_path), digest, size)
        self.workspace.metadata.add_artifact(self.id, artifact)
        return artifact

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> list[Artifact]:
        """Store a file (or every file of a folder) with the run; returns what was attached.

        ``artifact_path`` names it within the run (default: the file or folder name).
        """
        self._check_open()
        source = Path(path)
        base = artifact_path or source.name
        if source.is_file():
            digest = self.workspace.objects.put_file(source)
            return [self._attach(base, digest, source.stat().st_size)]
        if source.is_dir():
            attached = []
            for file in sorted(p for p in source.rglob("*") if p.is_file()):
                digest = self.workspace.objects.put_file(file)
                rel = f"{base}/{file.relative_to(source).as_posix()}"
                attached.append(self._attach(rel, digest, file.stat().st_size))
            return attached
        raise NotFoundError(f"cannot log artifact {source}: no such file or folder")

    def log_text(self, text: str, artifact_file: str) -> Artifact:
        """Store ``text`` as the artifact ``artifact_file``."""
        self._check_open()
        data = text.encode()
        return self._attach(artifact_file, self._store_object(data), len(data))

    def log_dict(self, dictionary: Any, artifact_file: str) -> Artifact:
        """Store a dict as JSON (or YAML when ``artifact_file`` ends in .yaml/.yml)."""
        if artifact_file.endswith((".yaml", ".yml")):
            import yaml

            text = yaml.safe_dump(dictionary, sort_keys=False)
        else:
            text = json.dumps(dictionary, indent=2, default=str)
        return self.log_text(text, artifact_file)

    def log_figure(self, figure: Any, artifact_file: str) -> Artifact:
        """Store a matplotlib figure as an image (format from the extension, e.g. .png, .svg)."""
        import io

        self._check_open()
        suffix = PurePosixPath(artifact_file).suffix.lstrip(".") or "png"
        buffer = io.BytesIO()
        try:
            figure.savefig(buffer, format=suffix, bbox_inches="tight")
        except AttributeError:
            raise InvalidValueError(
                f"log_figure takes a matplotlib Figure, not {type(figure).__name__}"
            ) from None
        data = buffer.getvalue()
        return self._attach(artifact_file, self._store_object(data), len(data))

    def log_input(self, data: Any, name: str | None = None, *, role: str = "input") -> DataInput:
        """Record the data version this run read: a path (file or folder) or a data frame.

        The content is hashed and stored in the object store, so the exact bytes can be
        fetched again. ``role`` is ``input`` (default) or ``output``.
        """
        from molen.data.versions import version_of_frame

        self._check_open()
        if role not in {"input", "output"}:
            raise InvalidValueError(f"role must be 'input' or 'output', not {role!r}")
        if isinstance(data, (str, os.PathLike)):
            version = _version_of_path(Path(data), self.workspace)
            label = name or _display_path(Path(data), self.workspace)
        else:
            version = version_of_frame(data, self.workspace.objects)
            label = name or "dataframe"
        record = DataInput(label, version.digest, role, version.kind, version.size, version.file_count)
        self.workspace.metadata.add_data_input(self.id, record)
        return record

    def record_data(self, path: str, version: Any, *, role: str = "input") -> DataInput:
        """Record a data version already known (a pointer: kind, hash, size, files) as read
        or written by this run, without hashing it again (what `molen repro` does)."""
        self._check_open()
        if role not in {"input", "output"}:
            raise InvalidValueError(f"role must be 'input' or 'output', not {role!r}")
        record = DataInput(path, version.hash, role, version.kind, version.size, version.files)
        self.workspace.metadata.add_data_input(self.id, record)
        return record

    def log_model(
        self,
        model: Any,
        name: str | None = None,
        *,
        reference: Any = None,
        y_reference: Any = None,
        signature: Any = None,
        input_example: Any = None,
        artifact_path: str = "model",
        description: str | None = None,
        serialization: str | None = None,
    ) -> Any:
        """Store ``model`` with its signature, input example, reference profile and model card;
        with ``name``, also register it as the next version of that model.

        ``reference`` is the training data (``X_train``): the signature is inferred from it
        and monitoring later compares live traffic with its profile. ``y_reference`` adds the
        target's distribution. Returns a :class:`~molen.models.package.LoggedModel`
        (``.uri`` names it for :func:`molen.load_model`).

        Example::

            run.log_model(pipeline, name="churn", reference=X_train, y_reference=y_train)
        """
        from molen.models.package import log_model

        self._check_open()
        return log_model(
            self,
            model,
            artifact_path=artifact_path,
            name=name,
            reference=reference,
            y_reference=y_reference,
            signature=signature,
            input_example=input_example,
            description=description,
            serialization=serialization,
        )

    # -- ending ------------------------------------------------------------------------------------

    def end(self, status: str = RunStatus.FINISHED) -> None:
        """Flush and record the final status (FINISHED, FAILED or KILLED)."""
        if status not in {RunStatus.FINISHED, RunStatus.FAILED, RunStatus.KILLED}:
            raise InvalidValueError(f"a run ends FINISHED, FAILED or KILLED, not {status!r}")
        if self.status != RunStatus.RUNNING:
            return
        try:
            self._recorder.close(end=(status, int(time.time() * 1000)) if self._owned else None)
        except BaseException:
            # nothing is lost: the values stay buffered and the run RUNNING; the flusher keeps
            # writing them, and end() again (or this process's exit) records the end
            with _stack_lock:
                if self in _stack:
                    _stack.remove(self)
                if self not in _unended:
                    _unended.append(self)
            raise
        self.status = status
        with _stack_lock:
            if self in _stack:
                _stack.remove(self)
            if self in _unended:
                _unended.remove(self)

    def record(self) -> RunRecord:
        """What the store holds for this run now (after flushing buffered metrics)."""
        if self.status == RunStatus.RUNNING:
            self.flush()
        return self.workspace.metadata.get_run(self.id)


def store_object(workspace: Workspace, data: bytes) -> str:
    """Store ``data`` in the workspace's object store, remembering what this process stored."""
    from molen.hashing import hash_bytes

    store = workspace.objects
    digest = hash_bytes(data)
    if (store.url, digest) not in _stored_objects:
        store.put_bytes(data)
        _stored_objects.add((store.url, digest))
    return digest


# -- starting runs ---------------------------------------------------------------------------------

_ADJECTIVES = [
    "amber",
    "brave",
    "calm",
    "clever",
    "dusty",
    "eager",
    "fair",
    "gentle",
    "golden",
    "hidden",
    "jolly",
    "keen",
    "lively",
    "lucky",
    "mellow",
    "nimble",
    "proud",
    "quiet",
    "rapid",
    "silver",
    "steady",
    "swift",
    "tidy",
    "vivid",
    "witty",
    "young",
    "zesty",
]
_NOUNS = [
    "otter",
    "heron",
    "maple",
    "falcon",
    "willow",
    "badger",
    "comet",
    "delta",
    "ember",
    "fjord",
    "grove",
    "harbor",
    "island",
    "lynx",
    "meadow",
    "nebula",
    "orchid",
    "pine",
    "quartz",
    "river",
    "sparrow",
    "tundra",
    "valley",
    "walrus",
    "yarrow",
    "zephyr",
]


def _generated_name() -> str:
    return f"{random.choice(_ADJECTIVES)}-{random.choice(_NOUNS)}-{random.randint(1, 99)}"


def _artifact_path(path: str) -> str:
    normal = PurePosixPath(path.replace("\\", "/"))
    if not path or normal.is_absolute() or ".." in normal.parts or "\0" in path:
        raise InvalidNameError(f"invalid artifact path {path!r}: use a relative path without '..' segments")
    return str(normal)


def _display_path(path: Path, workspace: Workspace) -> str:
    project = workspace.settings.project
    resolved = path.resolve()
    if project is not None and resolved.is_relative_to(project.root):
        return resolved.relative_to(project.root).as_posix()
    return str(resolved)


def _version_of_path(path: Path, workspace: Workspace) -> Any:
    """A path's data version: through the project's data session (state cache, the same hash
    as `molen data add`) when it is inside the project, else hashed directly."""
    from molen.data.versions import DataVersion, version_of_path

    project = workspace.settings.project
    if project is not None and path.resolve().is_relative_to(project.root) and path.exists():
        from molen.data.tracked import DataSession

        session = DataSession(workspace)
        try:
            pointer = session.snapshot(path)
        finally:
            session.close()
        return DataVersion(pointer.hash, pointer.kind, pointer.size, pointer.files)
    return version_of_path(path, workspace.objects)


def _status_for(exc: BaseException | None) -> str:
    if exc is None:
        return RunStatus.FINISHED
    if isinstance(exc, KeyboardInterrupt):
        return RunStatus.KILLED
    if isinstance(exc, SystemExit):
        return RunStatus.FINISHED if exc.code in (None, 0) else RunStatus.FAILED
    return RunStatus.FAILED


def _system_tags(workspace: Workspace) -> dict[str, str]:
    env = capture.environment()
    tags = {
        "molen.command": env.command[:8000],
        "molen.python": env.python,
        "molen.user": env.user,
        "molen.host": env.host,
    }
    project = workspace.settings.project
    code = capture.code_state(project.root if project is not None else None)
    if code is not None:
        tags["molen.git.commit"] = code.commit
        tags["molen.git.branch"] = code.branch
        tags["molen.git.dirty"] = "true" if code.dirty else "false"
        if code.diff_hash:
            tags["molen.git.diff_hash"] = code.diff_hash
    if project is not None:
        from molen.envlock import lock_hash

        locked = lock_hash(project.root)
        if locked is not None:
            tags["molen.env.lock"] = locked
    return tags


def _system_artifacts(workspace: Workspace) -> list[Artifact]:
    attached: list[Artifact] = []
    if workspace.settings["tracking.capture_packages"]:
        snapshot = capture.package_snapshot()
        attached.append(Artifact("molen/packages.txt", store_object(workspace, snapshot), len(snapshot)))
    project = workspace.settings.project
    code = capture.code_state(project.root if project is not None else None)
    if code is not None and code.diff:
        attached.append(Artifact("molen/git.diff", store_object(workspace, code.diff), len(code.diff)))
    elif code is not None and code.diff_object is not None:  # a trial's: stored by its sweep
        attached.append(Artifact("molen/git.diff", *code.diff_object))
    return attached


def code_env(workspace: Workspace) -> dict[str, str]:
    """The environment that tells a process running in a copy of the project without
    ``.git`` (a trial on a cluster) the git state of the code it runs
    (:data:`~molen.tracking.capture.CODE_ENV`); the diff is stored in the object store, so
    that process's runs attach it as :func:`start_run` attaches a local one."""
    project = workspace.settings.project
    code = capture.code_state(project.root if project is not None else None)
    if code is None:
        return {}
    digest = store_object(workspace, code.diff) if code.diff else None
    return {capture.CODE_ENV: capture.describe(code, digest)}


def start_run(
    experiment: str | None = None,
    name: str | None = None,
    tags: dict[str, Any] | None = None,
    *,
    workspace: Workspace | None = None,
    parent_id: str | None = None,
) -> ActiveRun:
    """Start recording a run and make it the active run.

    ``experiment`` defaults to the setting ``tracking.experiment``; ``name`` to a generated
    one. A run started while another is active becomes its child. Captures the git state,
    command line, Python, host, user and installed packages.

    Example: ``with molen.start_run(experiment="churn", tags={"team": "risk"}) as run: ...``
    """
    workspace = workspace or open_workspace()
    attached = _attach_to_pipeline_run(workspace)
    if attached is not None:
        return attached
    experiment_name = check_name(
        workspace.settings["tracking.experiment"] if experiment is None else experiment, "experiment"
    )
    run_name = check_name(name, "run") if name is not None else _generated_name()
    user_tags = {
        check_key(key, "tag"): check_text_value(key, value, "tag") for key, value in (tags or {}).items()
    }
    parent = active_run()
    parent_id = parent_id or (parent.id if parent is not None else None)
    store = workspace.metadata
    experiment_record = store.get_or_create_experiment(experiment_name)
    system = _system_tags(workspace)
    env = capture.environment()
    run_id = uuid.uuid4().hex
    store.create_run(
        run_id=run_id,
        experiment_id=experiment_record.id,
        name=run_name,
        start_time=int(time.time() * 1000),
        parent_id=parent_id,
        user=env.user,
        host=env.host,
        pid=env.pid,
        pid_started=env.pid_started,
        tags={**system, **user_tags},
        artifacts=_system_artifacts(workspace),
    )
    run = ActiveRun(
        workspace,
        run_id=run_id,
        name=run_name,
        experiment=experiment_name,
        parent_id=parent_id,
    )
    with _stack_lock:
        _stack.append(run)
    install_exit_handlers()
    return run


def _attach_to_pipeline_run(workspace: Workspace) -> ActiveRun | None:
    """Inside a `molen repro` stage (``MOLEN_RUN_ID`` set, no run active here yet): the
    pipeline's run, attached so that what the script logs lands in it; ending it here leaves
    the pipeline's run open."""
    run_id = os.environ.get("MOLEN_RUN_ID")
    if not run_id or active_run() is not None:
        return None
    record = workspace.metadata.get_run(run_id)
    if record.status != RunStatus.RUNNING:
        return None
    run = ActiveRun(
        workspace,
        run_id=record.id,
        name=record.name,
        experiment=record.experiment,
        parent_id=record.parent_id,
        owned=False,
    )
    with _stack_lock:
        _stack.append(run)
    install_exit_handlers()
    return run


def active_run() -> ActiveRun | None:
    """The innermost run started and not yet ended in this process, or ``None``."""
    with _stack_lock:
        return _stack[-1] if _stack else None


def require_active_run() -> ActiveRun:
    """The active run; :class:`UsageError` if there is none."""
    run = active_run()
    if run is None:
        raise UsageError("no active run: start one with `with molen.start_run(): ...`")
    return run


def end_run(status: str = RunStatus.FINISHED) -> None:
    """End the active run (if any) with ``status``."""
    run = active_run()
    if run is not None:
        run.end(status)


# -- process exit, SIGTERM and uncaught exceptions ------------------------------------------------

_handlers_installed = False


def _end_all(status: str) -> None:
    flush_all()
    with _stack_lock:
        open_runs = list(reversed(_stack)) + list(_unended)
    for run in open_runs:
        try:
            run.end(status)
        except Exception as exc:  # reported, never raised from an exit path
            print(f"molen: could not end run {run.id[:8]}: {exc}", file=sys.stderr)


#: how long SIGTERM waits for the runs to end before the process goes on to die
SIGTERM_WAIT = 5.0


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # The runs end from another thread, waited for a few seconds: the code the signal
    # interrupted may hold what ending them needs (a transaction that locked the run's row, a
    # lock of this module), and would never release it while this handler waits. Past the wait
    # the process dies anyway; its database connections close, which rolls back what they held,
    # and a run left RUNNING is shown dead by its pid (a sweep's driver ends it KILLED).
    ender = threading.Thread(target=_end_all, args=(RunStatus.KILLED,), name="molen-sigterm", daemon=True)
    ender.start()
    ender.join(SIGTERM_WAIT)
    if ender.is_alive():
        print(f"molen: the runs could not be ended within {SIGTERM_WAIT:.0f} s of SIGTERM", file=sys.stderr)
    previous = _previous_sigterm
    if callable(previous):
        previous(signum, frame)
        return
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _excepthook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    _end_all(_status_for(exc))
    _previous_excepthook(kind, exc, tb)


_previous_sigterm: Any = None
_previous_excepthook = sys.excepthook


_sigterm_installed = False


def install_exit_handlers() -> None:
    """End runs at exit, on an uncaught exception and on SIGTERM. A signal handler can only be
    set from the main thread: a run started in another thread (a pipeline's stage) gets it when
    the main thread calls this, which :func:`molen.pipeline.repro.repro` does before it starts."""
    global _handlers_installed, _previous_sigterm, _previous_excepthook, _sigterm_installed
    if not _handlers_installed:
        _handlers_installed = True
        import atexit

        atexit.register(_end_all, RunStatus.FINISHED)
        _previous_excepthook = sys.excepthook
        sys.excepthook = _excepthook
    if not _sigterm_installed and threading.current_thread() is threading.main_thread():
        _sigterm_installed = True
        try:
            _previous_sigterm = signal.getsignal(signal.SIGTERM)
            if _previous_sigterm is not signal.SIG_IGN:
                signal.signal(signal.SIGTERM, _on_sigterm)
        except (ValueError, OSError):  # not allowed here (embedded interpreter)
            _previous_sigterm = None
