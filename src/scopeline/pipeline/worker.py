"""A long-running worker: every stage's jobs, upstream first, one reserved job at a time, until stopped.

The same loop runs on every machine against one database (a systemd service, a SLURM array job with
``run_for`` below the wall time, a container). Each pass first makes the jobs of workers that are gone
pending again (:func:`scopeline.pipeline.jobs.reset_orphans`), then takes the first pending job of the
most upstream stage that has one, runs it (``populate`` of that key with a reservation: no two workers
run one job) and starts over; a pass that finds nothing sleeps, 1 s and doubling up to ``max_sleep``.

Stopping: SIGTERM or SIGINT during a job interrupts it; its reservation (DataJoint records the
interruption as an error job) is removed, so the job is pending again for any worker, and nothing of
it is kept (its insert is one transaction). A lost database connection (a server restart) is retried
with the same back-off for up to ``db_retry`` seconds; the job it interrupted is reset by the next
pass's orphan check, as its connection is gone.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import signal
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from scopeline.pipeline import jobs, stages

__all__ = ["WorkerStats", "run"]

_INTERRUPTED = ("SystemExit", "KeyboardInterrupt")


@dataclass
class WorkerStats:
    """What a worker did: jobs ``done`` and ``failed`` per stage, orphans ``reset``, and why it ``stopped``."""

    done: dict = field(default_factory=dict)
    failed: dict = field(default_factory=dict)
    reset: int = 0
    stopped: str = ""

    @property
    def n_jobs(self) -> int:
        return sum(self.done.values()) + sum(self.failed.values())


# MySQL / MariaDB client and server codes of a connection that went away: 0 (PyMySQL's InterfaceError on a
# closed connection), 1053 server shutdown in progress, 1927 connection killed (MariaDB), 2003 cannot connect,
# 2006 server has gone away, 2013 lost connection during query, 2055 lost connection (system error)
_LOST_CODES = frozenset({0, 1053, 1927, 2003, 2006, 2013, 2055})


def _is_lost_connection(err: BaseException) -> bool:
    from scopeline._dj import dj

    lost = getattr(dj.errors, "LostConnectionError", ())
    if isinstance(err, (lost, ConnectionError)):
        return True
    code = err.args[0] if err.args and isinstance(err.args[0], int) else None
    if type(err).__name__ in ("OperationalError", "InterfaceError") and code in _LOST_CODES:
        return True
    text = f"{type(err).__name__}: {err}".lower()
    return any(s in text for s in (
        "lost connection", "server has gone away", "connection refused", "can't connect", "connection already closed",
        "server closed the connection", "terminating connection", "could not connect", "broken pipe"))


def _release(table, key: dict) -> None:
    """Remove an interrupted job's record (error 'SystemExit' / 'KeyboardInterrupt', or still reserved by this
    connection): the job is pending again at the next refresh."""
    q = table.jobs & key
    for job in q.to_dicts():
        ours = job["status"] == "reserved" and int(job["connection_id"]) == int(table.connection.connection_id)
        if ours or (job["status"] == "error" and job["error_message"].startswith(_INTERRUPTED)):
            (table.jobs & key).delete_quick()


def _next_keys(table, limit: int = 20) -> list:
    table.jobs.refresh(delay=-1)
    return (table.jobs.pending & "scheduled_time <= CURRENT_TIMESTAMP(3)").keys(
        order_by="priority ASC, scheduled_time ASC", limit=limit)


def _one_job(chosen: list, stats: WorkerStats, log: Callable[[str], None]) -> Optional[bool]:
    """Run the first job that can be reserved; True when one ran, None when there was none, and raises
    SystemExit / KeyboardInterrupt (after releasing the job) when stopped."""
    host = platform.node()
    for stage in chosen:
        table = stage.computed
        for key in _next_keys(table):
            t0 = time.monotonic()
            try:
                out = table.populate(key, reserve_jobs=True, suppress_errors=True, max_calls=1, refresh=False)
            except (SystemExit, KeyboardInterrupt):
                _release(table, key)
                log(f"{stage.name} {_text(key)}: interrupted, job released")
                raise
            seconds = time.monotonic() - t0
            if out["success_count"]:
                stats.done[stage.name] = stats.done.get(stage.name, 0) + 1
                log(f"{stage.name} {_text(key)}: done in {seconds:.1f} s on {host}")
                return True
            if out["error_list"]:
                message = str(out["error_list"][0][1])
                if message.startswith(_INTERRUPTED):  # SIGINT inside the job: DataJoint recorded it, release
                    _release(table, key)
                    log(f"{stage.name} {_text(key)}: interrupted, job released")
                    raise KeyboardInterrupt
                stats.failed[stage.name] = stats.failed.get(stage.name, 0) + 1
                log(f"{stage.name} {_text(key)}: FAILED after {seconds:.1f} s on {host}: {message[:300]}")
                return True
            # reserved by another worker meanwhile: try the next key
    return None


def _text(key: dict) -> str:
    return "/".join(str(v) for v in key.values())


def run(stage_names: Optional[list] = None, *, max_jobs: Optional[int] = None, idle_exit: Optional[float] = None,
        run_for: Optional[float] = None, max_sleep: float = 60.0, orphan_timeout: float = jobs.ORPHAN_TIMEOUT,
        db_retry: float = 600.0, log: Callable[[str], None] = print) -> WorkerStats:
    """Run jobs until stopped (see the module).

    Parameters
    ----------
    stage_names : list of str, optional
        Only these stages' jobs (default every stage).
    max_jobs : int, optional
        Stop after this many jobs (done or failed).
    idle_exit : float, optional
        Stop after this many seconds without a job (default: wait for ever); time while the database
        cannot be reached does not count (the worker cannot tell whether work is waiting).
    run_for : float, optional
        Start no job after this many seconds (a batch job's wall time, less the longest job).
    max_sleep : float
        Longest sleep between passes that found nothing, s.
    orphan_timeout : float
        Seconds after which a reserved job whose worker cannot be seen is run again.
    db_retry : float
        Seconds a lost database connection is retried before the worker gives up (raises).
    log : callable
        Receives one line per job and per event.

    Returns
    -------
    WorkerStats
    """
    chosen = [stages.get(n) for n in stage_names] if stage_names else list(stages.STAGES)
    stats = WorkerStats()
    start = last_job = time.monotonic()
    sleep, lost_since = 1.0, None
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):  # DataJoint's populate installs the same for the time of a job
        raise SystemExit("SIGTERM received")

    signal.signal(signal.SIGTERM, on_term)
    log(f"worker {platform.node()} pid {os.getpid()} started {_dt.datetime.now():%Y-%m-%d %H:%M:%S}: stages "
        f"{', '.join(s.name for s in chosen)}")
    try:
        while True:
            if max_jobs is not None and stats.n_jobs >= max_jobs:
                stats.stopped = f"{max_jobs} job(s) run"
                break
            if run_for is not None and time.monotonic() - start >= run_for:
                stats.stopped = f"ran for {run_for:g} s"
                break
            try:
                reset = jobs.reset_orphans(orphan_timeout)
                for row in reset.itertuples(index=False):
                    log(f"{row.stage} {_text(row.key)}: orphaned (reserved by {row.host} pid {row.pid}, {row.reason}), "
                        "pending again")
                stats.reset += len(reset)
                ran = _one_job(chosen, stats, log)
                lost_since = None
            except (SystemExit, KeyboardInterrupt):
                raise
            except Exception as err:  # noqa: BLE001 - only a lost connection is retried
                if not _is_lost_connection(err):
                    raise
                lost_since = lost_since or time.monotonic()
                if time.monotonic() - lost_since > db_retry:
                    raise
                log(f"database unreachable ({type(err).__name__}: {str(err)[:120]}); retrying in {sleep:g} s")
                _reconnect()
                ran, last_job = None, time.monotonic()
            if ran:
                last_job, sleep = time.monotonic(), 1.0
                continue
            if idle_exit is not None and time.monotonic() - last_job >= idle_exit:
                stats.stopped = f"idle for {idle_exit:g} s"
                break
            time.sleep(sleep)
            sleep = min(sleep * 2, max_sleep)
    except (SystemExit, KeyboardInterrupt) as err:
        stats.stopped = "SIGTERM" if isinstance(err, SystemExit) else "interrupted"
    finally:
        signal.signal(signal.SIGTERM, previous)
    log(f"worker stopped ({stats.stopped}): {sum(stats.done.values())} done, {sum(stats.failed.values())} failed, "
        f"{stats.reset} orphaned job(s) reset")
    return stats


def _reconnect() -> None:
    """Try to open the pipeline's connection again (quietly: the next pass tells whether it worked)."""
    try:
        stages.STAGES[0].computed.connection.connect()
    except Exception:  # noqa: BLE001
        pass
