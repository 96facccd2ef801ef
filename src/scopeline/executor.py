"""Where heavy work runs: the one place that chooses local threads, local processes or a dask.distributed
cluster, starts and stops it, and sets how many threads the compiled kernels use.

Configured once (:func:`configure`, or the environment):

========================  ====================================================================  =========
``SCOPELINE_DASK_SCHEDULER``  ``threads`` | ``processes`` (a local dask.distributed cluster) | the  ``threads``
                          address of a running scheduler (``tcp://host:8786``: dask-jobqueue,
                          dask-kubernetes and dask-gateway clusters all give one)
``SCOPELINE_WORKERS``     blocks processed at once (threads or local processes), and the threads  2
                          of the compiled kernels of initialization and CNMF
``SCOPELINE_MEMORY_LIMIT``  memory limit of each local worker process (dask's syntax, ``4GiB``)  none
========================  ====================================================================  =========

Motion correction streams blocks of frames through a dask.distributed client (:func:`client`,
:func:`stream`). Initialization and CNMF run on this process: their passes over the movie read the
next blocks on ``workers`` threads while the current one is computed (:func:`read_ahead`), and their
per-unit kernels split the units over ``workers`` threads (:func:`kernel_threads`). Every result is the
same whatever the number of workers (blocks are combined in order; each unit's sums run on one thread).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Optional, TypeVar

from scopeline.errors import ConfigurationError

__all__ = ["Settings", "settings", "configure", "client", "ship", "runs", "stream", "read_ahead", "kernel_threads",
           "current_workers", "with_workers"]

T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    """Where heavy work runs.

    Attributes
    ----------
    scheduler : str
        ``"threads"``, ``"processes"`` or a dask.distributed scheduler address.
    workers : int
        Blocks at once (local threads or processes; a scheduler address: its cluster decides), and
        kernel threads of initialization and CNMF (at most the cores).
    memory_limit : str, optional
        Per local worker process (e.g. ``"4GiB"``); None: no limit.
    """

    scheduler: str = "threads"
    workers: int = 2
    memory_limit: Optional[str] = None


_override: dict = {}
_current = {"workers": 1}


def _from_env() -> Settings:
    workers = os.environ.get("SCOPELINE_WORKERS", "2")
    try:
        n = int(workers)
    except ValueError:
        raise ConfigurationError(f"SCOPELINE_WORKERS={workers!r}: not a whole number") from None
    if n < 1:
        raise ConfigurationError(f"SCOPELINE_WORKERS={workers!r}: must be at least 1")
    return Settings(scheduler=os.environ.get("SCOPELINE_DASK_SCHEDULER", "threads") or "threads", workers=n,
                    memory_limit=os.environ.get("SCOPELINE_MEMORY_LIMIT") or None)


def settings() -> Settings:
    """The settings in force: the environment's, with what :func:`configure` changed on top."""
    return replace(_from_env(), **_override)


def configure(**changes) -> Settings:
    """Change the settings of this process (``scheduler``, ``workers``, ``memory_limit``; None leaves
    one as it is); returns the settings now in force.

    Raises
    ------
    ConfigurationError
        For fewer than one worker or an unknown setting.
    """
    unknown = set(changes) - {"scheduler", "workers", "memory_limit"}
    if unknown:
        raise ConfigurationError(f"unknown executor setting(s) {sorted(unknown)}")
    if changes.get("workers") is not None and int(changes["workers"]) < 1:
        raise ConfigurationError(f"workers={changes['workers']}: must be at least 1")
    _override.update({k: v for k, v in changes.items() if v is not None})
    return settings()


# --------------------------------------------------------------------------- dask.distributed


@contextlib.contextmanager
def client(workers: Optional[int] = None, scheduler: Optional[str] = None, memory_limit: Optional[str] = None):
    """A dask.distributed client for the duration of a stage: local threads, local processes, or a
    running cluster's scheduler (arguments left None take :func:`settings`).

    Raises
    ------
    ConfigurationError
        If a scheduler address cannot be reached.
    """
    import logging

    import dask
    from distributed import Client, LocalCluster

    s = settings()
    workers = workers or s.workers
    scheduler = scheduler or s.scheduler
    memory_limit = memory_limit if memory_limit is not None else s.memory_limit
    logging.getLogger("distributed").setLevel(logging.ERROR)
    if scheduler not in ("threads", "processes"):
        try:  # waits dask's distributed.comm.timeouts.connect (30 s unless configured)
            remote = Client(scheduler)
        except (OSError, TimeoutError) as err:
            raise ConfigurationError(f"SCOPELINE_DASK_SCHEDULER={scheduler!r}: cannot reach the scheduler ({err})") \
                from err
        with remote:
            yield remote
        return
    processes = scheduler == "processes"
    # no statistical profiler in the local workers: it walks every thread's stack each 10 ms holding
    # the GIL, and its records grow with the run (no dashboard shows them here)
    with dask.config.set({"distributed.worker.profile.enabled": False}), \
            LocalCluster(n_workers=workers if processes else 1, threads_per_worker=1 if processes else workers,
                         processes=processes, dashboard_address=None,
                         memory_limit=memory_limit if processes and memory_limit else 0) as cluster, \
            Client(cluster) as local:
        yield local


