"""Jobs across workers: every stage's job queue in one view, and reserved jobs whose worker is gone
made pending again.

DataJoint 2.x reserves a job with the reserving connection's id, host, pid and user, but resets a
reserved job only when ``jobs.refresh(orphan_timeout=...)`` is called, by age: a worker killed with
SIGKILL (or a machine that lost power) leaves its jobs reserved for ever and the chain after them
never runs. Here a reserved job is an **orphan** when:

- its reserving connection is no longer open on the server (MySQL / MariaDB
  ``information_schema.PROCESSLIST``, PostgreSQL ``pg_stat_activity``): a killed process's connection
  closes with it, so this is immediate and exact. Connection ids start again when the server
  restarts, so a reservation older than the server (or, on PostgreSQL, than the connection now
  holding its id) is not that connection's. The server lists every user's connections to a
  user with the PROCESS privilege (MySQL) and always on PostgreSQL; otherwise only one's own, and a
  job reserved by another user is judged by the fallback;
- or, where the connection's liveness cannot be seen, the job was reserved more than
  ``orphan_timeout`` seconds ago (the fallback; default 24 h).

Resetting an orphan deletes its reservation only if it is still the same reservation (status,
connection id and reservation time unchanged: a worker that took it meanwhile keeps it); the next
``populate`` adds it back as pending. Nothing a job wrote survives its failure: inserts are atomic,
and store objects of a job that died between computing and inserting are orphans for ``scopeline gc``.
"""

from __future__ import annotations

import datetime as _dt
from typing import Optional

import pandas as pd

from scopeline.pipeline import stages

__all__ = ["ORPHAN_TIMEOUT", "jobs", "orphans", "reset_orphans"]

#: seconds after which a reserved job whose connection cannot be seen is taken for an orphan
ORPHAN_TIMEOUT = 24 * 3600.0

_COLUMNS = ["stage", "table", "key", "status", "host", "pid", "connection_id", "user", "reserved_time", "age_s",
            "alive", "error_message"]


def _postgres(conn) -> bool:
    return "postgres" in type(conn.adapter).__name__.lower()


def _live_connections(conn) -> tuple[dict, bool, _dt.datetime]:
    """The connections open on the server (id -> when it opened, None where the server does not say), whether
    that list shows every user's, and when the server started (server clock): ids start again after a
    restart, so a reservation older than the server, or than the connection with its id, is not that
    connection's."""
    if _postgres(conn):
        rows = conn.query("SELECT pid, backend_start FROM pg_stat_activity").fetchall()
        started = conn.query("SELECT pg_postmaster_start_time()").fetchone()[0]
        return ({int(r[0]): _naive(r[1]) for r in rows}, True, _naive(started))
    rows = conn.query("SELECT ID FROM information_schema.PROCESSLIST").fetchall()
    grants = " ".join(str(g[0]) for g in conn.query("SHOW GRANTS").fetchall()).upper()
    every = "ALL PRIVILEGES ON *.*" in grants or any(
        "PROCESS" in g.split(" ON ")[0] for g in grants.split("GRANT ") if " ON *.*" in g)
    uptime = int(conn.query("SHOW GLOBAL STATUS LIKE 'Uptime'").fetchone()[1])
    return ({int(r[0]): None for r in rows}, every, _server_now(conn) - _dt.timedelta(seconds=uptime + 1))


def _naive(t):
    """A server timestamp as naive time of the database session's zone (the drivers give aware ones in that
    zone; DataJoint's datetime(3) columns hold the same wall clock without it)."""
    return t if t is None else t.replace(tzinfo=None)


def _reserver_alive(job: dict, live: dict, server_start: _dt.datetime) -> bool:
    reserved = job["reserved_time"]
    cid = int(job["connection_id"])
    if cid not in live:
        return False
    if reserved is None:
        return True
    reserved = reserved.replace(tzinfo=None)
    opened = live[cid]
    return reserved >= server_start and (opened is None or opened <= reserved + _dt.timedelta(seconds=1))


