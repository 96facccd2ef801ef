"""Workers that survive faults (real servers, both backends): a worker killed with SIGKILL in the middle
of each heavy stage leaves an orphaned job that the next worker (or populate) runs again, with the same
result as an uninterrupted run; SIGTERM releases the job in hand; `scopeline jobs` shows who holds what."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import db_env, one_backend

from scopeline.pipeline import cnmf, initialization, jobs, motion, presets, stages

pytestmark = pytest.mark.db

HEAVY = {"motion": motion.MotionCorrection, "initialization": initialization.Initialization, "cnmf": cnmf.CNMF}


def _env(db, tmp_path):
    return {**db_env(db["backend"], db["url"], db["prefix"], db["store"]), "SCOPELINE_HOME": str(tmp_path / "home")}


def _cli(args, env, ok=True, timeout=600):
    out = subprocess.run([sys.executable, "-m", "scopeline.cli", *map(str, args)], capture_output=True, text=True,
                         env=env, timeout=timeout)
    if ok:
        assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-3000:]
    return out


def _worker(env, *args):
    return subprocess.Popen([sys.executable, "-m", "scopeline.cli", "worker", "--max-sleep", "1", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


# The CLI, with one stage's make_insert stalled: its job has been computed (store objects written) but not
# inserted when the test's signal lands, whatever the machine's speed (a sleep after the reservation is a
# race: a fast machine finishes the job first).
_STALL = r"""
import sys, time
from scopeline.cli import app
from scopeline.pipeline import stages
stage, marker = sys.argv[1], sys.argv[2]
def stall(self, *args, **kwargs):
    open(marker, "w").write(stage)
    time.sleep(3600)
stages.get(stage).computed.make_insert = stall
sys.argv = ["scopeline", *sys.argv[3:]]
app()
"""


def _stalled(env, tmp_path, stage, *args, output=True):
    """A ``scopeline`` process (``args``) that stalls in ``stage``'s insert; returns it once stalled."""
    marker = tmp_path / f"stalled-{stage}"
    marker.unlink(missing_ok=True)
    pipe = dict(stdout=subprocess.PIPE, stderr=subprocess.STDOUT) if output else \
        dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc = subprocess.Popen([sys.executable, "-c", _STALL, stage, str(marker), *map(str, args)], text=True,
                            env=env, **pipe)
    t0 = time.monotonic()
    while not marker.exists():
        assert proc.poll() is None, proc.stdout.read()[-3000:] if output else proc.returncode
        assert time.monotonic() - t0 < 300, f"{stage}: no job reached its insert within 300 s"
        time.sleep(0.05)
    return proc


