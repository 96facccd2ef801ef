"""Fault corpus: bad identifiers and option values get a clear message naming the value, and nothing is
written outside its folder or half-written in the database (see the README's reliability section)."""

from __future__ import annotations

import shutil
import subprocess
import sys
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
