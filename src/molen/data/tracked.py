"""Tracked paths: ``molen data add``, ``status`` and ``checkout``.

A tracked path (a file or a folder) has a pointer file beside it (``PATH.molen``, committed to
git) naming its content hash; the bytes live in the cache (the project's object store). The
state cache remembers each file's hash by (inode, size, mtime), so unchanged files are never
hashed twice.
"""

from __future__ import annotations

import contextlib
import os
import stat as stat_module
from collections.abc import Callable, Iterator
from glob import escape as glob_escape
from pathlib import Path
from typing import NamedTuple

from molen.atomic import write_atomic
from molen.data.links import link_file, parse_strategies, unsupported_strategies
from molen.data.lock import data_lock
from molen.data.manifest import Manifest, ManifestEntry
from molen.data.parallel import run_parallel
from molen.data.pointer import POINTER_SUFFIX, Pointer, pointer_path, read_pointer, write_pointer
from molen.data.state import Signature, StateCache, signature
from molen.errors import ConflictError, InvalidValueError, NotFoundError, StoreError, UsageError
from molen.hashing import hash_bytes, hash_file
from molen.progress import SILENT, Progress
from molen.project import CONFIG_NAME, STATE_DIR, Project
from molen.stores.objects.base import ObjectStore
from molen.stores.objects.local import SMALL, LocalObjectStore
from molen.workspace import Workspace

__all__ = [
    "DataSession",
    "PathStatus",
    "TrackedPath",
    "open_data_session",
]


class TrackedPath(NamedTuple):
    """A path with a pointer file: where it is (relative to the project root) and what it says."""

    path: str
    pointer: Pointer


class PathStatus:
    """How a tracked path differs from its pointer: ``state`` is unchanged, modified, deleted
    or not-in-cache; for a modified folder, the files added, removed and modified in it."""

    def __init__(self, path: str, state: str) -> None:
        self.path = path
        self.state = state
        self.added: list[str] = []
        self.removed: list[str] = []
        self.modified: list[str] = []

    def __repr__(self) -> str:
        return f"PathStatus({self.path!r}, {self.state!r})"


class _Scanned(NamedTuple):
    """A workspace file seen by a scan: its path in the project and its stat signature."""

    relative: str
    absolute: str | Path
    signature: Signature
    size: int


