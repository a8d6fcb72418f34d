"""The load generator of the serving benchmark: a separate process that POSTs one body, again and again.

Run by ``bench_serving.py`` under molen's python; prints exactly one JSON object on stdout.

``seq --port P --path /predict --body FILE --n N [--warmup W] [--pid PID ...]``
    ``W`` untimed, then ``N`` timed requests one after another on one kept-alive connection
    (``http.client``, ``TCP_NODELAY``): every latency in seconds, and the CPU time (user +
    system, psutil) the server processes (each ``PID`` and its children) spent over the ``N``
    requests.
``load --port P --path /predict --body FILE --concurrency C --duration S [--warmup S] [--pid PID ...]``
    ``C`` kept-alive connections on one asyncio loop (uvloop when installed), each sending the
    next request as soon as the last answer is read: a minimal HTTP/1.1 client (one prebuilt
    request, ``Content-Length`` bodies), so that this process costs a small share of what the
    server spends per request (``client_cpu_per_request`` says how much). Requests answered
    in the ``S`` seconds after the warm-up count for the rate; every answer (warm-up and
    in-flight ones included) counts in ``answered``/``errors``. The server's CPU time over the
    window and its resident memory (RSS, summed over the process tree) every second.

Every non-200 answer and every broken connection is an error (the first few are described).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import socket
import sys
import time
from pathlib import Path
from typing import Any


def processes(pids: list[int]) -> list[Any]:
    """The processes ``pids`` and all their children (a server and its workers)."""
    import psutil

    found = []
    for pid in pids:
        process = psutil.Process(pid)
        found.append(process)
        found.extend(process.children(recursive=True))
    return found


def cpu_seconds(procs: list[Any]) -> float:
    total = 0.0
    for process in procs:
        times = process.cpu_times()
        total += times.user + times.system
    return total


def rss_bytes(procs: list[Any]) -> int:
    return sum(process.memory_info().rss for process in procs)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


# -- sequential ---------------------------------------------------------------------------------------


def sequential(args: argparse.Namespace) -> dict[str, Any]:
    body = args.body.read_bytes()
    headers = {"Content-Type": "application/json"}
    conn = http.client.HTTPConnection(args.host, args.port, timeout=60)
    conn.connect()
    assert conn.sock is not None
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    errors: list[str] = []
    answered = 0

    def one() -> bool:
        nonlocal answered
        conn.request("POST", args.path, body, headers)
        response = conn.getresponse()
        data = response.read()
        if response.status != 200:
            if len(errors) < 5:
                errors.append(f"{response.status}: {data[:300]!r}")
            return False
        answered += 1
        return True

    for _ in range(args.warmup):
        one()
    procs = processes(args.pid)
    clock = time.perf_counter
    latencies = []
    failed = 0
    cpu_before = cpu_seconds(procs)
    client_before = time.process_time()
    started = clock()
    for _ in range(args.n):
        t0 = clock()
        ok = one()
        latencies.append(clock() - t0)
        failed += not ok
    wall = clock() - started
    client_cpu = time.process_time() - client_before
    server_cpu = cpu_seconds(procs) - cpu_before
    conn.close()
    return {
        "mode": "seq",
        "n": args.n,
        "warmup": args.warmup,
        "answered": answered,
        "errors": failed,
        "error_samples": errors,
        "wall": wall,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "latencies": latencies,
        "server_cpu": server_cpu,
        "server_cpu_per_request": server_cpu / args.n,
        "client_cpu_per_request": client_cpu / args.n,
        "server_processes": len(procs),
        "response_bytes": len(body),
    }


# -- concurrent load ------------------------------------------------------------------------------------


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise ValueError(f"no Content-Length in {head[:200]!r}")


async def _load(args: argparse.Namespace) -> dict[str, Any]:
    body = args.body.read_bytes()
    request = (
        f"POST {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    clock = time.perf_counter
    begin = clock()
    window_start = begin + args.warmup
    stop_at = window_start + args.duration
    latencies: list[float] = []
    counts = {"answered": 0, "errors": 0, "reconnects": 0}
    errors: list[str] = []

    def fail(message: str) -> None:
        counts["errors"] += 1
        if len(errors) < 5:
            errors.append(message)

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(args.host, args.port)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return reader, writer

    async def client() -> None:
        reader, writer = await connect()
        while clock() < stop_at:
            t0 = clock()
            try:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(_content_length(head))
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                fail(f"{type(exc).__name__}: {exc}"[:300])
                writer.close()
                counts["reconnects"] += 1
                reader, writer = await connect()
                continue
            t1 = clock()
            status = int(head[9:12])
            if status == 200:
                counts["answered"] += 1
                if window_start <= t1 <= stop_at:
                    latencies.append(t1 - t0)
            else:
                fail(f"status {status}")
            if b"connection: close" in head.lower():
                writer.close()
                counts["reconnects"] += 1
                reader, writer = await connect()
        writer.close()

    procs = processes(args.pid)
    rss: list[tuple[float, int]] = []
    marks: dict[str, float] = {}

    async def monitor() -> None:
        await asyncio.sleep(max(0.0, window_start - clock()))
        marks["server_cpu"] = cpu_seconds(procs)
        marks["client_cpu"] = time.process_time()
        marks["window_start"] = clock()
        if procs:
            rss.append((clock() - window_start, rss_bytes(procs)))
        while True:
            left = stop_at - clock()
            if left <= 0:
                break
            await asyncio.sleep(min(args.rss_interval, left))
            if procs and clock() < stop_at - 0.05:
                rss.append((clock() - window_start, rss_bytes(procs)))
        marks["window_end"] = clock()
        marks["server_cpu"] = cpu_seconds(procs) - marks["server_cpu"]
        marks["client_cpu"] = time.process_time() - marks["client_cpu"]
        if procs:
            rss.append((clock() - window_start, rss_bytes(procs)))

    await asyncio.gather(monitor(), *(client() for _ in range(args.concurrency)))
    window = marks["window_end"] - marks["window_start"]
    done = len(latencies)
    return {
        "mode": "load",
        "concurrency": args.concurrency,
        "duration": args.duration,
        "warmup": args.warmup,
        "window": window,
        "requests_in_window": done,
        "per_second": done / window,
        "answered": counts["answered"],
        "errors": counts["errors"],
        "reconnects": counts["reconnects"],
        "error_samples": errors,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "server_cpu": marks["server_cpu"],
        "server_cpu_per_request": marks["server_cpu"] / done if done else None,
        "client_cpu_share": marks["client_cpu"] / window,
        "client_cpu_per_request": marks["client_cpu"] / done if done else None,
        "rss": rss,
        "server_processes": len(procs),
        "loop": type(asyncio.get_running_loop()).__module__,
    }


def load(args: argparse.Namespace) -> dict[str, Any]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_load(args))
    return uvloop.run(_load(args))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Load generator of the serving benchmark (one JSON line).")
    sub = parser.add_subparsers(dest="mode", required=True)
    for name, func in (("seq", sequential), ("load", load)):
        p = sub.add_parser(name)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--path", default="/predict")
        p.add_argument("--body", type=Path, required=True, help="file holding the JSON body")
        p.add_argument("--pid", type=int, action="append", default=[], help="server process (repeatable)")
        p.set_defaults(func=func)
        if name == "seq":
            p.add_argument("--n", type=int, default=1000)
            p.add_argument("--warmup", type=int, default=100, help="untimed requests first")
        else:
            p.add_argument("--concurrency", type=int, default=32)
            p.add_argument("--duration", type=float, default=20.0, help="seconds measured")
            p.add_argument("--warmup", type=float, default=1.0, help="seconds of load before the window")
            p.add_argument("--rss-interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    result = args.func(args)
    print(json.dumps(result), flush=True)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
