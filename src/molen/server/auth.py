"""Tokens for ``molen server --auth``: who may read, who may write.

``molen tokens create NAME --role read|write|admin`` makes a random secret, prints it once and
stores only its SHA-256 (the secret has 256 random bits, so a fast hash is enough and nothing
reversible is kept). The server compares the presented secret's hash with every stored hash in
constant time (``hmac.compare_digest``), reading the tokens at most every few seconds. Clients
send ``Authorization: Bearer SECRET``: molen's from ``MOLEN_TRACKING_TOKEN``, MLflow's from
``MLFLOW_TRACKING_TOKEN``. Health, the API's
documentation and ``/metrics``-style probes stay open; reading needs any token; writing needs
``write`` or ``admin``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from typing import Any

__all__ = ["ROLES", "Gate", "new_secret", "secret_digest"]

ROLES = ("read", "write", "admin")
OPEN_PATHS = {"/health", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc", "/api/molen/v1/info"}
#: molen operations that only read (POST for their JSON body).
READ_OPERATIONS = {
    "get_experiment",
    "list_experiments",
    "running_runs",
    "resolve_run_id",
    "get_run",
    "search_runs",
    "count_runs",
    "metric_history",
    "runs_using",
    "referenced_digests",
    "get_version",
    "latest_version",
    "list_versions",
    "versions_of_runs",
    "list_models",
    "alias_version",
    "alias_history",
    "verdicts",
}
READ_POSTS = {"/api/2.0/mlflow/runs/search"}
#: The web UI's page, files and reads: open to viewers without a token (its POSTs are writes).
UI_PAGES = {"/", "/ui", "/ui/"}
UI_PATHS = ("/ui/static/", "/api/molen/v1/ui/")
#: Seconds a verdict on a secret is remembered (a deleted token stops working within this).
REMEMBER = 5.0


def new_secret() -> str:
    """A token's secret: ``molen_`` and 43 URL-safe characters (256 random bits)."""
    return "molen_" + secrets.token_urlsafe(32)


def secret_digest(secret: str) -> str:
    """What is stored of a secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def needs_write(method: str, path: str) -> bool:
    """Whether the request changes something."""
    if method in {"GET", "HEAD", "OPTIONS"}:
        return False
    if path in READ_POSTS:
        return False
    if path.startswith("/api/molen/v1/store/") or path.startswith("/api/molen/v1/registry/"):
        return path.rsplit("/", 1)[-1] not in READ_OPERATIONS
    return True


class Gate:
    """Checks a request's bearer token against the tokens in the metadata store."""

    def __init__(self, tokens: Any) -> None:
        self.tokens = tokens  # () -> [(name, role, hash)]
        self._read_at = -REMEMBER
        self._known: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()

    def role_of(self, secret: str) -> tuple[str, str] | None:
        """(name, role) of the token ``secret`` belongs to, or None."""
        digest = secret_digest(secret)
        with self._lock:
            if time.monotonic() - self._read_at >= REMEMBER:  # new and deleted tokens count soon
                self._known = list(self.tokens())
                self._read_at = time.monotonic()
            known = self._known
        found = None
        for name, role, stored in known:  # every comparison in constant time, none skipped
            if hmac.compare_digest(stored, digest):
                found = (name, role)
        return found

    def check(self, method: str, path: str, header: str | None) -> tuple[int, str] | None:
        """None when the request may go on, else (HTTP status, message)."""
        if path in OPEN_PATHS:
            return None
        if method in {"GET", "HEAD"} and (path in UI_PAGES or path.startswith(UI_PATHS)):
            return None  # the web UI is read-only for viewers without a token; its actions are not
        scheme, _, secret = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            return 401, "this server needs a token: Authorization: Bearer TOKEN (MOLEN_TRACKING_TOKEN)"
        found = self.role_of(secret.strip())
        if found is None:
            return 401, "unknown token; ask an admin for one (molen tokens create NAME --role read|write)"
        name, role = found
        if needs_write(method, path) and role not in {"write", "admin"}:
            return 403, f"token {name!r} may only read"
        return None
