"""A throwaway S3-compatible server (moto, in memory) on loopback for the data benchmarks.

Runs under molen's python (``moto[server]`` and ``boto3`` are dev dependencies of molen); the
tools being measured talk to it over HTTP, with the credentials ``testing``/``testing``. It
listens on 127.0.0.1 only (another loopback address may be given, nothing else), on a free port
unless ``--port``. Note that moto runs on the same cores as the tool being measured, so S3 times
are a local, CPU-shared approximation of a real object store.

In a script::

    from s3_server import moto_s3
    with moto_s3("bench") as endpoint:  # e.g. "http://127.0.0.1:40123", bucket created
        ...

Command line (prints one JSON line ``{"endpoint": ..., "bucket": ...}`` once ready, then serves
until SIGINT/SIGTERM or ``--max-seconds`` have passed)::

    .venv/bin/python benchmarks/s3_server.py --bucket bench [--port 0] [--max-seconds 3600]
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import logging
import signal
import sys
import threading
from collections.abc import Iterator

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"


@contextlib.contextmanager
def moto_s3(bucket: str = "bench", host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Start moto's threaded server on ``host:port``, create ``bucket``, yield the endpoint URL."""
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"{host} is not a loopback address")
    import boto3
    from moto.server import ThreadedMotoServer

    # One access-log line per request would cost the server CPU that the measured tool shares.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    try:
        bound_host, bound_port = server.get_host_and_port()
        endpoint = f"http://{bound_host}:{bound_port}"
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )
        client.create_bucket(Bucket=bucket)
        yield endpoint
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve an in-memory S3 (moto) on loopback.")
    parser.add_argument("--bucket", default="bench")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--max-seconds", type=float, default=3600, help="stop after this long")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with moto_s3(args.bucket, args.host, args.port) as endpoint:
        print(json.dumps({"endpoint": endpoint, "bucket": args.bucket}), flush=True)
        if not stop.wait(args.max_seconds):
            print("[s3-server] --max-seconds reached, stopping", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
