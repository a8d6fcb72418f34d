"""``molen repro --verify RUN``: rebuild a past pipeline run and check that it reproduces.

In a clean temporary checkout of the run's commit (a git worktree; the run's uncommitted
changes applied if it had any), with the params its ``molen.lock`` recorded and its data
versions checked out from the cache (fetched from the default remote when missing), every
stage is run again. The new outs must hash the same and the metrics must agree within a
relative tolerance; every difference is reported. This answers "can we rebuild last
quarter's model?". Models the rebuild logs are stored but not registered as new versions.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import NamedTuple

from molen.data.tracked import DataSession
from molen.errors import NotFoundError, UsageError
from molen.models.package import NO_REGISTER_ENV
from molen.pipeline.lock import LOCK_NAME, StageRecord, read_lock
from molen.pipeline.repro import Echo, RunOptions, repro

__all__ = ["Verification", "verify_run"]


class Verification(NamedTuple):
    """The outcome: the rebuilt run, and every way it differs from the original (none: it
    reproduced)."""

    run_id: str
    rebuilt_run_id: str | None
    differences: list[str]

    @property
    def reproduced(self) -> bool:
        return not self.differences


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        raise UsageError(
            f"git {args[0]} failed: {done.stderr.strip().splitlines()[-1] if done.stderr else 'error'}"
        )
    return done.stdout


def verify_run(
    session: DataSession, run_id: str, *, tolerance: float = 1e-9, echo: Echo | None = None
) -> Verification:
    """Rebuild pipeline run ``run_id`` from its commit, params and data versions and compare
    outs (exactly) and metrics (within the relative ``tolerance``)."""
    from molen.config import project_config
    from molen.pipeline.experiments import apply_params
    from molen.pipeline.spec import load_pipeline
    from molen.tracking.reading import get_run
    from molen.workspace import open_workspace

    record = get_run(run_id, workspace=session.workspace)
    artifacts = {artifact.path: artifact for artifact in record.artifacts}
    if LOCK_NAME not in artifacts:
        raise NotFoundError(f"run {record.id[:12]} has no {LOCK_NAME}: only pipeline runs can be verified")
    commit = record.tags.get("molen.git.commit")
    if not commit:
        raise UsageError(f"run {record.id[:12]} recorded no git commit, so it cannot be rebuilt from one")
    root = session.project.root
    folder = Path(tempfile.mkdtemp(prefix="molen-verify-"))
    tree = folder / "tree"
    _git(root, "worktree", "add", "--detach", "--quiet", str(tree), commit)
    try:
        if "molen/git.diff" in artifacts:  # the run had uncommitted changes: the same ones
            diff = folder / "changes.diff"
            diff.write_bytes(session.cache.get_bytes(artifacts["molen/git.diff"].digest))
            if diff.stat().st_size:
                _git(tree, "apply", "--whitespace=nowarn", str(diff))
        (tree / LOCK_NAME).write_bytes(session.cache.get_bytes(artifacts[LOCK_NAME].digest))
        recorded: dict[str, StageRecord] = read_lock(tree)
        apply_params(
            tree, {name: value for stage in recorded.values() for name, value in stage.params.items()}
        )
        settings = session.workspace.settings
        stores = {"tracking.uri": settings["tracking.uri"], "objects.url": settings["objects.url"]}
        rebuilt = DataSession(open_workspace(tree, flags=stores))
        _checkout_data(rebuilt)
        (tree / LOCK_NAME).unlink()  # every stage runs again, from nothing
        pipeline = load_pipeline(rebuilt.project, project_config(rebuilt.project))
        options = RunOptions(f"verify-{record.id[:8]}", None, "")
        os.environ[NO_REGISTER_ENV] = "1"  # a rebuild stores its models but registers none
        try:
            silent = echo or (lambda outcome: None)
            result = repro(rebuilt, pipeline, force=True, echo=silent, options=options)
        finally:
            del os.environ[NO_REGISTER_ENV]
        rebuilt.close()
        differences = [f"stage {o.name} failed: {o.error}" for o in result.failed]
        differences += _compare_outs(recorded, read_lock(tree))
        if result.run_id:
            again = get_run(result.run_id, workspace=session.workspace)
            differences += _compare_metrics(record.metrics, again.metrics, tolerance)
        return Verification(record.id, result.run_id, differences)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=root, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def _checkout_data(session: DataSession) -> None:
    """The data versions the checked-out pointers name, from the cache or the remote."""
    if not session.tracked():
        return
    try:
        session.checkout(force=True)
    except NotFoundError:
        from molen.data.transfer import pull

        pull(session, force=True)


def _compare_outs(recorded: dict[str, StageRecord], rebuilt: dict[str, StageRecord]) -> list[str]:
    found = []
    for name, stage in sorted(recorded.items()):
        again = rebuilt.get(name)
        for path, pointer in sorted(stage.outs.items()):
            now = again.outs.get(path) if again is not None else None
            if now is None:
                found.append(f"out {path} (stage {name}) was not rebuilt")
            elif now.hash != pointer.hash:
                found.append(
                    f"out {path} (stage {name}) differs: {pointer.hash[:12]} then, {now.hash[:12]} now"
                )
    return found


def _compare_metrics(before: dict[str, float], after: dict[str, float], tolerance: float) -> list[str]:
    found = []
    for key in sorted(before):
        if key not in after:
            found.append(f"metric {key} was not logged again")
        elif not math.isclose(before[key], after[key], rel_tol=tolerance, abs_tol=tolerance):
            found.append(f"metric {key} differs: {before[key]!r} then, {after[key]!r} now")
    return found