def _wait_reserved(table, proc, timeout=300.0):
    """Wait until ``proc`` holds a job of ``table`` (its reservation visible), then return it."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        held = table.jobs.reserved.to_dicts()
        if held:
            return held[0]
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.05)
    raise AssertionError(f"no {table.__name__} job reserved within {timeout} s")


def _ingest(sim_cells, tmp_path, env, subject):
    """A copy of ``sim_cells`` ingested as ``subject``/d1 with the default chain queued (in this process)."""
    from scopeline.pipeline.ingest import ingest

    data = tmp_path / subject
    shutil.copytree(sim_cells, data)
    (rec,) = ingest(data, subject, "d1")
    presets.queue([rec.key], presets.stage_paramsets("default"), "cnmf")
    return presets.result_key(rec.key, "default", "cnmf")


def test_sigkill_in_each_heavy_stage_then_another_worker_finishes_with_the_same_result(db, sim_cells, tmp_path):
    """On both backends (each sees a dead worker its own way: PROCESSLIST / pg_stat_activity): a kill in each
    heavy stage on MariaDB, in CNMF on PostgreSQL; the comparison with an uninterrupted run and the garbage
    collection, which do not depend on the server, run on MariaDB."""
    env = _env(db, tmp_path)
    key = _ingest(sim_cells, tmp_path, env, "wk1")
    killed = HEAVY if db["backend"] == "mysql" else {"cnmf": HEAVY["cnmf"]}
    for name, table in killed.items():
        proc = _stalled(env, tmp_path, name, "worker", "--max-sleep", "1")
        job = _wait_reserved(table, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert not (table & key), f"{name}: a row of the killed job"
        # the job shows as held by a worker that is gone, then is made pending again
        held = jobs.jobs(name, "reserved")
        deadline = time.monotonic() + 20  # the server notices the closed connection
        while held["alive"].tolist() != [False] and time.monotonic() < deadline:
            time.sleep(0.2)
            held = jobs.jobs(name, "reserved")
        assert held["alive"].tolist() == [False] and held["pid"].tolist() == [job["pid"]], held
        listed = _cli(["jobs"], env).stdout
        assert "gone" in listed and name in listed
        done = _cli(["worker", "--idle-exit", "0", "--stage", name, "--max-sleep", "0.2"], env).stdout
        assert "orphaned" in done and f"{name} " in done and "done in" in done, done
        assert len(table & key) == 1 and not table.jobs.reserved and not table.jobs.errors
    if db["backend"] != "mysql":
        return
    # an uninterrupted run of the same data gives the same units
    other = _ingest(sim_cells, tmp_path, env, "wk2")
    for stage in stages.STAGES:
        assert not stage.computed.populate(other, reserve_jobs=True, suppress_errors=True)["error_list"]
    a = (cnmf.CNMF.Unit & key).to_dicts(order_by="unit_id")
    b = (cnmf.CNMF.Unit & other).to_dicts(order_by="unit_id")
    assert len(a) == len(b) > 0
    np.testing.assert_allclose([u["centroid_y"] for u in a], [u["centroid_y"] for u in b], atol=1e-3)
    status = json.loads(_cli(["status", "--json"], env).stdout)
    assert all(r["reserved"] == 0 and r["error"] == 0 for r in status)
    # what the killed jobs had written is garbage for scopeline gc; what the rows refer to stays
    stray = db["store"] / "_schema" / motion.schema.database / "MotionCorrection" / "subject=gone" / "movie_x.zarr"
    stray.mkdir(parents=True)
    (stray / "zarr.json").write_text("{}")  # as a worker killed before its insert leaves it
    collected = _cli(["gc"], env).stdout
    assert "unreferenced object(s)" in collected and "removed" in collected, collected
    assert not (stray / "zarr.json").exists()
    again = _cli(["gc", "--dry-run"], env).stdout
    assert "0 unreferenced object(s)" in again, again
    movie = (motion.MotionCorrection & key).open_movie()
    assert movie.shape[0] == 400 and float(movie[10].mean()) > 0  # the stored movie still reads
    assert len(cnmf.CNMF.Unit & key) and (cnmf.CNMF.Unit & key).to_dicts()[0]["trace"] is not None


def test_sigterm_releases_the_job_and_populate_resets_orphans(db, sim_cells, tmp_path):
    one_backend(db, "postgresql")
    env = _env(db, tmp_path)
    key = _ingest(sim_cells, tmp_path, env, "wk3")
    proc = _stalled(env, tmp_path, "initialization", "worker", "--max-sleep", "1")
    _wait_reserved(initialization.Initialization, proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "interrupted, job released" in out and "SIGTERM" in out, out
    assert not initialization.Initialization.jobs.reserved and not initialization.Initialization.jobs.errors
    assert not (initialization.Initialization & key)
    # a populate killed during CNMF: the next populate says so and runs the job again
    proc = _stalled(env, tmp_path, "cnmf", "populate", output=False)
    _wait_reserved(cnmf.CNMF, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    time.sleep(1.0)
    again = _cli(["populate"], env).stdout
    assert "orphaned job reset" in again and "CNMF: 1 done" in again, again
    assert len(cnmf.CNMF & key) == 1


def test_a_live_worker_keeps_its_job(db, tmp_path):
    """A reservation whose connection is open is never taken for an orphan, however old; one whose
    connection closed is, at once."""
    env = _env(db, tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=env)
    try:
        lines = iter(holder.stdout.readline, "")
        assert any(line.strip() == "reserved" for line in lines)  # (after DataJoint's own log lines)
        held = jobs.jobs("acquisition", "reserved")
        assert held["alive"].tolist() == [True]
        assert jobs.orphans(orphan_timeout=0).empty  # alive: not even the age fallback applies
        holder.stdin.write("go\n")
        holder.stdin.flush()
        holder.wait(timeout=30)
        deadline = time.monotonic() + 20
        while jobs.orphans().empty and time.monotonic() < deadline:
            time.sleep(0.2)
        reset = jobs.reset_orphans()
        assert len(reset) == 1 and reset.iloc[0]["reason"] == "connection closed"
        assert not jobs.jobs("acquisition", "reserved").shape[0]
    finally:
        if holder.poll() is None:
            holder.kill()


# a process that reserves a RecordingInfo job for a recording it inserts, says so, and dies holding it
_HOLD = r"""
import os, sys
import scopeline.pipeline as pl
from scopeline.pipeline import acquisition, session, subject
pl.activate()
subject.Subject.insert1({"subject": "wkhold"}, skip_duplicates=True)
session.Session.insert1({"subject": "wkhold", "session": "d1"}, skip_duplicates=True)
acquisition.Recording.insert1({"subject": "wkhold", "session": "d1", "recording_id": 0,
                               "acquisition_system": "miniscope_v4", "recording_path": "/nonexistent"},
                              skip_duplicates=True, ignore_extra_fields=True)
