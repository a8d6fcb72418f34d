"""Shared test fixtures: real PostgreSQL and S3 (moto server) back ends, no mocks.

* ``postgres_server`` (session): a private PostgreSQL server per pytest(-xdist) worker.
* ``postgres_url``: a fresh, empty database on it, as a SQLAlchemy URL.
* ``s3_endpoint`` (session): URL of a moto S3 server running over HTTP.
* ``s3_bucket``: a fresh, empty bucket on it.

Tests that use them get the ``postgres`` / ``s3`` markers automatically.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

PG_START_TIMEOUT = 30.0
PG_STOP_TIMEOUT = 30.0
BOOTSTRAP_HINT = "run `scripts/bootstrap.sh --postgres` to install the PostgreSQL server binaries"


# --------------------------------------------------------------------------- helpers


def _free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _version_key(path: Path) -> tuple[int, ...]:
    """Sort key for ``/usr/lib/postgresql/<version>/bin``: numeric version parts."""
    return tuple(int(p) for p in re.findall(r"\d+", path.parent.name)) or (0,)


def find_postgres_bindir() -> Path | None:
    """Directory holding ``initdb`` and ``postgres``: newest Debian install, else PATH."""
    candidates = sorted(
        (
            d
            for d in Path("/usr/lib/postgresql").glob("*/bin")
            if (d / "initdb").is_file() and (d / "postgres").is_file()
        ),
        key=_version_key,
        reverse=True,
    )
    if candidates:
        return candidates[0]
    initdb = shutil.which("initdb")
    if initdb and shutil.which("postgres"):
        return Path(initdb).resolve().parent
    return None


def _unprivileged_user() -> str:
    """Name of a system user to run PostgreSQL as when we are root."""
    import pwd

    for name in ("postgres", "molentest"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            pass
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "molentest"],
        check=True,
        capture_output=True,
    )
    return "molentest"


# --------------------------------------------------------------------------- PostgreSQL


class PostgresServer:
    """A throw-away PostgreSQL cluster in a temporary directory, reachable on 127.0.0.1.

    Connect as superuser ``postgres`` (trust auth, no password). ``stop()``/``start()``
    restart it on the same port, so URLs handed out earlier work again afterwards.
    """

    def __init__(self, bindir: Path, basedir: Path, run_as: str | None) -> None:
        self.bindir = bindir
        self.basedir = basedir
        self.datadir = basedir / "data"
        self.sockdir = basedir / "sock"
        self.logfile = basedir / "postgres.log"
        self.run_as = run_as
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    # -- URLs
    def url(self, dbname: str = "postgres") -> str:
        """SQLAlchemy URL for database ``dbname``."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{dbname}"

    def admin_url(self) -> str:
        """SQLAlchemy URL of the ``postgres`` maintenance database."""
        return self.url("postgres")

    def dsn(self, dbname: str = "postgres") -> str:
        """libpq connection string (for ``psycopg.connect``)."""
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    # -- databases
    def create_database(self) -> str:
        """Create a fresh empty database ``t_<hex>``; return its SQLAlchemy URL."""
        dbname = f"t_{uuid.uuid4().hex}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
        return self.url(dbname)

    def drop_database(self, dbname: str) -> None:
        """Drop ``dbname``, closing its connections; best effort (the server may be down)."""
        with (
            contextlib.suppress(psycopg.Error),
            psycopg.connect(self.dsn(), autocommit=True, connect_timeout=5) as conn,
        ):
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')

    # -- lifecycle
    def _cmd(self, *args: str) -> list[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        return ["runuser", "-u", self.run_as, "--", *cmd] if self.run_as else cmd

    def init(self) -> None:
        """Create the cluster (``initdb``)."""
        self.sockdir.mkdir(parents=True, exist_ok=True)
        if self.run_as:
            for path in (self.basedir, self.sockdir):
                shutil.chown(path, user=self.run_as, group=None)
        result = subprocess.run(
            self._cmd(
                "initdb",
                "-D",
                str(self.datadir),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=self.basedir,
        )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{result.stdout.decode(errors='replace')}")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the server (on a new free port the first time) and wait until it is ready."""
        if self.running:
            return
        first = self.port == 0
        for _attempt in range(5 if first else 1):
            if first:
                self.port = _free_port()
            try:
                self._launch()
                return
            except RuntimeError:
                # Another process (e.g. another xdist worker) may have grabbed the port.
                if not first or "could not bind" not in self._log_tail():
                    raise
        raise RuntimeError(f"PostgreSQL did not start:\n{self._log_tail()}")

    def _launch(self) -> None:
        log = open(self.logfile, "ab")  # noqa: SIM115 - handed to the child process
        try:
            self._proc = subprocess.Popen(
                self._cmd(
                    "postgres",
                    "-D",
                    str(self.datadir),
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.sockdir),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=200",
                ),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.basedir,
                # Own session: a Ctrl-C in the terminal must not race our orderly shutdown.
                start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + PG_START_TIMEOUT
        while True:
            if self._proc.poll() is not None:
                self._proc = None
                raise RuntimeError(f"PostgreSQL exited during start-up:\n{self._log_tail()}")
            try:
                with psycopg.connect(self.dsn(), connect_timeout=2, autocommit=True) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"PostgreSQL not ready after {PG_START_TIMEOUT:.0f}s:\n{self._log_tail()}"
                    ) from None
                time.sleep(0.05)

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.datadir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        """Fast shutdown (SIGINT) and wait for the server to exit."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        # Signal the postmaster itself: `runuser` would turn our signal into SIGTERM + SIGKILL.
        pid = self._postmaster_pid() or proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        try:
            proc.wait(timeout=PG_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGQUIT)  # immediate shutdown
            proc.wait(timeout=10)

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.logfile.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A private PostgreSQL server for this test session (one per xdist worker)."""
    bindir = find_postgres_bindir()
    if bindir is None:
        pytest.fail(
            "PostgreSQL server binaries (initdb, postgres) not found in "
            f"/usr/lib/postgresql/*/bin or on PATH: {BOOTSTRAP_HINT}",
            pytrace=False,
        )
    run_as: str | None = None
    if os.geteuid() == 0:
        # PostgreSQL refuses to run as root. pytest's temp dirs are mode 0700 and owned by
        # root, so the unprivileged user could not reach them: use a fresh dir in /tmp.
        run_as = _unprivileged_user()
        basedir = Path(tempfile.mkdtemp(prefix="molen-pg-"))
    else:
        basedir = tmp_path_factory.mktemp("postgres")
        if len(str(basedir)) > 80:  # unix socket paths are limited to ~107 bytes
            basedir = Path(tempfile.mkdtemp(prefix="molen-pg-"))
    server = PostgresServer(bindir, basedir, run_as)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(basedir, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """SQLAlchemy URL of a fresh, empty database (dropped again after the test)."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url.rsplit("/", 1)[1])


# --------------------------------------------------------------------------- S3 (moto)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """Endpoint URL (``http://127.0.0.1:PORT``) of a moto S3 server for this session."""
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        for var in ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
            mp.delenv(var, raising=False)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            yield f"http://{host}:{port}"
        finally:
            server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """Name of a fresh, empty bucket on the moto S3 server."""
    import boto3

    name = f"molen-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


# --------------------------------------------------------------------------- isolation


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's ``MOLEN_*`` settings and git configuration out of tests."""
    for var in list(os.environ):
        if var.startswith("MOLEN_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("GIT_AUTHOR_NAME", "molen tests")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "tests@molen.invalid")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "molen tests")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "tests@molen.invalid")
    # Ignore ~/.gitconfig and /etc/gitconfig (signing, hooks, templates...).
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


@pytest.fixture
def no_importance(monkeypatch: pytest.MonkeyPatch) -> None:
    """SHAP importance at every log_model would slow the tests that log many models
    (test_explain.py checks importance itself)."""
    monkeypatch.setenv("MOLEN_MODELS_IMPORTANCE", "false")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by the back ends they use, so ``-m "not postgres"`` etc. work."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & {"postgres_server", "postgres_url"}:
            item.add_marker(pytest.mark.postgres)
        if names & {"s3_endpoint", "s3_bucket"}:
            item.add_marker(pytest.mark.s3)


# --------------------------------------------------------------------------- molen server


@contextlib.contextmanager
def molen_server(
    store_url: str,
    objects: Path | str,
    *,
    auth: bool = False,
    s3_endpoint_url: str | None = None,
    artifacts_direct: bool = False,
    project_root: str | None = None,
) -> Iterator[str]:
    """A real ``molen server`` (uvicorn, in a thread, on a free port) over ``store_url`` and an
    object store (a folder, or s3:// with ``s3_endpoint_url``); ``auth``: tokens required;
    ``artifacts_direct``: clients use the object store themselves. Yields its ``http://`` URL."""
    import threading

    import uvicorn

    from molen.server.app import create_app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(
            store_url,
            str(objects),
            auth=auth,
            s3_endpoint_url=s3_endpoint_url,
            artifacts_direct=artifacts_direct,
            project_root=project_root,
        ),
        host="127.0.0.1",
        port=port,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "molen server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
