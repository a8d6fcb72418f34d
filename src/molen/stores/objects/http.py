"""The object store behind ``molen server``: artifacts, models and data go through the server,
which proxies them to its own object store (a folder or S3) and checks that every object's
bytes hash to the key they are sent to."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from molen.stores.metadata.http import API, HttpSession, raise_error
from molen.stores.objects.base import ObjectStore

__all__ = ["HttpObjectStore", "server_info"]


class HttpObjectStore(ObjectStore):
    """The primitives of :class:`ObjectStore` as requests to ``/api/molen/v1/objects``."""

    def __init__(self, url: str, *, verify: bool = True) -> None:
        super().__init__(url, verify=verify)
        self.session = HttpSession(url)

    def close(self) -> None:
        """Close this thread's connection to the server (the next request opens another)."""
        self.session._drop()

    def _path(self, key: str) -> str:
        return f"{API}/objects/{urllib.parse.quote(key)}"

    def _checked(self, status: int, data: bytes) -> None:
        if status >= 300:
            try:
                answer = json.loads(data or b"{}")
            except ValueError:
                answer = {}
            raise_error(status, answer if isinstance(answer, dict) else {}, self.url)

    def _exists(self, key: str) -> bool:
        status, data, _ = self.session.request("HEAD", self._path(key))
        if status == 404:
            return False
        self._checked(status, data)
        return True

    def _write_bytes(self, key: str, data: bytes) -> None:
        status, answer, _ = self.session.request(
            "PUT", self._path(key), data, {"Content-Type": "application/octet-stream"}
        )
        self._checked(status, answer)

    def _write_file(self, key: str, source: Path, digest: str) -> None:
        self._write_bytes(key, source.read_bytes())

    def _write_named(self, key: str, source: Path) -> None:
        self._write_bytes(key, source.read_bytes())

    def _read_bytes(self, key: str) -> bytes:
        status, data, _ = self.session.request("GET", self._path(key))
        if status == 404:
            raise FileNotFoundError(key)
        self._checked(status, data)
        return data

    def _read_range(self, key: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        status, data, _ = self.session.request(
            "GET", self._path(key), headers={"Range": f"bytes={offset}-{offset + length - 1}"}
        )
        if status == 404:
            raise FileNotFoundError(key)
        self._checked(status, data)
        return data

    def _fetch_file(self, key: str, destination: Path) -> None:
        data = self._read_bytes(key)
        with open(destination, "wb") as sink:
            sink.write(data)

    def _delete(self, key: str) -> None:
        status, data, _ = self.session.request("DELETE", self._path(key))
        if status != 404:
            self._checked(status, data)

    def _keys(self) -> Iterator[str]:
        status, data, _ = self.session.request("GET", f"{API}/objects")
        self._checked(status, data)
        yield from json.loads(data)["keys"]

    def _list(self, folder: str) -> list[str]:
        status, data, _ = self.session.request("GET", f"{API}/objects?folder={urllib.parse.quote(folder)}")
        self._checked(status, data)
        keys: list[str] = json.loads(data)["keys"]
        return keys


def server_info(url: str) -> dict[str, Any]:
    """What the molen server at ``url`` says of itself (``/api/molen/v1/info``)."""
    session = HttpSession(url)
    status, data, _ = session.request("GET", f"{API}/info")
    try:
        answer = json.loads(data or b"{}")
    except ValueError:
        answer = {}
    if status != 200 or not isinstance(answer, dict):
        raise_error(status, answer if isinstance(answer, dict) else {}, url)
    return dict(answer)
