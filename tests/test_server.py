"""molen server: the stores behind one REST API; molen's CLI and Python API through it, objects
checked and confined, errors that keep their meaning."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import blake3
import pytest

from conftest import molen_server
from molen.project import init_project


def call(url: str, method: str = "GET", body: bytes | None = None) -> tuple[int, bytes, dict[str, str]]:
    headers = {"Content-Type": "application/json"} if body is not None and "/objects/" not in url else {}
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read(), dict(answer.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    with molen_server(f"sqlite:///{tmp_path}/server.db", tmp_path / "objects") as url:
        yield url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_the_cli_and_the_python_api_work_through_a_server_process(tmp_path: Path) -> None:
    port = free_port()
    objects = tmp_path / "server-objects"
    log = tmp_path / "server.log"
    sink = log.open("wb")  # a file, not a pipe nobody reads: the server must never block on its log
    process = subprocess.Popen(
        [sys.executable, "-m", "molen", "server", "--port", str(port),
         "--store", f"sqlite:///{tmp_path}/server.db", "--artifacts", str(objects)],
        stdout=sink,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        started = time.monotonic()
        while not (_up(port) and call(f"http://127.0.0.1:{port}/health")[0] == 200):
            assert time.monotonic() - started < 20, "molen server did not answer /health"
            time.sleep(0.05)
        root = tmp_path / "alice"
        init_project(root, experiment="shared")
        env = {**os.environ, "MOLEN_TRACKING_URI": f"http://127.0.0.1:{port}"}
        script = (
            "import molen, numpy as np, pandas as pd\n"
            "from sklearn.linear_model import LogisticRegression\n"
            "X = pd.DataFrame({'a': np.arange(100.0), 'b': np.arange(100.0) % 7})\n"
            "y = (X.a > 50).astype(int)\n"
            "with molen.start_run() as run:\n"
            "    run.log_params({'C': 1.0})\n"
            "    for step in range(50):\n"
            "        run.log_metric('loss', 1 / (step + 1), step=step)\n"
            "    run.log_model(LogisticRegression().fit(X, y), 'shared_model', reference=X, y_reference=y)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script], cwd=root, env={**env, "MOLEN_MODELS_IMPORTANCE": "false"},
            capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        # a teammate in another folder sees the run and the model, through the same server
        bob = tmp_path / "bob"
        init_project(bob, experiment="shared")

        def molen(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "molen", *args], cwd=bob, env=env, capture_output=True, text=True
            )

        def molen_json(*args: str) -> Any:
            done = molen(*args)
            assert done.returncode == 0, (
                f"molen {' '.join(args)}: {done.stderr}\nserver: {log.read_text()[-2000:]}"
            )
            return json.loads(done.stdout)

        runs = molen_json("runs", "list", "-f", "json")
        assert len(runs) == 1 and runs[0]["params"] == {"C": "1.0"} and runs[0]["metrics"]["loss"] == 0.02
        assert molen("models", "alias", "shared_model", "1", "production").returncode == 0
        shown = molen_json("models", "show", "shared_model@production", "-f", "json")
        assert shown["version"]["version"] == 1 and shown["manifest"]["task"] == "classification"
        loaded = subprocess.run(
            [sys.executable, "-c", "import molen; print(molen.load_model('shared_model@production').predict("
             "[{'a': 80.0, 'b': 3.0}, {'a': 2.0, 'b': 2.0}]).tolist())"],
            cwd=bob, env=env, capture_output=True, text=True,
        )  # fmt: skip
        assert loaded.stdout.strip() == "[1, 0]", loaded.stderr
        assert not (root / ".molen" / "cache").exists()  # the artifacts went to the server
        assert any(objects.rglob("*"))
        refused = molen("models", "rollback", "shared_model", "production")
        assert refused.returncode == 4 and "no previous version to roll back to" in refused.stderr
    finally:
        process.terminate()
        process.wait(timeout=20)
        sink.close()


def test_with_artifacts_direct_clients_use_the_object_store_themselves(
    tmp_path: Path, s3_endpoint: str, s3_bucket: str
) -> None:
    """``--artifacts-direct``: the server hands out the object store's location and clients
    put and get artifacts and models there with their own credentials."""
    import boto3

    objects = f"s3://{s3_bucket}/team"
    with molen_server(
        f"sqlite:///{tmp_path}/s.db", objects, s3_endpoint_url=s3_endpoint, artifacts_direct=True
    ) as server:
        info = json.loads(call(f"{server}/api/molen/v1/info")[1])
        assert info == {**info, "objects": "direct", "objects_url": objects, "s3_endpoint_url": s3_endpoint}
        root = tmp_path / "carol"
        init_project(root, experiment="shared")
        env = {**os.environ, "MOLEN_TRACKING_URI": server, "MOLEN_MODELS_IMPORTANCE": "false"}
        script = (
            "import molen, numpy as np\n"
            "from sklearn.linear_model import LinearRegression\n"
            "from molen.workspace import open_workspace\n"
            "X = np.arange(20.0).reshape(10, 2)\n"
            "with molen.start_run() as run:\n"
            "    run.log_text('hello', 'notes/hello.txt')\n"
            "    run.log_model(LinearRegression().fit(X, X.sum(axis=1)), 'direct_model', reference=X)\n"
            "print(type(open_workspace().objects).__name__)\n"
            "model = molen.load_model('direct_model@latest')\n"
            "print(model.predict(np.array([[1.0, 2.0]])).round(6).tolist())\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        kind, predicted = done.stdout.split()[-2:]
        assert kind == "S3ObjectStore" and predicted == "[3.0]"
    listed = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").list_objects_v2(
        Bucket=s3_bucket, Prefix="team/"
    )
    assert listed.get("KeyCount", 0) >= 2  # the text and the model package, written by the client


def _up(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_health_info_and_the_documented_api(server: str) -> None:
    status, body, _ = call(f"{server}/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
    assert json.loads(call(f"{server}/api/molen/v1/info")[1])["objects"] == "proxied"
    schema = json.loads(call(f"{server}/openapi.json")[1])
    for operation in ("log_batch", "search_runs", "metric_history", "set_alias", "rollback_alias"):
        assert any(path.endswith(f"/{operation}") for path in schema["paths"]), operation
    docs = call(f"{server}/docs")
    assert docs[0] == 200 and b"swagger" in docs[1].lower()


def test_errors_keep_their_class_and_carry_no_internals(server: str) -> None:
    status, body, _ = call(f"{server}/api/molen/v1/store/get_run", "POST", b'{"run_id": "nope"}')
    answer: dict[str, Any] = json.loads(body)
    assert status == 404 and answer["error"] == "NotFoundError" and "nope" in answer["message"]
    status, body, _ = call(f"{server}/api/molen/v1/store/get_run", "POST", b'{"run": "x"}')
    assert status == 400 and "unknown argument 'run'" in json.loads(body)["message"]
    for text in (
        body.decode(),
        call(f"{server}/api/molen/v1/store/list_experiments", "POST", b"{")[1].decode(),
    ):
        assert "Traceback" not in text and "/tmp/" not in text and "site-packages" not in text


def test_objects_must_hash_to_their_key_and_keys_never_leave_the_store(server: str, tmp_path: Path) -> None:
    data = b"model bytes"
    digest = blake3.blake3(data).hexdigest()
    key = f"{digest[:2]}/{digest[2:]}"
    assert call(f"{server}/api/molen/v1/objects/{key}", "PUT", data)[0] == 200
    assert call(f"{server}/api/molen/v1/objects/{key}")[1] == data
    assert call(f"{server}/api/molen/v1/objects/{key}", "HEAD")[0] == 200
    other = blake3.blake3(b"other").hexdigest()
    status, body, _ = call(f"{server}/api/molen/v1/objects/{other[:2]}/{other[2:]}", "PUT", data)
    assert status == 400 and "do not hash" in json.loads(body)["message"]
    assert call(f"{server}/api/molen/v1/objects/{other[:2]}/{other[2:]}")[0] == 404
    (tmp_path / "secret.txt").write_text("secret")
    attempts = [
        "../secret.txt",
        "..%2Fsecret.txt",
        "..%252Fsecret.txt",
        "named/../../secret.txt",
        "named/..%2F..%2Fsecret.txt",
        "%2Fetc%2Fpasswd",
        "named/..\\..\\secret.txt",
        "named/a%00b",
        "packs/../../secret.txt",
        "named/runcache/../../../secret.txt",
    ]
    for attempt in attempts:
        for method in ("GET", "PUT", "DELETE"):
            status, body, _ = call(
                f"{server}/api/molen/v1/objects/{attempt}", method, b"x" if method == "PUT" else None
            )
            assert status in {400, 404, 405}, (attempt, method, status)
            assert b"secret" not in body
    assert (tmp_path / "secret.txt").read_text() == "secret"
    assert not list((tmp_path / "objects").rglob("secret*"))


def test_an_unavailable_database_is_a_503_with_retry_after(tmp_path: Path) -> None:
    with molen_server("postgresql+psycopg://molen@127.0.0.1:9/nowhere", tmp_path / "objects") as url:
        assert call(f"{url}/health")[0] == 200  # health never waits on the stores
        status, body, headers = call(f"{url}/api/molen/v1/store/list_experiments", "POST", b"{}")
        assert status == 503 and headers.get("retry-after") == "5"
        assert json.loads(body)["error"] in {"StoreUnavailableError", "StoreError"}


def test_tokens_let_readers_read_and_writers_write(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path}/server.db"
    admin = tmp_path / "admin"
    init_project(admin)

    def token(name: str, role: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "molen", "--tracking-uri", database, "tokens", "create", name,
             "--role", role],
            cwd=admin, capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    reader, writer = token("dashboard", "read"), token("ci", "write")
    assert reader.startswith("molen_") and reader != writer
    listed = subprocess.run(
        [sys.executable, "-m", "molen", "--tracking-uri", database, "tokens", "list"],
        cwd=admin, capture_output=True, text=True,
    )  # fmt: skip
    assert "ci\twrite" in listed.stdout and reader not in listed.stdout  # secrets are never shown again
    with molen_server(database, tmp_path / "objects", auth=True) as url:
        assert call(f"{url}/health")[0] == 200 and call(f"{url}/openapi.json")[0] == 200
        status, body, _ = call(f"{url}/api/molen/v1/store/list_experiments", "POST", b"{}")
        assert status == 401 and "needs a token" in json.loads(body)["message"]
        project = tmp_path / "team"
        init_project(project)
        script = "import molen\nwith molen.start_run() as run:\n    run.log_metric('m', 1.0)\nprint(run.id)\n"

        def python(secret: str) -> subprocess.CompletedProcess[str]:
            env = {**os.environ, "MOLEN_TRACKING_URI": url, "MOLEN_TRACKING_TOKEN": secret}
            return subprocess.run(
                [sys.executable, "-c", script], cwd=project, env=env, capture_output=True, text=True
            )

        refused = python(reader)
        assert refused.returncode != 0 and "may only read" in refused.stderr
        assert python("molen_not-a-real-token").returncode != 0
        written = python(writer)
        assert written.returncode == 0, written.stderr
        env = {**os.environ, "MOLEN_TRACKING_URI": url, "MOLEN_TRACKING_TOKEN": reader}
        runs = subprocess.run(
            [sys.executable, "-m", "molen", "runs", "list", "-f", "json"], cwd=project, env=env,
            capture_output=True, text=True,
        )  # fmt: skip
        assert [r["id"] for r in json.loads(runs.stdout)] == [written.stdout.strip()]
        # MLflow's client sends its token the same way; without one it is refused, not retried
        mlflow_env = {**os.environ, "MLFLOW_TRACKING_URI": url, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
        code = (
            "import mlflow\nmlflow.set_experiment('x')\n"
            "with mlflow.start_run():\n    mlflow.log_metric('m', 2.0)\n"
        )
        anonymous = subprocess.run(
            [sys.executable, "-c", code], env=mlflow_env, capture_output=True, text=True
        )
        assert anonymous.returncode != 0 and "UNAUTHENTICATED" in anonymous.stderr
        signed = subprocess.run(
            [sys.executable, "-c", code], env={**mlflow_env, "MLFLOW_TRACKING_TOKEN": writer},
            capture_output=True, text=True,
        )  # fmt: skip
        assert signed.returncode == 0, signed.stderr[-2000:]
        deleted = subprocess.run(
            [sys.executable, "-m", "molen", "--tracking-uri", database, "tokens", "delete", "ci"],
            cwd=admin, capture_output=True, text=True,
        )  # fmt: skip
        assert deleted.returncode == 0
        time.sleep(5.2)  # the server rereads its tokens every 5 s
        assert python(writer).returncode != 0


def test_oversized_requests_are_refused_before_they_are_read(server: str) -> None:
    import http.client
    import urllib.parse

    where = urllib.parse.urlsplit(server)
    for path in ("/api/molen/v1/store/list_experiments", "/api/2.0/mlflow/runs/search"):
        connection = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
        connection.putrequest("POST", path)  # announce 100 MB, send none of it: the answer comes first
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(100 * 1024**2))
        connection.endheaders()
        answer = connection.getresponse()
        assert answer.status == 413 and "at most" in json.loads(answer.read())["message"], path
        connection.close()


def _post(url: str, operation: str, body: dict[str, Any], request_id: str) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"{url}/api/molen/v1/store/{operation}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "molen-request-id": request_id},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_write_sent_again_is_done_once(
    database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A client that lost an answer sends the request again with the same id: the server
    answers what it answered the first time and writes nothing twice, even when the copies
    arrive at the same moment."""
    import threading

    from molen.stores.metadata.sql import SqlMetadataStore

    url = (
        request.getfixturevalue("postgres_url") if database == "postgresql" else f"sqlite:///{tmp_path}/s.db"
    )
    with molen_server(url, tmp_path / "objects") as server:
        status, experiment = _post(server, "get_or_create_experiment", {"name": "once"}, "e" * 32)
        assert status == 200
        run = {"run_id": "a" * 32, "experiment_id": experiment["result"]["id"], "name": "r", "start_time": 1}
        first = _post(server, "create_run", run, "r" * 32)
        assert first == (200, {"result": None})
        assert _post(server, "create_run", run, "r" * 32) == first  # not a ConflictError
        assert _post(server, "create_run", run, "s" * 32)[0] == 409  # a new request: refused

        batch = {
            "run_id": "a" * 32,
            "metrics": [
                {"__type__": "Metric", "key": "loss", "value": i / 10, "step": i, "timestamp": 5}
                for i in range(50)
            ],
        }
        answers: list[tuple[int, Any]] = []
        copies = [
            threading.Thread(target=lambda: answers.append(_post(server, "log_batch", batch, "b" * 32)))
            for _ in range(8)
        ]
        for copy in copies:
            copy.start()
        for copy in copies:
            copy.join()
        assert answers == [(200, {"result": None})] * 8
        assert _post(server, "log_batch", batch, "c" * 32)[0] == 200  # another request: written again

        # a request that fails records nothing: sent again once its cause is fixed, it is done
        orphan = {**batch, "run_id": "f" * 32}
        assert _post(server, "log_batch", orphan, "d" * 32)[0] == 404
        assert _post(server, "log_batch", {"run_id": "a" * 32, "params": {"p": "1"}}, "d" * 32)[0] == 200
        assert _post(server, "log_batch", {"run_id": "a" * 32, "params": {"p": "2"}}, "x" * 7)[0] == 400

    store = SqlMetadataStore(url)
    try:
        history = store.metric_history("a" * 32, "loss")
        assert len(history) == 100 and sorted(m.step for m in history) == sorted(list(range(50)) * 2)
        assert store.get_run("a" * 32).params == {"p": "1"}
    finally:
        store.close()


