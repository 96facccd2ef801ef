"""The scopeline command, run as a user would (a subprocess against the test database)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import db_env, one_backend

from scopeline.core import simulate as sim
from scopeline.pipeline import acquisition

pytestmark = pytest.mark.db


def _run(args, env, ok=True):
    out = subprocess.run([sys.executable, "-m", "scopeline.cli", *map(str, args)], capture_output=True,
                         text=True, env=env, timeout=300)
    if ok:
        assert out.returncode == 0, out.stderr + out.stdout
    return out


def test_simulate_then_ingest(db, tmp_path):
    one_backend(db, "mysql")
    env = db_env(db["backend"], db["url"], db["prefix"])
    _run(["simulate", tmp_path / "sim", "--frames", 60, "--height", 48, "--width", 48, "--cells", 4,
          "--frames-per-file", 25, "--dropped", 1], env)
    gt = sim.load_ground_truth(tmp_path / "sim")
    assert gt["C"].shape == (4, 60) and len(gt["dropped_after"]) == 1
    out = _run(["ingest", tmp_path / "sim", "--subject", "cli_m1", "--session", "d1"], env)
    assert "1 recording(s) ingested, 0 already" in out.stdout
    info = (acquisition.RecordingInfo & {"subject": "cli_m1"}).fetch1()
    assert info["n_frames"] == 60 and info["n_dropped_frames"] == 1
    again = _run(["ingest", tmp_path / "sim", "-s", "cli_m1", "-d", "d1"], env)
    assert "0 recording(s) ingested, 1 already in the database" in again.stdout
    listing = _run(["ls"], env)
    assert "cli_m1" in listing.stdout


def test_ingest_bad_input_exit_code(db, tmp_path):
    env = db_env(db["backend"], db["url"], db["prefix"])
    (tmp_path / "empty").mkdir()
    out = _run(["ingest", tmp_path / "empty", "-s", "x", "-d", "y"], env, ok=False)
    assert out.returncode == 1
    assert "no recording found" in out.stderr and str(tmp_path / "empty") in out.stderr.replace("\n", "")
    assert not (acquisition.Recording & {"subject": "x"})


def test_simulate_multi_session(tmp_path):
    out = subprocess.run([sys.executable, "-m", "scopeline.cli", "simulate", str(tmp_path / "ms"), "--sessions", "2",
                          "--frames", "30", "--height", "40", "--width", "40", "--cells", "6"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.count("recording:") == 2
    assert (tmp_path / "ms" / "session_2" / sim.GROUND_TRUTH).exists()


def test_simulate_rejects_bad_parameters(tmp_path):
    out = subprocess.run([sys.executable, "-m", "scopeline.cli", "simulate", str(tmp_path / "x"), "--frames", "1"],
                         capture_output=True, text=True)
    assert out.returncode == 1 and "n_frames=1" in out.stderr