class DataSession:
    """The data operations of one project: its cache, state cache and settings."""

    def __init__(self, workspace: Workspace) -> None:
        project = workspace.settings.project
        if project is None:
            raise UsageError("molen data needs a project: run `molen init` first")
        self.project: Project = project
        self.workspace = workspace
        self.jobs = int(workspace.settings["data.jobs"])
        # local file work is mostly Python between short system calls: threads mostly fight
        # over the interpreter lock (measured on 2 cores: 1 thread beat 2 and 4 for add and
        # checkout of 20,000 small files), so one per two cores
        self.local_jobs = max(1, min(self.jobs, (os.cpu_count() or 1) // 2))
        self.links = parse_strategies(str(workspace.settings["data.link"]))
        self.lock_timeout = float(workspace.settings["data.lock_timeout"])
        self.state = StateCache(project.state_dir / "state.db")
        self._device: int | None = None

    @property
    def cache(self) -> ObjectStore:
        """The project's object store, opened on first use (once per process)."""
        return self.workspace.objects

    @classmethod
    def current(cls) -> DataSession:
        """The session of the project at or above the current folder (reused per process)."""
        from molen.workspace import open_workspace

        workspace = open_workspace()
        session = _sessions.get(id(workspace))
        if session is None or session.workspace is not workspace:
            session = _sessions[id(workspace)] = cls(workspace)
        return session

    def close(self) -> None:
        self.state.close()

    # -- paths --------------------------------------------------------------------------------

    def relative(self, path: Path | str) -> str:
        """``path`` relative to the project root (POSIX); refuses paths outside the project."""
        candidate = Path(path)
        absolute = Path(os.path.abspath(candidate if candidate.is_absolute() else Path.cwd() / candidate))
        absolute = Path(os.path.realpath(absolute.parent)) / absolute.name  # /tmp -> /private/tmp
        if absolute.name.endswith(POINTER_SUFFIX) and len(absolute.name) > len(POINTER_SUFFIX):
            absolute = absolute.with_name(absolute.name[: -len(POINTER_SUFFIX)])
        root = self.project.root
        if absolute != root and root not in absolute.parents:
            raise UsageError(f"{path} is outside the project {root}; molen tracks data inside it")
        relative = absolute.relative_to(root).as_posix()
        first = relative.split("/", 1)[0]
        if relative in {".", ""} or first in {".git", STATE_DIR} or relative == CONFIG_NAME:
            raise UsageError(f"{path}: molen cannot track the project itself, .git or {STATE_DIR}/")
        return relative

    def absolute(self, relative: str) -> Path:
        return self.project.root / relative

    def tracked(self, paths: list[str] | None = None) -> list[TrackedPath]:
        """The tracked paths (all, or those named), read from their pointer files."""
        if paths:
            found = []
            for given in paths:
                relative = self.relative(given)
                pointer_file = pointer_path(self.absolute(relative))
                if not pointer_file.is_file():
                    raise NotFoundError(
                        f"{given} is not tracked (no {pointer_file.name}); add it with `molen data add`"
                    )
                found.append(TrackedPath(relative, read_pointer(pointer_file)))
            return found
        return [
            TrackedPath(rel, read_pointer(self.absolute(rel + POINTER_SUFFIX)))
            for rel in self._pointer_files()
        ]

    def _pointer_files(self) -> list[str]:
        """Every pointer file in the project, not descending into .git, .molen or tracked folders."""
        found: list[str] = []
        root = self.project.root
        for folder, dirs, files in os.walk(root):
            names = set(files)
            # not into tracked folders, hidden folders (.git, .molen, .venv…) or known bulk
            dirs[:] = sorted(
                d
                for d in dirs
                if d + POINTER_SUFFIX not in names and not d.startswith(".") and d not in _SKIP
            )
            for name in sorted(files):
                if name.endswith(POINTER_SUFFIX) and name != POINTER_SUFFIX:
                    relative = os.path.relpath(os.path.join(folder, name), root)
                    found.append(Path(relative).as_posix()[: -len(POINTER_SUFFIX)])
        return found

    # -- scanning and hashing -------------------------------------------------------------------

    def _scan(self, relative: str) -> Iterator[_Scanned]:
        """Every file under the tracked folder ``relative`` (symlinked files followed)."""
        # plain strings, not pathlib: this loop runs once per file, tens of thousands of times
        root = str(self.project.root)
        cut = len(root) + 1
        stack = [f"{root}/{relative}"]
        seen_dirs: set[tuple[int, int]] = set()
        while stack:
            folder = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except OSError as exc:
                raise UsageError(f"cannot read {folder}: {exc.strerror}") from None
            for entry in entries:
                try:
                    info = entry.stat()  # follows symlinks
                except OSError as exc:
                    raise UsageError(
                        f"cannot read {entry.path}: {exc.strerror} (a broken or looping symlink?)"
                    ) from None
                if stat_module.S_ISDIR(info.st_mode):
                    key = (info.st_dev, info.st_ino)
                    if key in seen_dirs:
                        raise UsageError(
                            f"{entry.path} is a symlink loop; remove it or replace it with a folder"
                        )
                    seen_dirs.add(key)
                    stack.append(entry.path)
                elif stat_module.S_ISREG(info.st_mode) and ".molen-tmp" not in entry.name:
                    path = entry.path
                    yield _Scanned(
                        path[cut:], path, (info.st_ino, info.st_size, info.st_mtime_ns), info.st_size
                    )

    def _hashes(
        self,
        files: list[_Scanned],
        remembered: dict[str, tuple[Signature, str]],
        progress: Progress,
        store: bool,
    ) -> dict[str, str]:
        """The hash of each file: remembered while unchanged, else hashed (and stored if asked)."""
        result: dict[str, str] = {}
        todo: list[_Scanned] = []
        for item in files:
            known = remembered.get(item.relative)
            if known is not None and known[0] == item.signature:
                result[item.relative] = known[1]
            else:
                todo.append(item)
        if store and result:  # remembered, but stored only if the cache still has them
            cached = self.cache.present(result.values())
            lost = {relative for relative, digest in result.items() if digest not in cached}
            todo += [item for item in files if item.relative in lost]
            for relative in lost:
                del result[relative]
        if not todo:
            return result

        batch = self.cache.packing() if store else None

        def changed(item: _Scanned) -> ConflictError:
            return ConflictError(
                f"{item.relative} changed while it was being read; nothing recorded for it, retry"
            )

        def work(item: _Scanned) -> tuple[str, Signature, str]:
            if batch is not None and item.size <= batch.threshold:
                # a small file: one open, one read, and the signature checked on the open file
                data, after = _read_small(item.absolute, item.size)
                if after != item.signature:
                    raise changed(item)
                return item.relative, item.signature, batch.add_bytes(data)
            digest = batch.add_file(item.absolute) if batch is not None else hash_file(item.absolute)
            if signature(os.stat(item.absolute)) != item.signature:
                raise changed(item)
            return item.relative, item.signature, digest

        progress.start("adding" if store else "hashing", len(todo))
        try:
            with batch or contextlib.nullcontext():
                done = run_parallel(todo, work, jobs=self.local_jobs, progress=progress)
        except OSError as exc:
            raise _os_error(exc) from None
        finally:
            progress.finish()
        self.state.remember(done)
        result.update({relative: digest for relative, _, digest in done})
        return result

    def _current(
        self, relative: str, progress: Progress, *, store: bool
    ) -> tuple[Pointer, Manifest | None] | None:
        """What the workspace holds at ``relative`` now, as a pointer (None if absent)."""
        absolute = self.absolute(relative)
        try:
            info = absolute.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise UsageError(f"cannot read {relative}: {exc.strerror}") from None
        if stat_module.S_ISREG(info.st_mode):
            item = _Scanned(relative, absolute, signature(info), info.st_size)
            remembered = {}
            known = self.state.lookup(relative)
            if known is not None:
                remembered[relative] = known
            digest = self._hashes([item], remembered, progress, store)[relative]
            return Pointer("file", digest, info.st_size, 1), None
        if stat_module.S_ISDIR(info.st_mode):
            listed = _find_listing(str(absolute))  # runs beside the scan and hashing below
            seen = None if store else self.state.folder(relative)
            found = None if store else listed()
            if seen is not None and found is not None and seen[0] == f"find:{hash_bytes(found)}":
                return seen[1], None  # every file as it was when this version was computed
            files = list(self._scan(relative))
            prefix = len(relative) + 1
            if seen is not None and found is None and seen[0] == _listing(files):
                return seen[1], None  # the same, scanned in Python
            try:
                digests = self._hashes(files, self.state.lookup_prefix(relative + "/"), progress, store)
            finally:
                if store:
                    found = listed()  # also on failure: the find processes are reaped
            scanned = {(f.relative[prefix:], f.signature) for f in files}
            if found is not None and _parse_find(found) == scanned:
                listing = f"find:{hash_bytes(found)}"
            else:  # no GNU find, or it saw another state than the scan
                listing = _listing(files)
            manifest = Manifest.of(
                [ManifestEntry(f.relative[prefix:], digests[f.relative], f.size) for f in files]
            )
            pointer = Pointer("directory", manifest.digest, manifest.size, len(manifest.entries))
            self.state.remember_folder(relative, listing, pointer)
            return pointer, manifest
        raise UsageError(f"{relative} is neither a file nor a folder")

    # -- add ------------------------------------------------------------------------------------

    def add(self, paths: list[str], progress: Progress = SILENT) -> list[TrackedPath]:
        """Track ``paths``: store their content in the cache and write their pointer files."""
        relatives = [self.relative(path) for path in paths]
        for relative in relatives:
            if not self.absolute(relative).exists():
                raise NotFoundError(f"{relative} does not exist")
        added = []
        with data_lock(self.project.state_dir, timeout=self.lock_timeout):
            for relative in relatives:
                current = self._current(relative, progress, store=True)
                if current is None:
                    raise NotFoundError(f"{relative} vanished while it was being added")
                pointer, manifest = current
                if manifest is not None:
                    self.cache.put_bytes(manifest.to_bytes())
                write_pointer(pointer_path(self.absolute(relative)), pointer)
                _ignore_in_git(self.absolute(relative))
                added.append(TrackedPath(relative, pointer))
        return added

    def snapshot(self, path: str | Path, progress: Progress = SILENT) -> Pointer:
        """Store what ``path`` holds now and return its version, without writing a pointer
        (what a run records with ``log_input``: the same hash ``molen data add`` would give)."""
        relative = self.relative(path)
        current = self._current(relative, progress, store=True)
        if current is None:
            raise NotFoundError(f"{relative} does not exist")
        pointer, manifest = current
        if manifest is not None:
            self.cache.put_bytes(manifest.to_bytes())
        return pointer

    def version(self, relative: str) -> Pointer | None:
        """The version the project-relative path holds now, as a pointer would record it (None
        if it does not exist); unchanged files are answered by the state cache."""
        current = self._current(relative, SILENT, store=False)
        return None if current is None else current[0]

    def materialize(self, relative: str, pointer: Pointer, *, ignore: bool = True) -> None:
        """Make the project-relative path hold version ``pointer`` from the cache, replacing
        whatever is there (a pipeline restoring outs from its run cache); ``ignore`` also adds
        it to the .gitignore beside it (outs, not metrics files, which git keeps)."""
        with data_lock(self.project.state_dir, timeout=self.lock_timeout):
            self._checkout_one(TrackedPath(relative, pointer), force=True, progress=SILENT)
        if ignore:
            _ignore_in_git(self.absolute(relative))

    def ignore_in_git(self, relative: str) -> None:
        """Add the project-relative path to the .gitignore beside it (once)."""
        _ignore_in_git(self.absolute(relative))

    # -- status ---------------------------------------------------------------------------------

    def status(self, paths: list[str] | None = None, progress: Progress = SILENT) -> list[PathStatus]:
        """How each tracked path differs from its pointer."""
        found = []
        for tracked in self.tracked(paths):
            current = self._current(tracked.path, progress, store=False)
            if current is None:
                found.append(PathStatus(tracked.path, "deleted"))
                continue
            pointer, manifest = current
            if pointer.hash == tracked.pointer.hash:
                state = "unchanged" if self.cache.exists(tracked.pointer.hash) else "not-in-cache"
                found.append(PathStatus(tracked.path, state))
                continue
            result = PathStatus(tracked.path, "modified")
            if manifest is not None and tracked.pointer.kind == "directory":
                before = self._manifest(tracked.pointer.hash, missing_ok=True)
                if before is not None:
                    old, new = before.by_path(), manifest.by_path()
                    result.added = sorted(set(new) - set(old))
                    result.removed = sorted(set(old) - set(new))
                    result.modified = sorted(p for p in set(old) & set(new) if old[p].digest != new[p].digest)
            found.append(result)
        return found

    def _manifest(self, digest: str, *, missing_ok: bool = False) -> Manifest | None:
        try:
            return Manifest.from_bytes(self.cache.get_bytes(digest), digest=digest)
        except NotFoundError:
            if missing_ok:
                return None
            raise

    # -- checkout -------------------------------------------------------------------------------

    def checkout(
        self,
        paths: list[str] | None = None,
        *,
        force: bool = False,
        progress: Progress = SILENT,
        extra: tuple[TrackedPath, ...] = (),
    ) -> list[str]:
        """Make the workspace match the pointers (and the ``extra`` versions, a pipeline's
        outs); returns the paths that changed."""
        changed = []
        with data_lock(self.project.state_dir, timeout=self.lock_timeout):
            for tracked in [*self.tracked(paths), *extra]:
                if self._checkout_one(tracked, force=force, progress=progress):
                    changed.append(tracked.path)
        return changed

    def _checkout_one(self, tracked: TrackedPath, *, force: bool, progress: Progress) -> bool:
        target = self.absolute(tracked.path)
        current = self._current(tracked.path, SILENT, store=False) if target.exists() else None
        if current is not None and current[0].hash == tracked.pointer.hash:
            return False
        if tracked.pointer.kind == "file":
            if current is not None and current[1] is not None:
                raise ConflictError(
                    f"{tracked.path} is a folder but its pointer names a file; move it away first"
                )
            if current is not None and not force and not self._is_cached(current[0].hash):
                raise ConflictError(
                    f"{tracked.path} has changes that are not in {tracked.path}{POINTER_SUFFIX}; "
                    "add them with `molen data add`, or pass --force to discard them"
                )
            placed = self._materialize(tracked.pointer.hash, target, tracked.path)
            self.state.remember([(tracked.path, placed, tracked.pointer.hash)])
            for leftover in target.parent.glob(f".{target.name}.molen-tmp*"):
                leftover.unlink(missing_ok=True)  # from a checkout killed mid-write
            return True
        manifest = self._manifest_or_pull_hint(tracked)
        if not os.path.lexists(target):
            self._checkout_fresh(tracked, manifest, progress)
            return True
        wanted = manifest.by_path()
        if target.exists() and not target.is_dir():
            raise ConflictError(
                f"{tracked.path} is a file but its pointer names a folder; move it away first"
            )
        present = (
            {f.relative[len(tracked.path) + 1 :]: f for f in self._scan(tracked.path)}
            if target.exists()
            else {}
        )
        remembered = self.state.lookup_prefix(tracked.path + "/")
        digests = self._hashes(list(present.values()), remembered, SILENT, False) if present else {}
        extra = sorted(set(present) - set(wanted))
        if extra and not force:
            unsaved = [p for p in extra if not self._is_cached(digests[present[p].relative])]
            if unsaved:
                raise ConflictError(
                    f"{tracked.path}/{unsaved[0]} is not in {tracked.path}{POINTER_SUFFIX} "
                    f"({len(unsaved)} such file(s)); add the folder with `molen data add`, "
                    "or pass --force to delete them"
                )
        todo = [e for e in manifest.entries if digests.get(f"{tracked.path}/{e.path}") != e.digest]
        progress.start(f"checkout {tracked.path}", len(todo))
        try:
            for folder in sorted({(target / entry.path).parent for entry in todo}):
                folder.mkdir(parents=True, exist_ok=True)

            def place(entry: ManifestEntry) -> tuple[str, Signature, str]:
                relative = f"{tracked.path}/{entry.path}"
                placed = self._materialize(entry.digest, target / entry.path, relative)
                return relative, placed, entry.digest

            done = run_parallel(todo, place, jobs=self.local_jobs, progress=progress)
        finally:
            progress.finish()
        self.state.remember(done)
        _remove_leftovers(target)  # temporaries of a checkout that was killed mid-write
        for name in extra:
            os.unlink(present[name].absolute)
        return bool(todo or extra)

    def _checkout_fresh(self, tracked: TrackedPath, manifest: Manifest, progress: Progress) -> None:
        """Check out a folder that is absent: built under a temporary name beside it, then
        renamed into place, so the folder appears whole or not at all (and no file needs a
        rename of its own)."""
        import shutil

        target = self.absolute(tracked.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        for leftover in target.parent.glob(f".{glob_escape(target.name)}.molen-tmp*"):
            shutil.rmtree(leftover, ignore_errors=True)  # from a checkout killed midway
        staging = target.parent / f".{target.name}.molen-tmp{os.getpid()}"
        base = str(staging)
        os.mkdir(base)
        for folder in sorted({os.path.dirname(entry.path) for entry in manifest.entries} - {""}):
            os.makedirs(f"{base}/{folder}", exist_ok=True)
        cache = self.cache
        packed = cache.packed()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC

        def place(entry: ManifestEntry) -> tuple[str, Signature, str]:
            relative = f"{tracked.path}/{entry.path}"
            path = f"{base}/{entry.path}"
            if entry.digest not in packed:
                return relative, self._materialize(entry.digest, Path(path), relative), entry.digest
            view = memoryview(cache.get_bytes(entry.digest))  # verified against its hash
            fd = os.open(path, flags, 0o644)
            try:
                while view:
                    view = view[os.write(fd, view) :]
                info = os.fstat(fd)
            finally:
                os.close(fd)
            return relative, signature(info), entry.digest

        progress.start(f"checkout {tracked.path}", len(manifest.entries))
        try:
            done = run_parallel(manifest.entries, place, jobs=self.local_jobs, progress=progress)
            os.rename(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            progress.finish()
        self.state.remember(done)

    def unprotect(self, paths: list[str]) -> list[str]:
        """Replace linked (read-only) workspace files under ``paths`` by private writable copies,
        so they can be edited without touching the cache. Returns the files replaced."""
        import shutil

        replaced = []
        with data_lock(self.project.state_dir, timeout=self.lock_timeout):
            for given in paths:
                base = self.absolute(self.relative(given))
                files = (
                    [base] if base.is_file() else [Path(s.absolute) for s in self._scan(self.relative(given))]
                )
                for file in files:
                    info = os.lstat(file)
                    if not (
                        stat_module.S_ISLNK(info.st_mode) or info.st_nlink > 1 or not info.st_mode & 0o200
                    ):
                        continue
                    tmp = file.with_name(f".{file.name}.molen-tmp{os.getpid()}")
                    shutil.copyfile(file, tmp)  # follows a symlink to the cached bytes
                    os.chmod(tmp, 0o644)
                    os.replace(tmp, file)
                    replaced.append(file.relative_to(self.project.root).as_posix())
        return replaced

    def _is_cached(self, digest: str) -> bool:
        return self.cache.exists(digest)

    def _manifest_or_pull_hint(self, tracked: TrackedPath) -> Manifest:
        manifest = self._manifest(tracked.pointer.hash, missing_ok=True)
        if manifest is None:
            raise NotFoundError(
                f"the data of {tracked.path} is not in the cache; "
                f"fetch it with `molen data pull {tracked.path}`"
            )
        return manifest

    def _materialize(self, digest: str, target: Path, relative: str) -> Signature:
        """Put object ``digest`` at ``target`` (verified), by the configured link strategies;
        returns the new file's signature for the state cache."""
        cache = self.cache
        if not isinstance(cache, LocalObjectStore):
            try:
                cache.get_file(digest, target, verify=True)
            except NotFoundError:
                raise self._not_cached(digest, relative) from None
            return signature(os.stat(target))
        if digest in cache.packed():  # a small file: written from its pack, a private copy
            return _write_private(target, cache.get_bytes(digest))
        source = cache.path_of(digest)
        try:
            size = os.stat(source).st_size
        except FileNotFoundError:
            raise self._not_cached(digest, relative) from None
        if self._copying() and size <= SMALL:
            data = source.read_bytes()  # one read: verified and written from memory
            if hash_bytes(data) != digest:
                raise cache._corrupt(digest)
            return _write_private(target, data)
        if hash_file(source) != digest:
            raise cache._corrupt(digest)
        link_file(source, target, self.links)
        return signature(os.stat(target))

    def _copying(self) -> bool:
        """Whether the first link strategy that works here is a plain copy."""
        if self._device is None:
            self._device = os.stat(self.project.root).st_dev
        usable = [s for s in self.links if (s, self._device) not in unsupported_strategies]
        return bool(usable) and usable[0] == "copy"

    @staticmethod
    def _not_cached(digest: str, relative: str) -> NotFoundError:
        return NotFoundError(
            f"the data of {relative} ({digest[:12]}) is not in the cache; "
            f"fetch it with `molen data pull {relative.split('/', 1)[0]}`"
        )


_sessions: dict[int, DataSession] = {}
_SKIP = {"node_modules", "venv", "__pycache__", "site-packages"}


def _remove_leftovers(folder: Path) -> None:
    """Delete ``.NAME.molen-tmp…`` files an interrupted write left in ``folder``."""
    for parent, _, names in os.walk(folder):
        for name in names:
            if ".molen-tmp" in name:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(parent, name))


_find_works = True


def _find_listing(folder: str) -> Callable[[], bytes | None]:
    """Start listing every file under ``folder`` (symlinks followed) with its inode, size and
    mtime, by GNU find, one process per core over the folder's entries; returns the function
    that waits for the listing. C processes stat files about twice as fast as a Python loop,
    and in parallel (a Python loop holds the interpreter lock), and stat-ing every file is most
    of what `molen data status` does; `data add` lists while it hashes. The listing is None
    where find is not GNU find or fails (a symlink loop…): the caller scans in Python."""
    global _find_works
    if not _find_works or not hasattr(os, "memfd_create"):  # GNU find goes with Linux here
        return lambda: None
    import subprocess

    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return lambda: None
    if not names:
        return lambda: b""
    workers = max(1, min(len(names), os.cpu_count() or 1, 8))
    share = -(-len(names) // workers)
    groups = [names[start : start + share] for start in range(0, len(names), share)]
    # each process writes to its own unnamed file, not a pipe: with pipes read one after the
    # other, the second process would stall on a full pipe until the first one finished
    outputs = [os.memfd_create("molen-find") for _ in groups]
    running: list[subprocess.Popen[bytes]] = []
    try:
        for group, output in zip(groups, outputs, strict=True):
            command = ["find", "-L", *(f"./{name}" for name in group), "-type", "f"]
            running.append(
                subprocess.Popen(
                    [*command, "-printf", "%i %s %T@ %p\\0"],
                    cwd=folder,
                    stdout=output,
                    stderr=subprocess.DEVNULL,
                    env={**os.environ, "LC_ALL": "C"},
                )
            )
    except OSError:
        _find_works = False
        for process in running:
            process.wait()
        for output in outputs:
            os.close(output)
        return lambda: None

    def collect() -> bytes | None:
        try:
            if any(process.wait() != 0 for process in running):
                return None
            found = []
            for output in outputs:
                os.lseek(output, 0, os.SEEK_SET)
                with open(output, "rb", closefd=False) as handle:
                    found.append(handle.read())
            return b"".join(found)
        finally:
            for output in outputs:
                os.close(output)

    return collect


def _parse_find(found: bytes) -> set[tuple[str, Signature]]:
    """The (path, signature) rows of :func:`_find_listing` output."""
    rows = set()
    for record in found.split(b"\0")[:-1]:
        inode, size, mtime, path = record.split(b" ", 3)
        path = path[2:]  # ./
        seconds, _, fraction = mtime.partition(b".")
        mtime_ns = int(seconds) * 1_000_000_000 + int((fraction + b"000000000")[:9])
        rows.add((os.fsdecode(path), (int(inode), int(size), mtime_ns)))
    return rows


def _listing(files: list[_Scanned]) -> str:
    """One hash of a folder's file names and stat signatures: equal while no file in it was
    added, removed or touched, which lets status skip the per-file comparison."""
    rows = sorted(f"{f.relative}\0{f.signature[0]}\0{f.signature[1]}\0{f.signature[2]}" for f in files)
    return hash_bytes("\n".join(rows).encode("utf-8", "surrogateescape"))


def _read_small(path: str | Path, size: int) -> tuple[bytes, Signature]:
    """The bytes of a small file and its signature after reading (taken on the open file)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        parts = [os.read(fd, size + 1)]
        while parts[-1] and sum(map(len, parts)) <= size:  # a short read: keep reading
            parts.append(os.read(fd, size + 1))
        return b"".join(parts), signature(os.fstat(fd))
    finally:
        os.close(fd)


def _write_private(target: Path, data: bytes) -> Signature:
    """Write a private, writable copy of ``data`` at ``target`` atomically; its signature."""
    return signature(write_atomic(target, data))


def _ignore_in_git(absolute: Path) -> None:
    """Add ``/NAME`` to the ``.gitignore`` beside ``absolute`` (once; atomically)."""
    ignore = absolute.parent / ".gitignore"
    entry = f"/{absolute.name}"
    lines = ignore.read_text().splitlines() if ignore.exists() else []
    if entry in lines:
        return
    write_atomic(ignore, ("\n".join([*lines, entry]) + "\n").encode())


def _os_error(exc: OSError) -> StoreError | InvalidValueError:
    import errno

    if exc.errno == errno.ENOSPC:
        return StoreError(
            "the disk is full; free space and run the command again (nothing half-written was kept)"
        )
    if exc.errno == errno.ELOOP:
        return InvalidValueError(f"{exc.filename}: a symlink loop; remove it")
    return StoreError(f"{exc.filename or 'a file'}: {exc.strerror}")


def open_data_session(workspace: Workspace | None = None) -> DataSession:
    """The data operations of the current project."""
    from molen.workspace import open_workspace

    return DataSession(workspace or open_workspace())
