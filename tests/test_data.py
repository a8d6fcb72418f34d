"""Data versioning: molen data add/status/checkout/push/pull and remotes, as a user runs them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from molen.data.manifest import Manifest, ManifestEntry
from molen.data.pointer import read_pointer
from molen.data.remotes import add_remote, list_remotes, remove_remote, set_default_remote
from molen.data.tracked import DataSession
from molen.data.transfer import fetch, pull, push
from molen.errors import (
    ConflictError,
    CorruptObjectError,
    InvalidNameError,
    InvalidValueError,
    NotFoundError,
    UsageError,
)
from molen.hashing import hash_bytes
from molen.project import Project, init_project
from molen.workspace import open_workspace

MOLEN = [sys.executable, "-m", "molen"]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    root = tmp_path / "proj"
    project = init_project(root)
    monkeypatch.chdir(root)
    (root / "raw.csv").write_text("a,b\n1,2\n")
    data = root / "data"
    (data / "sub").mkdir(parents=True)
    for index in range(30):
        (data / "sub" / f"part-{index}.csv").write_text(f"x\n{index}\n")
    (data / "readme.txt").write_text("the data\n")
    yield project


def session() -> DataSession:
    return DataSession(open_workspace())


def corrupt(store_root: Path, digest: str, data: bytes = b"rotten") -> None:
    """Damage object ``digest`` in the store folder ``store_root``, loose or packed."""
    from molen.stores.objects.local import LocalObjectStore

    store = LocalObjectStore(store_root)
    location = store.packed().get(digest)
    if location is None:
        loose = store.path_of(digest)
        os.chmod(loose, 0o644)
        loose.write_bytes(data)
        return
    name, offset, length = location
    pack = store_root / "packs" / f"{name}.pack"
    os.chmod(pack, 0o644)
    with open(pack, "r+b") as handle:
        handle.seek(offset)
        flipped = bytes(b ^ 0xFF for b in handle.read(length))
        handle.seek(offset)
        handle.write(flipped)


def molen(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MOLEN, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_add_writes_pointers_ignores_the_data_and_stores_it(project: Project) -> None:
    added = session().add(["raw.csv", "data"])
    assert [a.path for a in added] == ["raw.csv", "data"]
    raw = read_pointer(project.root / "raw.csv.molen")
    assert raw.kind == "file" and raw.hash == hash_bytes(b"a,b\n1,2\n") and raw.size == 8 and raw.files == 1
    folder = read_pointer(project.root / "data.molen")
    assert folder.kind == "directory" and folder.files == 31
    assert (project.root / ".gitignore").read_text().splitlines() == ["/raw.csv", "/data"]
    cache = open_workspace().objects
    assert cache.get_bytes(raw.hash) == b"a,b\n1,2\n"
    assert b"part-7.csv" in cache.get_bytes(folder.hash)  # the manifest is an object too
    session().add(["raw.csv"])  # adding again changes nothing
    assert (project.root / ".gitignore").read_text().splitlines() == ["/raw.csv", "/data"]


@pytest.mark.parametrize("find", [True, False], ids=["gnu-find", "python-scan"])
def test_status_tells_what_changed(project: Project, monkeypatch: pytest.MonkeyPatch, find: bool) -> None:
    import molen.data.tracked as tracked

    monkeypatch.setattr(tracked, "_find_works", find)
    session().add(["raw.csv", "data"])
    assert {s.path: s.state for s in session().status()} == {"raw.csv": "unchanged", "data": "unchanged"}
    (project.root / "raw.csv").write_text("changed\n")
    (project.root / "data" / "sub" / "part-3.csv").write_text("edited\n")
    (project.root / "data" / "new.csv").write_text("new\n")
    (project.root / "data" / "readme.txt").unlink()
    found = {s.path: s for s in session().status()}
    assert found["raw.csv"].state == "modified"
    assert found["data"].state == "modified"
    assert found["data"].added == ["new.csv"]
    assert found["data"].removed == ["readme.txt"]
    assert found["data"].modified == ["sub/part-3.csv"]
    (project.root / "raw.csv").unlink()
    assert {s.path: s.state for s in session().status(["raw.csv"])} == {"raw.csv": "deleted"}


def test_status_does_not_rehash_unchanged_files(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    session().add(["data"])
    calls: list[object] = []
    import molen.data.tracked as tracked

    monkeypatch.setattr(tracked, "hash_file", lambda path: calls.append(path) or "0" * 64)
    assert session().status()[0].state == "unchanged"
    assert calls == []  # the state cache answered for all 31 files


@pytest.mark.parametrize("find", [True, False], ids=["gnu-find", "python-scan"])
def test_status_of_an_unchanged_folder_is_answered_from_its_listing(
    project: Project, monkeypatch: pytest.MonkeyPatch, find: bool
) -> None:
    import molen.data.tracked as tracked

    monkeypatch.setattr(tracked, "_find_works", find)
    session().add(["data"])
    calls: list[str] = []
    original = DataSession._hashes

    def counting(self: DataSession, files: list[object], *args: object, **kwargs: object) -> object:
        calls.append("per-file comparison")
        return original(self, files, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(DataSession, "_hashes", counting)
    assert session().status()[0].state == "unchanged"
    if find:
        assert calls == []  # one listing hash answered for all 31 files
    part = project.root / "data" / "sub" / "part-4.csv"
    before = part.stat()
    part.write_text("x\n9\n")  # same size, new content
    os.utime(part, ns=(before.st_atime_ns, before.st_mtime_ns + 1))
    found = session().status()[0]
    assert found.state == "modified" and found.modified == ["sub/part-4.csv"]
    part.write_text("x\n4\n")
    assert session().status()[0].state == "unchanged"


def test_checkout_restores_deleted_and_changed_data(project: Project) -> None:
    session().add(["raw.csv", "data"])
    (project.root / "raw.csv").unlink()
    import shutil

    shutil.rmtree(project.root / "data")
    assert set(session().checkout()) == {"raw.csv", "data"}
    assert (project.root / "raw.csv").read_text() == "a,b\n1,2\n"
    assert (project.root / "data" / "sub" / "part-29.csv").read_text() == "x\n29\n"
    assert session().checkout() == []  # nothing left to do
    (project.root / "raw.csv").write_text("unsaved work\n")
    with pytest.raises(ConflictError, match="--force"):
        session().checkout(["raw.csv"])
    assert (project.root / "raw.csv").read_text() == "unsaved work\n"  # nothing lost
    session().checkout(["raw.csv"], force=True)
    assert (project.root / "raw.csv").read_text() == "a,b\n1,2\n"


def test_checkout_follows_a_pointer_from_another_commit(project: Project) -> None:
    session().add(["raw.csv"])
    old_pointer = (project.root / "raw.csv.molen").read_text()
    (project.root / "raw.csv").write_text("version 2\n")
    session().add(["raw.csv"])
    (project.root / "raw.csv.molen").write_text(old_pointer)  # as `git checkout` of the old commit does
    session().checkout(["raw.csv"])
    assert (project.root / "raw.csv").read_text() == "a,b\n1,2\n"


@pytest.mark.parametrize("strategy", ["hardlink", "symlink", "copy"])
def test_link_strategies_protect_the_cache(
    project: Project, monkeypatch: pytest.MonkeyPatch, strategy: str
) -> None:
    monkeypatch.setenv("MOLEN_DATA_LINK", strategy)
    content = b"big," * (1 << 19)  # 2 MiB: stored loose, so it can be linked
    (project.root / "big.csv").write_bytes(content)
    session().add(["big.csv", "raw.csv"])
    (project.root / "big.csv").unlink()
    (project.root / "raw.csv").unlink()
    session().checkout()
    target = project.root / "big.csv"
    assert target.read_bytes() == content
    digest = read_pointer(project.root / "big.csv.molen").hash
    if strategy == "copy":
        target.write_text("edited\n")  # a private copy: editing it is fine
    elif os.geteuid() != 0:
        with pytest.raises(PermissionError):
            target.write_text("edited\n")  # read-only: an edit cannot reach the cache
    assert open_workspace().objects.get_bytes(digest) == content
    assert (target.is_symlink()) == (strategy == "symlink")
    small = project.root / "raw.csv"  # a small file comes from a pack: always a private copy
    assert small.read_text() == "a,b\n1,2\n" and not small.is_symlink()
    small.write_text("edited\n")
    assert open_workspace().objects.get_bytes(read_pointer(project.root / "raw.csv.molen").hash) == (
        b"a,b\n1,2\n"
    )


def test_a_corrupt_cache_object_is_named_at_checkout(project: Project) -> None:
    session().add(["raw.csv"])
    digest = read_pointer(project.root / "raw.csv.molen").hash
    corrupt(project.state_dir / "cache", digest)
    (project.root / "raw.csv").unlink()
    with pytest.raises(CorruptObjectError, match=digest):
        session().checkout()
    assert not (project.root / "raw.csv").exists()  # no corrupt bytes in the workspace


def test_bad_paths_are_refused(project: Project, tmp_path: Path) -> None:
    outside = tmp_path / "outside.csv"
    outside.write_text("x")
    with pytest.raises(UsageError, match="outside the project"):
        session().add([str(outside)])
    with pytest.raises(NotFoundError):
        session().add(["missing.csv"])
    with pytest.raises(UsageError):
        session().add([".molen"])
    loop = project.root / "data" / "loop"
    loop.symlink_to(project.root / "data")
    with pytest.raises(UsageError, match="symlink loop"):
        session().add(["data"])
    assert not (project.root / "data.molen").exists()  # nothing half-recorded


def test_remotes_are_kept_in_molen_yaml(project: Project) -> None:
    add_remote(project, "origin", "../remote")
    add_remote(project, "backup", "s3://bucket/x", endpoint_url="http://127.0.0.1:9000")
    remotes = {r.name: r for r in list_remotes(project)}
    assert remotes["origin"].default and not remotes["backup"].default
    assert remotes["backup"].endpoint_url == "http://127.0.0.1:9000"
    set_default_remote(project, "backup")
    assert [r.name for r in list_remotes(project) if r.default] == ["backup"]
    remove_remote(project, "backup")
    assert [r.name for r in list_remotes(project)] == ["origin"]
    assert "# molen project settings" in project.config_path.read_text()  # comments kept
    with pytest.raises(InvalidNameError):
        add_remote(project, "bad name", "x")
    with pytest.raises(UsageError, match="credentials"):
        add_remote(project, "leaky", "s3://AKIA:secret@bucket/x")
    with pytest.raises(NotFoundError):
        remove_remote(project, "nope")


def _round_trip(project: Project) -> None:
    session().add(["raw.csv", "data"])
    first = push(session())
    assert first.transferred == 33  # raw.csv, the manifest and 31 files
    again = push(session())
    assert again.transferred == 0 and again.already_present == 33
    import shutil

    shutil.rmtree(project.state_dir / "cache")
    (project.root / "raw.csv").unlink()
    shutil.rmtree(project.root / "data")
    result, changed = pull(session())
    assert result.transferred == 33 and set(changed) == {"raw.csv", "data"}
    assert (project.root / "data" / "sub" / "part-11.csv").read_text() == "x\n11\n"
    assert {s.state for s in session().status()} == {"unchanged"}


def test_push_and_pull_through_a_folder_remote(project: Project, tmp_path: Path) -> None:
    add_remote(project, "origin", str(tmp_path / "remote"))
    _round_trip(project)


def test_push_and_pull_through_s3(project: Project, s3_bucket: str, s3_endpoint: str) -> None:
    add_remote(project, "origin", f"s3://{s3_bucket}/data", endpoint_url=s3_endpoint)
    _round_trip(project)


def test_a_corrupt_remote_object_never_enters_the_cache(project: Project, tmp_path: Path) -> None:
    add_remote(project, "origin", str(tmp_path / "remote"))
    session().add(["raw.csv"])
    push(session())
    digest = read_pointer(project.root / "raw.csv.molen").hash
    corrupt(tmp_path / "remote", digest)
    shutil.rmtree(project.state_dir / "cache")
    with pytest.raises(CorruptObjectError, match="on the remote origin are corrupt"):
        fetch(session())
    assert not open_workspace().objects.exists(digest)


def test_fetch_force_repairs_a_corrupt_cache(project: Project, tmp_path: Path) -> None:
    add_remote(project, "origin", str(tmp_path / "remote"))
    session().add(["raw.csv"])
    push(session())
    digest = read_pointer(project.root / "raw.csv.molen").hash
    corrupt(project.state_dir / "cache", digest)
    add_remote(project, "other", str(tmp_path / "other"))
    with pytest.raises(CorruptObjectError, match="fetch --force"):
        push(session(), remote="other")  # corrupt bytes are never pushed
    from molen.stores.objects.local import LocalObjectStore

    assert not LocalObjectStore(tmp_path / "other").exists(digest)
    fetch(session(), force=True)
    assert open_workspace().objects.get_bytes(digest) == b"a,b\n1,2\n"
    (project.root / "raw.csv").unlink()
    session().checkout()  # the repaired copy is the one checked out
    assert (project.root / "raw.csv").read_text() == "a,b\n1,2\n"


def test_missing_remote_and_missing_objects(project: Project, tmp_path: Path) -> None:
    session().add(["raw.csv"])
    with pytest.raises(UsageError, match="molen remote add"):
        push(session())
    add_remote(project, "origin", str(tmp_path / "remote"))
    import shutil

    shutil.rmtree(project.state_dir / "cache")
    with pytest.raises(NotFoundError, match="molen data push"):
        fetch(session())  # nothing was pushed yet


def test_a_stale_lock_of_a_killed_process_does_not_block(project: Project) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time, pathlib; from molen.data.lock import data_lock\n"
            "with data_lock(pathlib.Path('.molen'), timeout=5):\n"
            "    print('locked', flush=True); time.sleep(60)",
        ],
        cwd=project.root,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    os.environ["MOLEN_DATA_LOCK_TIMEOUT"] = "0.3"
    try:
        with pytest.raises(ConflictError, match=f"pid {holder.pid}"):
            session().add(["raw.csv"])
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        session().add(["raw.csv"])  # the kernel released the dead owner's lock
    finally:
        del os.environ["MOLEN_DATA_LOCK_TIMEOUT"]
    assert (project.root / "raw.csv.molen").exists()


def test_kill_during_add_leaves_no_bad_object_and_a_rerun_completes(project: Project) -> None:
    big = project.root / "big"
    big.mkdir()
    for index in range(400):
        (big / f"f{index}.bin").write_bytes(os.urandom(64 << 10))
    process = subprocess.Popen([*MOLEN, "data", "add", "big"], cwd=project.root)
    time.sleep(0.8)
    process.kill()
    process.wait(timeout=10)
    cache = open_workspace().objects
    for digest in cache.digests():
        assert cache.check(digest), f"object {digest} does not match its hash"
    result = molen("data", "add", "big", cwd=project.root)
    assert result.returncode == 0, result.stderr
    assert read_pointer(project.root / "big.molen").files == 400
    assert molen("data", "status", "-f", "json", cwd=project.root).stdout.count('"unchanged"') == 1


def test_the_cli_commands(project: Project, tmp_path: Path) -> None:
    root = project.root
    assert molen("data", "add", "raw.csv", "data", cwd=root).returncode == 0
    listed = molen("data", "ls", cwd=root)
    assert "raw.csv" in listed.stdout and "directory" in listed.stdout
    assert molen("remote", "add", "origin", str(tmp_path / "r"), cwd=root).returncode == 0
    assert "* origin" in molen("remote", "list", cwd=root).stdout
    pushed = molen("data", "push", "-j", "4", cwd=root)
    assert pushed.returncode == 0 and "pushed 33 object(s)" in pushed.stdout
    (root / "raw.csv").write_text("changed\n")
    status = molen("data", "status", cwd=root)  # answered without building the command tree
    assert status.stdout.splitlines() == ["   unchanged  data", "    modified  raw.csv"]
    as_json = json.loads(molen("data", "status", "-f", "json", "data", cwd=root).stdout)
    assert as_json == [{"path": "data", "state": "unchanged", "added": [], "removed": [], "modified": []}]
    assert "Which tracked paths changed" in molen("data", "status", "--help", cwd=root).stdout
    bad = molen("data", "status", "-f", "yaml", cwd=root)
    assert bad.returncode == 2 and "yaml" in bad.stderr
    lost = molen("data", "status", cwd=tmp_path)
    assert lost.returncode != 0 and "molen init" in lost.stderr and "Traceback" not in lost.stderr
    refused = molen("data", "checkout", "raw.csv", cwd=root)
    assert refused.returncode == 4 and "--force" in refused.stderr
    assert molen("data", "checkout", "--force", cwd=root).returncode == 0
    outside = molen("data", "add", str(tmp_path), cwd=root)
    assert outside.returncode == 2 and "outside the project" in outside.stderr
    assert "Traceback" not in outside.stderr


@pytest.mark.parametrize("size", ["small", "large"])
def test_a_file_changing_while_it_is_stored_is_refused(
    project: Project, monkeypatch: pytest.MonkeyPatch, size: str
) -> None:
    import molen.data.tracked as tracked
    from molen.stores.objects.local import LocalObjectStore

    if size == "large":  # stored loose, hashed again as it is copied
        (project.root / "raw.csv").write_bytes(b"x" * (2 << 20))
        original_put = LocalObjectStore.put_file

        def racing_put(self: LocalObjectStore, path: Path, *, digest: str | None = None) -> str:
            Path(path).write_text("written by someone else meanwhile, longer\n")
            return original_put(self, path, digest=digest)

        monkeypatch.setattr(LocalObjectStore, "put_file", racing_put)
    else:  # packed: read once, its signature checked on the open file
        original_read = tracked._read_small

        def racing_read(path: str | Path, size: int) -> tuple[bytes, tuple[int, int, int]]:
            Path(path).write_text("written by someone else meanwhile, longer\n")
            return original_read(path, size)

        monkeypatch.setattr(tracked, "_read_small", racing_read)
    with pytest.raises(ConflictError, match="changed while"):
        session().add(["raw.csv"])
    assert not (project.root / "raw.csv.molen").exists()
    cache = open_workspace().objects
    assert all(cache.check(digest) for digest in cache.digests())


def test_two_processes_adding_at_once_both_succeed_in_turn(project: Project) -> None:
    for name in ("one", "two"):
        folder = project.root / name
        folder.mkdir()
        for index in range(150):
            (folder / f"{index}.bin").write_bytes(os.urandom(16 << 10))
    first = subprocess.Popen(
        [*MOLEN, "data", "add", "one"], cwd=project.root, stderr=subprocess.PIPE, text=True
    )
    second = subprocess.Popen(
        [*MOLEN, "data", "add", "two"], cwd=project.root, stderr=subprocess.PIPE, text=True
    )
    assert first.wait(timeout=120) == 0, first.stderr.read() if first.stderr else ""
    assert second.wait(timeout=120) == 0, second.stderr.read() if second.stderr else ""
    statuses = {s.path: s.state for s in session().status(["one", "two"])}
    assert statuses == {"one": "unchanged", "two": "unchanged"}


@pytest.mark.parametrize("command", ["push", "pull", "checkout"])
def test_kill_during_transfer_or_checkout_then_rerun(project: Project, tmp_path: Path, command: str) -> None:
    big = project.root / "big"
    big.mkdir()
    for index in range(600):
        (big / f"f{index}.bin").write_bytes(os.urandom(32 << 10))
    session().add(["big"])
    add_remote(project, "origin", str(tmp_path / "remote"))
    import shutil

    if command != "push":
        push(session())
        shutil.rmtree(big)
    if command == "pull":
        shutil.rmtree(project.state_dir / "cache")
    process = subprocess.Popen([*MOLEN, "data", command, "-j", "2"], cwd=project.root)
    time.sleep(0.6)
    process.kill()
    process.wait(timeout=10)
    from molen.stores.objects import open_object_store

    for store in (open_workspace().objects, open_object_store(str(tmp_path / "remote"))):
        for digest in store.digests():
            assert store.check(digest), f"{store.url}: object {digest} does not match its hash"
    rerun = molen("data", command, cwd=project.root)
    assert rerun.returncode == 0, rerun.stderr
    if command == "push":
        assert "pushed" in rerun.stdout
        assert push(session()).transferred == 0
    else:
        assert {s.state for s in session().status()} == {"unchanged"}
        assert len(list(big.iterdir())) == 600


def test_a_full_disk_is_one_clear_line_and_loses_nothing(project: Project, tmp_path: Path) -> None:
    small = tmp_path / "small-disk"
    small.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("needs permission to mount a small tmpfs (root)")
    try:
        (project.root / "huge.bin").write_bytes(os.urandom(1 << 20))
        (project.root / "molen.yaml").write_text(f"objects:\n  url: {small / 'cache'}\n")
        result = molen("data", "add", "huge.bin", cwd=project.root)
        assert result.returncode != 0
        assert "disk is full" in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert not (project.root / "huge.bin.molen").exists()
        assert (project.root / "huge.bin").stat().st_size == 1 << 20  # the user's data is intact
        leftovers = [p for p in (small / "cache").rglob("*") if p.is_file()]
        assert leftovers == []  # no half-written object
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_credentials_never_reach_pointers_config_or_errors(
    project: Project, s3_bucket: str, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    add_remote(project, "origin", f"s3://{s3_bucket}/data", endpoint_url=s3_endpoint)
    session().add(["raw.csv"])
    push(session())
    for text in (project.root / "raw.csv.molen").read_text(), project.config_path.read_text():
        assert "testing" not in text
    add_remote(project, "down", "s3://nowhere/data", endpoint_url="http://127.0.0.1:9")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    result = molen("data", "push", "--remote", "down", cwd=project.root)
    assert result.returncode == 5
    assert "cannot reach the object store" in result.stderr and "s3cr3t-value" not in result.stderr


def test_a_corrupt_object_leaves_an_absent_folder_absent(project: Project) -> None:
    session().add(["data"])
    manifest = Manifest.from_bytes(
        open_workspace().objects.get_bytes(read_pointer(project.root / "data.molen").hash)
    )
    victim = manifest.entries[5]
    corrupt(project.state_dir / "cache", victim.digest)
    shutil.rmtree(project.root / "data")
    with pytest.raises(CorruptObjectError, match=victim.digest):
        session().checkout(["data"])
    assert sorted(p.name for p in project.root.iterdir() if p.name.startswith((".data", "data"))) == [
        "data.molen"
    ]  # neither a half folder nor a temporary one


def test_manifest_bytes_are_canonical_json() -> None:
    import json

    entries = [ManifestEntry('b/"q"\\é.csv', "ab" * 32, 7), ManifestEntry("a.csv", "cd" * 32, 0)]
    manifest = Manifest.of(entries)
    ordered = sorted(entries, key=lambda e: e.path)
    rows = [{"path": e.path, "digest": e.digest, "size": e.size} for e in ordered]
    expected = json.dumps({"manifest": 1, "files": rows}, separators=(",", ":")).encode()
    assert manifest.to_bytes() == expected
    assert manifest.digest == hash_bytes(expected)
    assert Manifest.from_bytes(expected) == manifest


def test_pointer_files_written_by_molen_and_edited_by_hand_both_parse() -> None:
    from molen.data.pointer import Pointer

    written = Pointer("directory", "ab" * 32, 1234, 7)
    assert Pointer.from_text(written.to_text(), where="x") == written
    by_hand = f"# restored by hand\nfiles: 7\nhash: {'ab' * 32}\nkind: directory\nmolen: 1\nsize: 1234\n"
    assert Pointer.from_text(by_hand, where="x") == written
    damaged = written.to_text().replace("hash: abab", "hash: zzab")
    with pytest.raises(InvalidValueError, match="not a valid molen pointer"):
        Pointer.from_text(damaged, where="data.molen")


def test_plain_data_commands_are_answered_without_the_command_tree(project: Project, tmp_path: Path) -> None:
    from molen.cli.quick import run_quick

    for args in (  # what only the full command line explains goes there
        ["data", "push", "--help"],
        ["data", "push", "-j", "0"],
        ["data", "push", "--remote"],
        ["data", "status", "-f", "yaml"],
        ["data", "push", "--bogus"],
        ["data", "add", "raw.csv"],
        ["runs", "show", "3f2a"],
        ["runs", "list", "unexpected"],
        ["runs", "list", "--limit", "0"],
        ["runs", "list", "-f", "yaml"],
    ):
        assert run_quick(args) is False, args
    root = project.root
    assert molen("data", "add", "raw.csv", "data", cwd=root).returncode == 0
    assert molen("remote", "add", "origin", str(tmp_path / "r"), cwd=root).returncode == 0
    probe = (
        "import sys; from molen.cli import main; sys.argv = ['molen', *sys.argv[1:]]; main(); "
        "assert 'typer' not in sys.modules and 'rich' not in sys.modules, 'the command tree was built'"
    )

    def quick(*args: str) -> str:
        done = subprocess.run([sys.executable, "-c", probe, *args], cwd=root, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    pushed = quick("data", "push", "--remote=origin", "-j", "2")
    assert pushed == "pushed 33 object(s) to origin; 0 were there\n"
    assert quick("data", "push", "data") == "pushed 0 object(s) to origin; 32 were there\n"
    shutil.rmtree(root / "data")
    assert quick("data", "fetch", "--force", "-r", "origin") == (
        "fetched 33 object(s) from origin; 0 were cached\n"
    )
    assert quick("data", "checkout", "data") == "checked out data\n"
    assert quick("data", "pull") == "fetched 0 object(s) from origin; checked out 0 path(s)\n"
    assert json.loads(quick("data", "status", "--format=json"))[1]["path"] == "raw.csv"
    bad = molen("data", "push", "-j", "0", cwd=root)  # the full command explains a bad value
    assert bad.returncode == 2 and "Invalid value" in bad.stderr