jobs = acquisition.RecordingInfo.jobs
jobs.refresh(delay=-1)
assert jobs.reserve({"subject": "wkhold", "session": "d1", "recording_id": 0})
print("reserved", flush=True)
sys.stdin.readline()
os._exit(0)
"""


def _tiny(tmp_path, n: int) -> list:
    """``n`` short simulated recordings (48 x 48, 200 frames: motion correction needs its template) under ``tmp_path``."""
    from scopeline.core import simulate as sim

    out = []
    for k in range(n):
        folder = tmp_path / f"rec{k}"
        sim.simulate(folder, sim.SimulationParams(height=48, width=48, n_frames=200, n_cells=4, seed=100 + k))
        out.append(folder)
    return out


def test_six_workers_on_twelve_recordings_do_every_job_exactly_once(db, tmp_path):
    """A load test (loopback): six workers share twelve motion corrections; their job logs and the table
    agree, one line and one row per job."""
    one_backend(db, "mysql")
    env = _env(db, tmp_path)
    from scopeline.pipeline.ingest import ingest

    recs = [ingest(folder, "wkload", f"d{k:02d}")[0].key for k, folder in enumerate(_tiny(tmp_path, 12))]
    presets.queue(recs, presets.stage_paramsets("default"), "motion")
    procs = [_worker(env, "--stage", "motion", "--idle-exit", "3") for _ in range(6)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    done = [line.split(" motion ")[1].split(":")[0] for log in logs for line in log.splitlines()
            if " motion " in line and "done in" in line]
    assert len(done) == len(set(done)) == 12, done
    assert len(motion.MotionCorrection & {"subject": "wkload"}) == 12
    assert sum(1 for log in logs if "done in" in log) >= 2  # the work was shared
    assert not motion.MotionCorrection.jobs.reserved and not motion.MotionCorrection.jobs.errors


def test_workers_survive_a_database_restart(tmp_path):
    """Two workers on scopeline's private server; the server is stopped and started again while they run:
    both recover and finish, every job done once."""

    if not (shutil.which("mariadbd") or shutil.which("mysqld") or os.path.exists("/usr/sbin/mariadbd")):
        pytest.skip("no MariaDB / MySQL server binary")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJ_", "SCOPELINE_"))}
    env.update({"SCOPELINE_HOME": str(tmp_path / "home"), "SCOPELINE_SCHEMA_PREFIX": "wkrestart_"})
    try:
        for k, folder in enumerate(_tiny(tmp_path, 4)):
            _cli(["ingest", folder, "-s", "wkdb", "-d", f"d{k}"], env)
        _cli(["task", "motion", "-s", "wkdb"], env)
        procs = [_worker(env, "--stage", "motion", "--idle-exit", "8") for _ in range(2)]  # the outage does not count
        time.sleep(5)  # the workers are at work (or waiting for it: both must live through the restart)
        assert _cli(["db", "down"], env).returncode == 0
        time.sleep(3)
        assert _cli(["db", "up"], env).returncode == 0
        logs = [p.communicate(timeout=600)[0] for p in procs]
        assert all(p.returncode == 0 for p in procs), logs
        status = {r["table"]: r for r in json.loads(_cli(["status", "--json"], env).stdout)}
        assert status["MotionCorrection"]["done"] == 4 and status["MotionCorrection"]["reserved"] == 0, (status, logs, _cli(["jobs"], env).stdout)
        assert status["MotionCorrection"]["error"] == 0, _cli(["populate"], env, ok=False).stdout
        done = [line.split(" motion ")[1].split(":")[0] for log in logs for line in log.splitlines()
                if " motion " in line and "done in" in line]
        assert len(done) == len(set(done)) == 4, logs
    finally:
        subprocess.run([sys.executable, "-m", "scopeline.cli", "db", "down"], env=env, capture_output=True, timeout=120)


def test_lost_connections_are_told_from_other_errors():
    """What the workers retry: the errors PyMySQL and psycopg2 raise while a server restarts (including a query
    that arrives during shutdown, and a closed connection's empty InterfaceError), never an ordinary error."""
    import psycopg2
    import pymysql

    from scopeline.pipeline.worker import _is_lost_connection

    lost = [pymysql.err.InterfaceError(0, ""), pymysql.err.OperationalError(1053, "Server shutdown in progress"),
            pymysql.err.OperationalError(2013, "Lost connection to MySQL server during query"),
            pymysql.err.OperationalError(2003, "Can't connect to MySQL server on '127.0.0.1'"),
            psycopg2.OperationalError("server closed the connection unexpectedly"),
            psycopg2.InterfaceError("connection already closed"), ConnectionResetError(104, "Connection reset by peer")]
    other = [pymysql.err.OperationalError(1054, "Unknown column 'x' in 'field list'"),
             pymysql.err.IntegrityError(1062, "Duplicate entry"), ValueError("bad"), OSError(28, "No space left")]
    assert all(_is_lost_connection(e) for e in lost)
    assert not any(_is_lost_connection(e) for e in other)
