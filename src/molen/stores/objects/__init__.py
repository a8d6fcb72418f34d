"""Content-addressed object stores, picked by URL: a folder, S3 (boto3), or any other fsspec URL."""

from __future__ import annotations

from typing import Any

from molen.stores.objects.base import ObjectStore

__all__ = ["ObjectStore", "open_object_store"]


def open_object_store(url: str, *, s3_endpoint_url: str | None = None, verify: bool = True) -> ObjectStore:
    """Open the object store at ``url``: a path or ``file://`` URL, ``s3://bucket/prefix``, or
    another fsspec URL (``gs://…``, ``az://…``, with that fsspec backend installed).

    ``s3_endpoint_url`` points ``s3://`` URLs at an S3-compatible server (MinIO, moto).
    Example: ``open_object_store("s3://bucket/molen", s3_endpoint_url="http://minio:9000")``
    """
    if "://" not in url or url.startswith("file://"):
        from molen.stores.objects.local import LocalObjectStore

        return LocalObjectStore(url.removeprefix("file://"), verify=verify)
    if url.split("://", 1)[0] in {"s3", "s3a"}:
        from molen.stores.objects.s3 import S3ObjectStore

        return S3ObjectStore(url, endpoint_url=s3_endpoint_url, verify=verify)
    from molen.stores.objects.remote import FsspecObjectStore

    # no listing cache: another client may add or delete objects at any time
    options: dict[str, Any] = {"use_listings_cache": False, "skip_instance_cache": True}
    if s3_endpoint_url and url.split("://", 1)[0] in {"s3", "s3a"}:
        options["client_kwargs"] = {"endpoint_url": s3_endpoint_url}
    return FsspecObjectStore(url, storage_options=options, verify=verify)