def _server_now(conn) -> _dt.datetime:
    return _naive(conn.query("SELECT CURRENT_TIMESTAMP(3)").fetchone()[0])


def jobs(stage: Optional[str] = None, status: Optional[str] = None) -> pd.DataFrame:
    """Every stage's jobs that are not done: one row per reserved, failed or ignored job (pending ones
    too when ``status="pending"``).

    Parameters
    ----------
    stage : str, optional
        Only this stage's (default every stage).
    status : str, optional
        ``reserved``, ``error``, ``ignore`` or ``pending`` (default: reserved, error and ignore).

    Returns
    -------
    pandas.DataFrame
        ``stage``, ``table``, ``key`` (the job's primary key, dict), ``status``, ``host``, ``pid``,
        ``connection_id``, ``user``, ``reserved_time``, ``age_s`` (s since reserved, server clock),
        ``alive`` (reserved jobs: True / False where the server shows whether the reserving connection is
        open, None where it cannot tell), ``error_message``.
    """
    wanted = [status] if status else ["reserved", "error", "ignore"]
    rows = []
    live, every, now, me, server_start = None, False, None, None, None
    for st in stages.STAGES if stage is None else [stages.get(stage)]:
        table = st.computed
        if not table.jobs.is_declared:
            continue
        for job in (table.jobs & [{"status": s} for s in wanted]).to_dicts():
            alive = None
            age = None
            if job["status"] == "reserved":
                if live is None:
                    conn = table.connection
                    live, every, server_start = _live_connections(conn)
                    now, me = _server_now(conn), conn.get_user()
                if every or job["user"] == me:
                    alive = _reserver_alive(job, live, server_start)
                if job["reserved_time"] is not None:
                    age = (now - job["reserved_time"].replace(tzinfo=None)).total_seconds()
            rows.append({"stage": st.name, "table": table.__name__,
                         "key": {k: job[k] for k in table.primary_key}, "status": job["status"],
                         "host": job["host"], "pid": job["pid"], "connection_id": job["connection_id"],
                         "user": job["user"], "reserved_time": job["reserved_time"], "age_s": age, "alive": alive,
                         "error_message": job["error_message"]})
    return pd.DataFrame(rows, columns=_COLUMNS)


def orphans(orphan_timeout: float = ORPHAN_TIMEOUT, stage: Optional[str] = None) -> pd.DataFrame:
    """Reserved jobs whose worker is gone (see the module), with a ``reason``."""
    frame = jobs(stage, "reserved")
    gone = frame["alive"].eq(False)
    stale = frame["alive"].isna() & (frame["age_s"].astype(float) > orphan_timeout)
    out = frame[gone | stale].copy()
    out["reason"] = ["connection closed" if g else f"reserved {a / 3600:.1f} h ago, liveness unknown"
                     for g, a in zip(gone[gone | stale], out["age_s"])]
    return out


def reset_orphans(orphan_timeout: float = ORPHAN_TIMEOUT, stage: Optional[str] = None) -> pd.DataFrame:
    """Make orphaned jobs pending again (see the module): each reservation is removed only if it is still
    the one judged orphaned; the next ``populate`` queues the job anew.

    Returns
    -------
    pandas.DataFrame
        The jobs reset (as :func:`orphans`).
    """
    found = orphans(orphan_timeout, stage)
    done = []
    for row in found.itertuples(index=False):
        table = stages.get(row.stage).computed
        same = {**row.key, "status": "reserved", "connection_id": row.connection_id}
        q = table.jobs & same
        if row.reserved_time is not None:
            q = q & {"reserved_time": row.reserved_time}
        if len(q) == 1:
            q.delete_quick()
            done.append(True)
        else:
            done.append(False)
    return found[pd.Series(done, index=found.index, dtype=bool)] if len(found) else found
