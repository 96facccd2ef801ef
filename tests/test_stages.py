"""The stage seam: a stage registered with one module and one line shows in status, populate,
paramset ls, presets, JSON Schemas and the query layer with no other edit; result keys come from the
registry; a lab server needs a store; two machines with their own homes and data mounts share one chain."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import db_env, one_backend

from scopeline import query, schemas
from scopeline.pipeline import cnmf, keys, motion, presets, stages

PLUGINS = Path(__file__).resolve().parent / "plugins"
sys.path.insert(0, str(PLUGINS))
import unit_peak  # noqa: E402


@contextlib.contextmanager
def registered():
    """unit_peak registered (its schema activated when a pipeline is); dropped and unregistered after."""
    stages.register(unit_peak.STAGE)
    try:
        yield unit_peak.STAGE
    finally:
        if unit_peak.schema.is_activated():
            connection = unit_peak.schema.connection
            unit_peak.schema.drop(prompt=False)
            connection.dependencies.load()  # the cascade of later deletes must not look for its tables
        stages.unregister("peak")


def _cli(args, env, ok=True):
    out = subprocess.run([sys.executable, "-m", "scopeline.cli", *map(str, args)], capture_output=True, text=True,
                         env=env, timeout=600)
    if ok:
        assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-3000:]
    return out


def test_result_fields_come_from_the_stage_registry():
    assert keys.fields("motion") == ("subject", "session", "recording_id", "motion_paramset")
    assert keys.fields("cnmf")[-1] == "cnmf_paramset" and len(keys.fields("cnmf")) == 6
    assert keys.restriction(subject="m", init="x", cnmf_paramset="y", motion=None) == {
        "subject": "m", "init_paramset": "x", "cnmf_paramset": "y"}
    assert stages.get("init") is stages.get("initialization")
    with pytest.raises(stages.StageError, match="unknown stage 'nope'.*motion, initialization, cnmf"):
        stages.get("nope")
    key = presets.result_key({"subject": "a", "session": "b", "recording_id": 0, "other": 1}, "cnmfe")
    assert key == {"subject": "a", "session": "b", "recording_id": 0, "motion_paramset": "default",
                   "init_paramset": "cnmfe", "cnmf_paramset": "cnmfe"}
    assert keys.name(key) == "a_b_0_default_cnmfe_cnmfe"
    # the parameter-set tables come from one declaration: same shape for every stage
    for s in stages.with_params():
        assert s.paramset.definition.split("\n")[2].startswith(s.key_attr)
        assert s.task.definition.strip().endswith(f"-> {s.paramset.__name__}")


def test_registered_stage_shows_in_presets_and_schemas_without_a_database():
    with registered():
        assert [s.name for s in stages.STAGES][-1] == "peak"
        assert presets.stage_paramsets("default")["peak"] == "default"
        assert presets.stage_paramsets("minian")["peak"] == "default"  # no "minian" of its own
        assert "peak" in schemas.schemas() and set(schemas.presets()["peak"]) == {"default", "median"}
        assert keys.fields("peak")[-1] == "peak_paramset"
        with pytest.raises(stages.StageError, match="registered already"):
            stages.register(unit_peak.STAGE)
    assert "peak" not in [s.name for s in stages.STAGES]


def test_a_lab_server_without_a_store_is_refused_naming_the_setting(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJ_") and k != "SCOPELINE_LOCAL_STORE"}
    env.update(DJ_HOST="db.lab.example:3306", SCOPELINE_HOME=str(tmp_path / "home"), DJ_IGNORE_CONFIG_FILE="1")
    out = _cli(["ls"], env, ok=False)
    assert out.returncode == 2, out.stderr
    text = out.stderr.replace("\n", "")
    assert "no object store" in text and "DJ_STORES" in text and "SCOPELINE_LOCAL_STORE" in text


@pytest.mark.db
def test_registered_stage_runs_in_status_populate_paramsets_and_queries(db, sim_cells, tmp_path):
    env = db_env(db["backend"], db["url"], db["prefix"], db["store"])
    env.update(SCOPELINE_STAGES="unit_peak", PYTHONPATH=os.pathsep.join([str(PLUGINS), env.get("PYTHONPATH", "")]))
    with registered():
        _cli(["ingest", sim_cells, "-s", "st1", "-d", "d1"], env)
        queued = _cli(["task", "peak", "--subject", "st1", "--peak", "median"], env)
        assert "1 peak task(s) added" in queued.stdout
        status = {r["stage"]: r for r in json.loads(_cli(["status", "--json"], env).stdout)}
        assert status["peak"]["table"] == "UnitPeak" and status["peak"]["pending"] == 1
        listing = _cli(["paramset", "ls"], env).stdout
        assert "shipped peak presets: default, median" in listing and "median" in listing.split("shipped")[0]
        populated = _cli(["populate"], env).stdout
        assert "UnitPeak: 1 done" in populated
        # the query layer: the stage's results, restricted by its parameter set, with its columns
        frame = query.results(stage="peak", subject="st1", peak="median")
        assert len(frame) == 1 and list(frame.columns[:7]) == list(keys.fields("peak"))
        assert {"n_units", "peak_s", "cnmf_s", "motion_s"} <= set(frame.columns)
        assert query.status().set_index("stage").loc["peak", "done"] == 1
        key = {k: frame.iloc[0][k] for k in keys.fields("cnmf")}
        C = query.trace_matrix(key).to_numpy().T
        peaks = (unit_peak.UnitPeak.Unit & key).to_arrays("peak", order_by="unit_id")
        assert frame.iloc[0]["n_units"] == len(cnmf.CNMF.Unit & key) == len(peaks) > 0
        np.testing.assert_allclose(peaks, C.max(1) - np.quantile(C, 0.5, axis=1), rtol=1e-5)
        assert "peak" in _cli(["results", "--stage", "peak", "-s", "st1"], env).stdout
        # its figures and NWB data through the stage's hooks
        report = _cli(["report", "-s", "st1", "-d", "d1", "--out", tmp_path / "rep"], env).stdout
        assert (tmp_path / "rep" / "st1" / "d1" / f"{keys.name({**key, 'peak_paramset': 'median'})}_peak.png").is_file()
        assert "_peak.png" in report
        _cli(["export-nwb", "-s", "st1", "-d", "d1", "--out", tmp_path / "st1.nwb", "--no-inspect"], env)
        import pynwb

        with pynwb.NWBHDF5IO(str(tmp_path / "st1.nwb"), "r") as io:
            table = io.read().processing["ophys"]["unit_peaks"]
            np.testing.assert_allclose(table["peak"].data[:], peaks, rtol=1e-6)


@pytest.mark.db
def test_two_machines_with_own_homes_and_data_mounts_share_one_chain(db, sim_cells, tmp_path):
    """Ingestion, initialization and CNMF on one machine, motion correction on the other: each with its
    own scopeline home and its own mount of the data, one shared store."""
    one_backend(db, "mysql")
    env = {}
    for machine in ("a", "b"):
        mount = tmp_path / machine / "labdata"
        shutil.copytree(sim_cells, mount / "mouse1" / "day1")
        env[machine] = {**db_env(db["backend"], db["url"], db["prefix"], db["store"]),
                        "SCOPELINE_HOME": str(tmp_path / machine / "home"), "SCOPELINE_DATA_ROOT": str(mount)}
    _cli(["ingest", tmp_path / "a" / "labdata" / "mouse1" / "day1", "-s", "mm2", "-d", "d1"], env["a"])
    _cli(["task", "cnmf", "-s", "mm2", "--motion", "fast"], env["a"])
    shutil.rmtree(tmp_path / "a" / "labdata")  # machine a no longer sees the raw files: b must read its own
    first = _cli(["populate", "--stage", "acquisition", "--stage", "motion"], env["b"]).stdout
    assert "MotionCorrection: 1 done" in first and "CNMF" not in first
    second = _cli(["populate", "--stage", "initialization", "--stage", "cnmf"], env["a"]).stdout
    assert "CNMF: 1 done" in second and "MotionCorrection" not in second
    key = presets.result_key({"subject": "mm2", "session": "d1", "recording_id": 0}, "fast", "cnmf")
    assert len(cnmf.CNMF.Unit & key) > 0 and len(motion.MotionCorrection & key) == 1
    assert not (tmp_path / "a" / "home" / "store").exists() and not (tmp_path / "b" / "home" / "store").exists()