class LossyProxy:
    """Forwards HTTP requests to a server and throws away every third answer (closing the
    connection after the server did the work), as a network that loses answers does."""

    def __init__(self, upstream: str) -> None:
        import http.client
        import http.server
        import threading
        import urllib.parse

        target = urllib.parse.urlsplit(upstream)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                connection = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in {"host", "connection"}}
                connection.request("POST", self.path, body=body, headers=headers)
                answer = connection.getresponse()
                data = answer.read()
                connection.close()
                with proxy.lock:
                    proxy.forwarded += 1
                    lose = proxy.forwarded % 3 == 0
                    proxy.lost += lose
                if lose:  # the server has done it; the client never hears
                    self.close_connection = True
                    return
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in {"connection", "transfer-encoding", "date", "server"}:
                        self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

        self.lock = threading.Lock()
        self.forwarded = self.lost = 0
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_answers_lost_on_the_way_write_nothing_twice(tmp_path: Path) -> None:
    """molen's client retries a request whose answer was lost; every value arrives once."""
    from molen.entities import Metric
    from molen.stores.metadata.http import HttpMetadataStore

    with molen_server(f"sqlite:///{tmp_path}/s.db", tmp_path / "objects") as server:
        proxy = LossyProxy(server)
        try:
            store = HttpMetadataStore(proxy.url)
            experiment = store.get_or_create_experiment("lossy")
            store.create_run(run_id="b" * 32, experiment_id=experiment.id, name="r", start_time=1)
            for batch in range(30):
                values = [Metric("loss", float(i), batch * 100 + i, 7) for i in range(100)]
                store.log_batch("b" * 32, metrics=values, params={f"p{batch}": str(batch)})
            store.end_run("b" * 32, "FINISHED", 9)
            assert proxy.lost >= 10  # a third of the answers never arrived
            history = HttpMetadataStore(server).metric_history("b" * 32, "loss")
            assert sorted(m.step for m in history) == list(range(3000))
            assert store.get_run("b" * 32).status == "FINISHED"
        finally:
            proxy.close()


def test_the_http_clients_mirror_the_stores_they_stand_for() -> None:
    """Every operation the server serves has the same parameters on the client as on the store,
    so code written against the embedded store runs unchanged against a server."""
    import inspect

    from molen.server.app import REGISTRY_OPERATIONS, STORE_OPERATIONS
    from molen.stores.metadata.http import HttpMetadataStore, HttpRegistry
    from molen.stores.metadata.registry import SqlRegistry
    from molen.stores.metadata.sql import SqlMetadataStore

    def shape(method: Any) -> list[tuple[str, Any, Any]]:
        return [(p.name, p.kind, p.default) for p in inspect.signature(method).parameters.values()]

    for names, store, client in (
        (STORE_OPERATIONS, SqlMetadataStore, HttpMetadataStore),
        (REGISTRY_OPERATIONS, SqlRegistry, HttpRegistry),
    ):
        for name in names:
            assert shape(getattr(client, name)) == shape(getattr(store, name)), name
