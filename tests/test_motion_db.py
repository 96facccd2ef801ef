"""The motion stage in the database (MariaDB and PostgreSQL): paramsets, tasks, populate, errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tifffile
from conftest import db_env, one_backend

from scopeline._dj import dj
from scopeline.core import simulate as sim
from scopeline.pipeline import motion
from scopeline.pipeline._paramsets import ParamSetTable
from scopeline.pipeline.ingest import ingest

pytestmark = pytest.mark.db

SMALL = {"registration": {"template_frames": 50}, "block_frames": 60, "chunk_frames": 30}


@pytest.fixture(scope="module")
def small_v4(tmp_path_factory):
    out = tmp_path_factory.mktemp("motion_v4")
    sim.simulate(out, sim.SimulationParams(height=64, width=80, n_frames=150, n_cells=8, frames_per_file=50, seed=8))
    return out


def _store_files(key_text: str) -> list:
    root = dj.config.get_store_spec(None)["location"]
    from pathlib import Path

    return [p for p in Path(root).rglob("*.zarr") if key_text in str(p)]


def test_populate_stores_movie_shifts_and_summaries(db, small_v4):
    (rec,) = ingest(small_v4, "mm1", "d1")
    motion.MotionParamSet.insert1({"motion_paramset": "small", "params": SMALL})
    motion.MotionTask.insert1({**rec.key, "motion_paramset": "small"})
    out = motion.MotionCorrection.populate(reserve_jobs=True, suppress_errors=True)
    assert out["success_count"] == 1 and not out["error_list"]
    row = (motion.MotionCorrection & rec.key).fetch1()
    assert (row["n_frames"], row["height"], row["width"]) == (150, 64, 80)
    assert row["shifts"].shape == (150, 2) and row["frame_index"].tolist() == list(range(150))
    assert row["corrupted_frames"].size == 0 and row["movie_dtype"] == "float16"
    for name in ("template", "mean_image", "max_image", "std_image", "correlation_image", "pnr_image"):
        assert row[name].shape == (64, 80) and np.isfinite(row[name]).all()
    z = (motion.MotionCorrection & rec.key).open_movie()
    assert z.shape == (150, 64, 80) and z.chunks == (30, 64, 80)
    np.testing.assert_allclose(np.asarray(z[:]).astype(np.float32).mean(0), row["mean_image"], atol=0.05)
    gt = sim.load_ground_truth(small_v4)
    d = row["shifts"] - gt["shifts"]
    assert np.sqrt(((d - np.median(d, 0)) ** 2).sum(1).mean()) < 0.5
    # parameters are stored in full, defaults filled
    params = (motion.MotionParamSet & {"motion_paramset": "small"}).fetch1("params")
    assert params["registration"]["template_frames"] == 50 and params["preprocess"]["denoise"] == "median"


def test_two_paramsets_share_upstream_and_piecewise_blocks(db, small_v4):
    (rec,) = ingest(small_v4, "mm2", "d1")
    piecewise = {**SMALL, "registration": {"template_frames": 50, "mode": "piecewise", "patch_grid": [2, 2]}}
    motion.MotionParamSet.insert([{"motion_paramset": "rigid", "params": SMALL},
                                  {"motion_paramset": "pw", "params": piecewise}])
    motion.MotionTask.insert([{**rec.key, "motion_paramset": p} for p in ("rigid", "pw")])
    assert motion.MotionCorrection.populate(reserve_jobs=True)["success_count"] == 2
    assert len(motion.MotionCorrection & {"subject": "mm2"}) == 2
    blocks = (motion.MotionCorrection.Block & {"subject": "mm2", "motion_paramset": "pw"}).to_dicts(order_by="block_id")
    assert len(blocks) == 4 and blocks[0]["block_shifts"].shape == (150, 2)
    assert not (motion.MotionCorrection.Block & {"subject": "mm2", "motion_paramset": "rigid"})
    # populating again computes nothing: the work is done
    assert motion.MotionCorrection.populate(reserve_jobs=True)["success_count"] == 0


def test_invalid_paramset_refused_at_insert(db):
    with pytest.raises(motion.ParamSetError, match=r"registration\.mode: Input should be 'rigid' or 'piecewise'"):
        motion.MotionParamSet.insert1({"motion_paramset": "bad", "params": {"registration": {"mode": "wobbly"}}})
    with pytest.raises(motion.ParamSetError, match="preprocess: .*denoise_window 4: a median window must be odd"):
        motion.MotionParamSet.insert1({"motion_paramset": "bad", "params": {"preprocess": {"denoise_window": 4}}})
    motion.MotionParamSet.add_preset("fast")
    with pytest.raises(motion.ParamSetError, match="same parameters are stored as 'fast'"):
        motion.MotionParamSet.insert1({"motion_paramset": "fast2",
                                       "params": motion.MotionParamSet.fetch1("params")})
    assert motion.MotionParamSet.to_arrays("motion_paramset").tolist() == ["fast"]
    (motion.MotionParamSet & {"motion_paramset": "fast"}).delete(prompt=False)


def _error_jobs() -> dict:
    return {job["subject"]: job["error_message"] for job in motion.MotionCorrection.jobs.errors.to_dicts()}


def test_bad_inputs_recorded_in_job_table(db, small_v4, tmp_path):
    """Short recording, constant movie, a paramset gone invalid: errors in the job table, no rows, no files."""
    sim.simulate(tmp_path / "short", sim.SimulationParams(height=32, width=32, n_frames=40, n_cells=2))
    tifffile.imwrite(tmp_path / "constant.tif", np.full((120, 32, 32), 9, np.uint8))
    late_nan = np.random.default_rng(0).random((240, 32, 32)).astype(np.float32)
    late_nan[200, 5, 5] = np.nan  # in a block the glow sample skips: fails after the movie was created
    tifffile.imwrite(tmp_path / "late_nan.tif", late_nan)
    (short,) = ingest(tmp_path / "short", "short", "d1")
    (const,) = ingest(tmp_path / "constant.tif", "constant", "d1", fps=20)
    (good,) = ingest(small_v4, "mm3", "d1")
    (nan,) = ingest(tmp_path / "late_nan.tif", "latenan", "d1", fps=20)
    motion.MotionParamSet.insert1({"motion_paramset": "small", "params": SMALL})
    motion.MotionParamSet.insert1({"motion_paramset": "one_glow_block", "params": {**SMALL, "glow_samples": 60}})
    # a row made invalid behind the validation's back (e.g. an old version's parameters)
    unchecked = super(ParamSetTable, motion.MotionParamSet())  # DataJoint's insert, without validation
    unchecked.insert([{"motion_paramset": "broken", "params": {"registration": {"upsample": 0}}, "params_hash": "0" * 32}])
    motion.MotionTask.insert([{**short.key, "motion_paramset": "small"}, {**const.key, "motion_paramset": "small"},
                              {**good.key, "motion_paramset": "broken"},
                              {**nan.key, "motion_paramset": "one_glow_block"}])
    out = motion.MotionCorrection.populate(reserve_jobs=True, suppress_errors=True)
    assert out["success_count"] == 0 and len(out["error_list"]) == 4
    errors = _error_jobs()
    assert "40 frames (after downsampling), fewer than the template window of 50" in errors["short"]
    assert "constant movie" in errors["constant"]
    assert "broken" in errors["mm3"] and "upsample" in errors["mm3"]
    assert "frames 180-239 hold NaN values" in errors["latenan"]
    assert not motion.MotionCorrection()
    assert _store_files("subject=latenan") == []  # the Zarr movie was created, then removed
    assert _store_files("motion_paramset=broken") == [] and _store_files("subject=constant") == []
    motion.MotionCorrection.jobs.errors.delete_quick()


def test_cli_task_and_populate(db, small_v4, tmp_path):
    one_backend(db, "postgresql")
    env = db_env(db["backend"], db["url"], db["prefix"])
    (rec,) = ingest(small_v4, "mm4", "d1")
    run = lambda *a: subprocess.run([sys.executable, "-m", "scopeline.cli", *a], capture_output=True,  # noqa: E731
                                    text=True, env=env, timeout=600)
    params_file = tmp_path / "p.json"
    import json

    params_file.write_text(json.dumps(SMALL))
    assert run("paramset", "add", "cli_small", str(params_file)).returncode == 0
    out = run("task", "motion", "--paramset", "cli_small", "--subject", "mm4")
    assert out.returncode == 0 and "1 motion task(s) added" in out.stdout
    out = run("populate")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "MotionCorrection: 1 done" in out.stdout
    assert (motion.MotionCorrection & {"subject": "mm4"}).fetch1("n_frames") == 150
    bad = run("task", "motion", "--paramset", "no_such_set")
    assert bad.returncode == 1 and "no motion parameter set 'no_such_set'" in bad.stderr


def test_tables_of_an_earlier_version_are_found_and_migrated(db, small_v4):
    """A MotionCorrection table made before the field of view existed (its columns dropped here) is named
    with what it lacks; populate refuses to start; `db migrate` adds the columns, keeping the rows."""
    import scopeline.pipeline as pl

    (rec,) = ingest(small_v4, "mg1", "d1")
    motion.MotionParamSet.insert1({"motion_paramset": "small", "params": SMALL})
    motion.MotionTask.insert1({**rec.key, "motion_paramset": "small"})
    motion.MotionCorrection.populate()
    table = motion.MotionCorrection.full_table_name
    conn = db["connection"]
    quote = '"' if db["backend"] == "postgresql" else "`"
    for name in ("fov", "lens"):
        conn.query(f"ALTER TABLE {table} DROP COLUMN {quote}{name}{quote}")
    from datajoint.heading import Heading

    # read the heading from the database again, as DataJoint's own alter does
    motion.MotionCorrection._heading = Heading(table_info=motion.MotionCorrection().heading.table_info)
    old = pl.outdated()
    assert old == {table: ["fov", "lens"]}
    with pytest.raises(pl.OutdatedSchemaError, match="scopeline db migrate"):
        pl.check_current()
    assert pl.migrate() == {table: ["fov", "lens"]}
    assert pl.outdated() == {}
    row = (motion.MotionCorrection & rec.key).fetch1()
    assert row["fov"] is None and row["n_frames"] == 150  # the old row kept, the new attribute null
    assert (motion.MotionCorrection & rec.key).field_of_view().all()
