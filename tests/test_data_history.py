"""Tracked data through git history: diff, log, gc, and the Python API reading old versions."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import molen
from molen.data.gc import collect_garbage
from molen.data.history import diff, log
from molen.data.pointer import read_pointer
from molen.data.tracked import DataSession
from molen.errors import NotFoundError, UsageError
from molen.project import init_project
from molen.workspace import open_workspace


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def session() -> DataSession:
    return DataSession(open_workspace())


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A git project whose data has two committed versions (tag v1, then HEAD)."""
    root = tmp_path / "repo"
    init_project(root)
    monkeypatch.chdir(root)
    git(root, "init", "-q")
    (root / "data").mkdir()
    (root / "data" / "a.txt").write_text("a1\n")
    (root / "data" / "b.txt").write_text("b1\n")
    (root / "labels.txt").write_text("cat\n")
    session().add(["data", "labels.txt"])
    git(root, "add", "-A")
    git(root, "commit", "-qm", "first data")
    git(root, "tag", "v1")
    (root / "data" / "b.txt").write_text("b2, longer\n")
    (root / "data" / "c.txt").write_text("c\n")
    (root / "data" / "a.txt").unlink()
    (root / "labels.txt").write_text("dog\n")
    session().add(["data", "labels.txt"])
    git(root, "add", "-A")
    git(root, "commit", "-qm", "second data")
    yield root


def test_diff_between_two_revisions_lists_files(repo: Path) -> None:
    changes = {(c.path, c.change): (c.old_size, c.new_size) for c in diff(session(), "v1", "HEAD")}
    assert changes == {
        ("data/a.txt", "deleted"): (3, None),
        ("data/b.txt", "modified"): (3, 11),
        ("data/c.txt", "added"): (None, 2),
        ("labels.txt", "modified"): (4, 4),
    }


def test_diff_against_the_workspace(repo: Path) -> None:
    assert diff(session()) == []  # HEAD and the workspace agree
    (repo / "data" / "d.txt").write_text("new\n")
    changes = diff(session())
    assert [(c.path, c.change, c.new_size) for c in changes] == [("data/d.txt", "added", 4)]


def test_diff_of_an_unknown_revision_is_a_clear_error(repo: Path) -> None:
    with pytest.raises(UsageError, match="git"):
        diff(session(), "no-such-rev")


def test_log_lists_versions_and_the_runs_that_used_them(repo: Path) -> None:
    with molen.start_run() as run:
        run.log_input("labels.txt")  # the workspace version = the HEAD version
    entries = log(session(), "labels.txt")
    assert [e.subject for e in entries] == ["second data", "first data"]
    assert entries[0].runs == [run.id] and entries[1].runs == []
    assert entries[0].pointer.hash == read_pointer(repo / "labels.txt.molen").hash
    with pytest.raises(NotFoundError, match="no history"):
        (repo / "new.txt").write_text("x")
        session().add(["new.txt"])
        log(session(), "new.txt")


def test_the_api_reads_any_revision(repo: Path) -> None:
    assert molen.data.read_text("labels.txt") == "dog\n"
    assert molen.data.read_text("labels.txt", rev="v1") == "cat\n"
    assert molen.data.read_bytes("data/b.txt", rev="v1") == b"b1\n"
    assert molen.data.read_text("data/c.txt") == "c\n"
    with molen.data.open("data/b.txt", mode="r") as handle:
        assert handle.read() == "b2, longer\n"
    assert molen.data.path("data/a.txt", rev="v1").read_text() == "a1\n"
    with pytest.raises(NotFoundError):
        molen.data.read_text("data/a.txt")  # deleted in HEAD
    with pytest.raises(NotFoundError, match="not tracked"):
        molen.data.read_text("untracked.txt")
    with pytest.raises(UsageError, match="reading only"):
        molen.data.open("labels.txt", mode="w")


def test_the_api_fetches_from_the_remote_when_the_cache_lacks_it(repo: Path, tmp_path: Path) -> None:
    from molen.data.remotes import add_remote
    from molen.data.transfer import push

    add_remote(open_workspace().settings.project, "origin", str(tmp_path / "remote"))  # type: ignore[arg-type]
    push(session())
    import shutil

    shutil.rmtree(repo / ".molen" / "cache")
    assert molen.data.read_text("data/c.txt") == "c\n"


def test_gc_keeps_what_is_referenced(repo: Path) -> None:
    cache = open_workspace().objects
    before = set(cache.digests())
    dry = collect_garbage(session(), dry_run=True)
    assert dry.removed > 0 and set(cache.digests()) == before  # a dry run removes nothing
    kept_all = collect_garbage(session(), all_commits=True)
    assert kept_all.removed == 0  # every version is still in some commit
    result = collect_garbage(session())
    assert result.removed == dry.removed
    assert molen.data.read_text("data/b.txt") == "b2, longer\n"  # HEAD's data survives
    with pytest.raises(NotFoundError):
        molen.data.read_text("labels.txt", rev="v1")  # only v1 needed it


def test_gc_keeps_what_runs_used(repo: Path) -> None:
    (repo / "scratch.csv").write_text("only a run used this\n")
    with molen.start_run() as run:
        data = run.log_input("scratch.csv")
    collect_garbage(session())
    assert open_workspace().objects.get_bytes(data.digest) == b"only a run used this\n"


def test_the_cli(repo: Path) -> None:
    def molen_cli(*args: str) -> subprocess.CompletedProcess[str]:
        import sys

        return subprocess.run(
            [sys.executable, "-m", "molen", *args], cwd=repo, capture_output=True, text=True
        )

    shown = molen_cli("data", "diff", "v1", "HEAD")
    assert shown.returncode == 0 and "data/c.txt" in shown.stdout and "added" in shown.stdout
    logged = molen_cli("data", "log", "labels.txt")
    assert "first data" in logged.stdout and "second data" in logged.stdout
    collected = molen_cli("data", "gc", "--dry-run")
    assert collected.returncode == 0 and "would remove" in collected.stdout