def ship(dask_client, job):
    """Send an object to every worker once (no content hashing: it may hold a large array)."""
    return dask_client.scatter(job, broadcast=True, hash=False)


def runs(starts: list[int], n: int) -> list[int]:
    """Block starts in the order they should run on ``n`` parallel workers: ``n`` contiguous runs,
    interleaved (run 0's first block, run 1's first block, ..., run 0's second block, ...).

    Each worker then mostly takes the block after its previous one, and a video reader its previous
    block left there continues without seeking (:class:`scopeline.core.io._VideoReaders`); blocks in
    plain order would have the workers read neighbouring blocks at the same time, each seeking.
    """
    n = max(1, min(n, len(starts)))
    size = math.ceil(len(starts) / n)
    return [starts[r * size + k] for k in range(size) for r in range(n) if r * size + k < len(starts)]


def stream(dask_client, fn, job_future, starts: list[int], report: Callable[[int], None],
           blocks: Optional[dict] = None):
    """Run ``fn(job, start[, block])`` for each block start on the cluster; yield ``(start, result)`` as
    each finishes.

    Blocks go in the order of :func:`runs`, at most two per worker thread submitted at a time (the next
    is submitted as one finishes), so memory is bounded by what runs and what waits to be consumed,
    whatever the movie's length. ``blocks``: inputs already read, by start, passed to ``fn`` as a third
    argument. ``report`` gets the result's ``frames`` (or its last item): the raw frames done.
    """
    from distributed import as_completed

    blocks = blocks or {}
    threads = sum(dask_client.nthreads().values())
    order = runs(starts, threads)
    futures = {}

    def submit(i: int):
        a = order[i]
        extra = [dask_client.scatter(blocks[a], hash=False)] if a in blocks else []
        future = dask_client.submit(fn, job_future, a, *extra, pure=False, priority=len(order) - i)
        futures[future] = a
        return future

    window = min(len(order), 2 * max(threads, 1))
    pending = as_completed([submit(i) for i in range(window)])
    for future in pending:
        result = future.result()
        future.release()
        if window < len(order):
            pending.add(submit(window))
            window += 1
        report(result.frames if hasattr(result, "frames") else result[-1])
        yield futures.pop(future), result


# ------------------------------------------------------------------------ this process


def current_workers() -> int:
    """Workers of the :func:`kernel_threads` block in force (1 outside one)."""
    return _current["workers"]


@contextlib.contextmanager
def kernel_threads(workers: Optional[int] = None):
    """Run a stage's compiled kernels and read-ahead on ``workers`` threads (default :func:`settings`;
    at most the cores numba may use), restoring the previous count after."""
    import numba

    n = max(1, min(int(workers or settings().workers), numba.config.NUMBA_NUM_THREADS))
    before_numba, before = numba.get_num_threads(), _current["workers"]
    numba.set_num_threads(n)
    _current["workers"] = n
    try:
        yield n
    finally:
        numba.set_num_threads(before_numba)
        _current["workers"] = before


def read_ahead(read: Callable[[int], T], starts, workers: Optional[int] = None) -> Iterator[tuple[int, T]]:
    """Yield ``(start, read(start))`` in order, reading up to ``workers`` starts ahead on threads while
    the caller works on the current one (one worker: plain, in this thread).

    ``read`` must be safe to call from several threads (reading a Zarr array is).
    """
    workers = current_workers() if workers is None else workers
    starts = list(starts)
    if workers <= 1 or len(starts) <= 1:
        for a in starts:
            yield a, read(a)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="scopeline-read") as pool:
        pending: deque = deque()
        ahead = iter(starts)
        for a in ahead:
            pending.append((a, pool.submit(read, a)))
            if len(pending) >= workers:
                break
        while pending:
            a, future = pending.popleft()
            nxt = next(ahead, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(read, nxt)))
            yield a, future.result()


def with_workers(fn):
    """Give a stage's core entry point a ``workers`` keyword (default :func:`settings`): it runs inside
    :func:`kernel_threads` with that many threads."""

    @functools.wraps(fn)
    def wrapper(*args, workers: Optional[int] = None, **kwargs):
        with kernel_threads(workers):
            return fn(*args, **kwargs)

    return wrapper
