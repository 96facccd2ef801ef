"""Fault corpus: bad identifiers and option values, a full, read-only or missing object store, recordings
gone after ingest and a data root this user may not read each get a clear message naming the value,
file or store, and nothing is written outside its folder, half-written, or lost (the job runs once the
cause is fixed). The README's reliability section lists them with test_workers' faults."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from scopeline.pipeline import keys


@pytest.mark.parametrize("value", ["../../x", "a/b", "..", ".hidden", "a\\b", "", "day 1", "x" * 65, "-rf"])
def test_path_like_ids_are_refused_by_name(value):
    with pytest.raises(keys.IdentifierError, match="subject id"):
        keys.check_id("subject", value)


@pytest.mark.parametrize("value", ["m1", "2026_11_21", "M-12.b", "sess+1", "x" * 64])
def test_usual_ids_pass(value):
    assert keys.check_id("session", value) == value


def test_file_names_stay_in_their_folder_whatever_the_database_holds(tmp_path):
    hostile = {"subject": "../../etc", "session": "/abs/path", "recording_id": 0, "motion_paramset": "..\\x"}
    stem = keys.name(hostile)
    assert "/" not in stem and "\\" not in stem and ".." not in stem and not stem.startswith(".")
    target = (tmp_path / f"{stem}_motion.png").resolve()
    assert target.parent == tmp_path.resolve()
    for part in ("..", ".", "../a", "a/../../b"):
        assert (tmp_path / keys.file_part(part)).resolve().parent == tmp_path.resolve()


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "scopeline.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env)


def test_option_values_are_checked_on_their_own(tmp_path):
    out = _cli("ingest", tmp_path, "--fps", "-5", "-s", "m1", "-d", "d1")
    assert out.returncode == 2 and "--fps" in out.stderr and "greater than or equal" in out.stderr


@pytest.mark.db
def test_ingest_refuses_a_path_like_subject_and_inserts_nothing(db, sim_cells, tmp_path):
    from conftest import db_env

    from scopeline.pipeline.subject import Subject

    env = {**db_env(db["backend"], db["url"], db["prefix"], db["store"]), "SCOPELINE_HOME": str(tmp_path / "home")}
    data = tmp_path / "rec"
    shutil.copytree(sim_cells, data)
    out = _cli("ingest", data, "-s", "../../x", "-d", "d1", env=env)
    assert out.returncode == 1 and "subject id '../../x'" in out.stderr, out.stderr
    assert not Subject() and not list(Path(tmp_path).parent.glob("x"))
    bad_session = _cli("ingest", data, "-s", "m1", "-d", "a/b", env=env)
    assert bad_session.returncode == 1 and "session id 'a/b'" in bad_session.stderr
    assert not Subject()


# ------------------------------------------------------------------ the store and the data root
# Full and read-only stores are real file systems (a small tmpfs, a read-only bind mount) mounted over one
# subject's folder of the test store; mounting needs root (CI runs as root): elsewhere those tests skip.


@contextmanager
def _mounted(target: Path, *commands: list):
    target.mkdir(parents=True, exist_ok=True)
    for i, command in enumerate(commands):
        out = subprocess.run(command, capture_output=True, text=True)
        if out.returncode:
            if i:
                subprocess.run(["umount", str(target)])
            pytest.skip(f"cannot mount a test file system here (needs root): {out.stderr.strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


def _motion_queued(sim_cells, tmp_path, subject: str) -> dict:
    from scopeline.pipeline import motion, presets
    from scopeline.pipeline.ingest import ingest

    data = tmp_path / subject
    shutil.copytree(sim_cells, data)
    (rec,) = ingest(data, subject, "d1")
    presets.queue([rec.key], presets.stage_paramsets("default"), "motion")
    return presets.result_key(rec.key, "default", "motion") | {"_data": data, "_table": motion.MotionCorrection}


def _subject_folder(db, table, subject: str) -> Path:
    return Path(db["store"]) / "_schema" / table.database / table.__name__ / f"subject={subject}"


def _populate_once(key: dict) -> list:
    """Populate the key's motion correction in this process; return its failed jobs' messages."""
    table = key["_table"]
    restriction = {k: v for k, v in key.items() if not k.startswith("_")}
    table.populate(restriction, reserve_jobs=True, suppress_errors=True)
    return [j["error_message"] for j in (table.jobs.errors & restriction).to_dicts()]


def _retried(key: dict) -> None:
    """Nothing was lost: once the cause is gone, the failed job runs again and makes its row."""
    table = key["_table"]
    restriction = {k: v for k, v in key.items() if not k.startswith("_")}
    (table.jobs & restriction).delete_quick()
    assert not _populate_once(key) and len(table & restriction) == 1


@pytest.mark.db
def test_a_full_store_fails_the_job_with_the_reason_and_keeps_nothing(db, sim_cells, tmp_path):
    key = _motion_queued(sim_cells, tmp_path, "full")
    folder = _subject_folder(db, key["_table"], "full")
    with _mounted(folder, ["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(folder)]):
        (message,) = _populate_once(key)
        assert message.startswith("StoreWriteError: object store at ") and "is full" in message, message
        assert "No space left on device" in message and "scopeline populate --retry-errors" in message
        assert not key["_table"]() and not [p for p in folder.rglob("*") if p.is_file()]  # no row, no half movie
    _retried(key)


@pytest.mark.db
def test_a_read_only_store_folder_fails_the_job_with_the_reason(db, sim_cells, tmp_path):
    key = _motion_queued(sim_cells, tmp_path, "ro")
    folder = _subject_folder(db, key["_table"], "ro")
    with _mounted(folder, ["mount", "--bind", str(folder), str(folder)],
                  ["mount", "-o", "remount,bind,ro", str(folder)]):
        (message,) = _populate_once(key)
        assert "is read-only (Read-only file system: " in message and str(folder) in message, message
        assert "give this machine write access" in message and not key["_table"]()
    _retried(key)


def _store_env(db, tmp_path, location: Path) -> dict:
    from conftest import db_env

    env = {**db_env(db["backend"], db["url"], db["prefix"], db["store"]), "SCOPELINE_HOME": str(tmp_path / "home")}
    env["DJ_STORES"] = json.dumps({"default": "lab", "lab": {"protocol": "file", "location": str(location)}})
    return env


@pytest.mark.db
def test_a_missing_store_is_refused_before_any_job_is_taken(db, sim_cells, tmp_path):
    key = _motion_queued(sim_cells, tmp_path, "nostore")
    missing = tmp_path / "mnt" / "lab-store"
    env = _store_env(db, tmp_path, missing)
    for command in (["populate"], ["worker", "--idle-exit", "0"]):
        out = _cli(*command, env=env)
        assert out.returncode == 2, out.stdout + out.stderr
        assert f"object store 'lab' at {missing}: no such folder (a network share not mounted?)" in out.stderr
    assert not missing.exists() and not key["_table"].jobs and not key["_table"]()  # nothing created or taken


@pytest.mark.db
def test_a_read_only_store_is_refused_before_any_job_is_taken(db, sim_cells, tmp_path):
    key = _motion_queued(sim_cells, tmp_path, "rostore")
    root = tmp_path / "lab-store"
    with _mounted(root, ["mount", "--bind", str(root), str(root)], ["mount", "-o", "remount,bind,ro", str(root)]):
        out = _cli("populate", env=_store_env(db, tmp_path, root))
    assert out.returncode == 2 and f"object store 'lab' at {root}: this machine cannot write there" in out.stderr
    assert not key["_table"].jobs and not key["_table"]()


@pytest.mark.db
def test_recording_files_gone_after_ingest_fail_the_job_naming_the_file(db, sim_cells, tmp_path):
    from scopeline.pipeline import acquisition

    key = _motion_queued(sim_cells, tmp_path, "gone")
    movie = sorted(key["_data"].rglob("*.avi"))[0]
    moved = movie.rename(tmp_path / "kept.avi")
    (message,) = _populate_once(key)
    assert f"{movie}: cannot be opened" in message and "No such file or directory" in message, message
    assert acquisition.Recording & {"subject": "gone"} and not key["_table"]()  # the recording is kept
    moved.rename(movie)
    _retried(key)


def _unprivileged() -> list:
    """A command prefix that runs without root's power to read any file (as root: setpriv dropping the
    DAC capabilities); [] for a user whose permissions already apply."""
    if os.geteuid():
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv (util-linux): file permissions cannot be denied")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]


@pytest.mark.db
def test_permission_denied_on_the_data_root_names_the_folder_and_inserts_nothing(db, sim_cells, tmp_path):
    from scopeline.pipeline.subject import Subject

    data = tmp_path / "perm"
    shutil.copytree(sim_cells, data)
    locked = sorted(p.parent for p in data.rglob("*.avi"))[0]
    env = _store_env(db, tmp_path, db["store"])
    locked.chmod(0)
    try:
        out = subprocess.run([*_unprivileged(), sys.executable, "-m", "scopeline.cli", "ingest", str(data), "-s",
                              "perm", "-d", "d1"], capture_output=True, text=True, timeout=300, env=env)
    finally:
        locked.chmod(0o755)
    assert out.returncode == 1 and str(locked) in out.stderr and "ermission denied" in out.stderr, out.stderr
    assert not Subject & {"subject": "perm"}
