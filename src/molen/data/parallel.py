"""Running many small file operations on a few threads.

Each thread takes a contiguous share of the work, instead of one task per file: with tens of
thousands of small files, scheduling a task per file costs more than the file itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from molen.progress import Progress

__all__ = ["run_parallel"]

T = TypeVar("T")
R = TypeVar("R")


def run_parallel(items: Sequence[T], work: Callable[[T], R], *, jobs: int, progress: Progress) -> list[R]:
    """``[work(item) for item in items]`` on up to ``jobs`` threads, in order; the first
    exception stops the rest and is raised."""
    if not items:
        return []
    from concurrent.futures import ThreadPoolExecutor  # imported here: `molen data status` needs none

    jobs = max(1, min(jobs, len(items)))
    share = (len(items) + jobs - 1) // jobs
    failed: list[BaseException] = []

    def run(start: int) -> list[R]:
        done: list[R] = []
        for item in items[start : start + share]:
            if failed:
                break
            try:
                done.append(work(item))
            except BaseException as exc:
                failed.append(exc)
                raise
            progress.advance()
        return done

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(run, start) for start in range(0, len(items), share)]
        results: list[R] = []
        for future in futures:
            if future.exception() is None:  # a failed share is re-raised below, first failure first
                results.extend(future.result())
    if failed:
        raise failed[0]
    return results
