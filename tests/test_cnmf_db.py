"""Initialization and CNMF in the database (MariaDB and PostgreSQL): tasks, populate, reuse, empty results."""

from __future__ import annotations

import numpy as np
import pytest

from scopeline.core import quality
from scopeline.core import simulate as sim
from scopeline.pipeline import cnmf, initialization, motion
from scopeline.pipeline._paramsets import ParamSetError
from scopeline.pipeline.ingest import ingest

pytestmark = pytest.mark.db

MOTION = {"registration": {"template_frames": 50}, "block_frames": 100, "chunk_frames": 50}


def _chain(rec_key: dict, cnmf_sets: list[str]) -> None:
    motion.MotionParamSet.insert1({"motion_paramset": "m", "params": MOTION})
    initialization.InitParamSet.add_preset("minian")
    for name in set(cnmf_sets) & set(cnmf.CNMFParamSet.presets):
        cnmf.CNMFParamSet.add_preset(name)
    motion.MotionTask.insert1({**rec_key, "motion_paramset": "m"})
    initialization.InitTask.insert1({**rec_key, "motion_paramset": "m", "init_paramset": "minian"})
    cnmf.CNMFTask.insert([{**rec_key, "motion_paramset": "m", "init_paramset": "minian", "cnmf_paramset": c}
                          for c in cnmf_sets])


def test_chain_finds_the_cells_and_shares_upstream_work(db, sim_cells):
    (rec,) = ingest(sim_cells, "cn1", "d1")
    cnmf.CNMFParamSet.insert1({"cnmf_paramset": "sparser", "params": {"sparse_penal": 3.0}})
    _chain(rec.key, ["minian", "sparser"])
    # tasks exist before the work: populate runs the chain in order
    assert motion.MotionCorrection.populate(reserve_jobs=True)["success_count"] == 1
    assert initialization.Initialization.populate(reserve_jobs=True)["success_count"] == 1
    out = cnmf.CNMF.populate(reserve_jobs=True, suppress_errors=True)
    assert out["success_count"] == 2 and not out["error_list"]
    # one motion correction and one initialization serve both CNMF parameter sets
    assert len(motion.MotionCorrection & rec.key) == 1 and len(initialization.Initialization & rec.key) == 1
    init = (initialization.Initialization & rec.key).fetch1()
    seeds = (initialization.Initialization.Seed & rec.key).to_dicts()
    assert init["n_seeds"] == len(seeds) and init["n_units"] == sum(s["removed_by"] == "" for s in seeds)
    assert {s["removed_by"] for s in seeds} <= {"", "pnr", "ks", "stripe", "gmm", "merge", "footprint", "shape"}
    kept = sorted((s for s in seeds if s["removed_by"] == ""), key=lambda s: s["seed_id"])
    assert [s["unit_index"] for s in kept] == list(range(init["n_units"]))
    assert all(s["unit_index"] is None for s in seeds if s["removed_by"])

    gt = sim.load_ground_truth(sim_cells)
    shifts = (motion.MotionCorrection & rec.key).fetch1("shifts")
    offset = tuple(-np.median(shifts - gt["shifts"], axis=0))
    both = cnmf.CNMF & rec.key
    assert len(both) == 2
    for name in ("minian", "sparser"):
        row = (cnmf.CNMF & rec.key & {"cnmf_paramset": name})
        res = row.result()
        n = res["C"].shape[1]
        assert n == 400 and res["S"].shape == res["C"].shape and len(res["A"]) == row.fetch1("n_units")
        acc = quality.accuracy(res["A"].dense(), res["C"], res["S"], gt["A"], gt["C"], gt["S"], offset=offset)
        # 8 cells, two of them 3 pixels apart (found as one); on a 96-px field the simulator's background
        # blobs (sized relative to the field) are cell-sized: measured 10 units, 7 right (one a 470-px
        # blob, one at the top border). Accuracy proper is tested on 256 px in test_cnmf.py.
        assert acc.recall >= 0.75 and acc.precision >= 0.6, acc
        assert acc.footprint_corr > 0.95 and acc.trace_corr > 0.8, acc
    unit = (cnmf.CNMF.Unit & rec.key & {"cnmf_paramset": "minian", "unit_id": 0}).fetch1()
    assert unit["footprint"].max() == pytest.approx(1.0) and unit["area"] > 10 and unit["g"].shape == (1,)
    assert 0 < unit["g"][0] < 1 and unit["sn"] > 0 and unit["snr"] > 1
    # every unit's quality metrics are stored with it; the field of view with the motion correction
    units = (cnmf.CNMF.Unit & rec.key & {"cnmf_paramset": "minian"}).to_dicts()
    assert all(u[name] is not None and np.isfinite(u[name]) for u in units for name in quality.METRICS)
    assert all(u["r_value"] >= 0.8 and u["outside_fov"] == 0 for u in units)
    mc = (motion.MotionCorrection & rec.key).fetch1()
    assert mc["fov"].shape == (96, 96) and mc["confidence"].shape == (400,) and mc["line_noise"]["removed"] is False
    assert (cnmf.CNMF & rec.key & {"cnmf_paramset": "minian"}).fetch1("n_inconsistent") is not None  # not an old row
    # sparser activity with the stricter set: fewer non-zero frames of S
    nz = {name: np.mean([(s > 0).mean() for s in (cnmf.CNMF & rec.key & {"cnmf_paramset": name}).result()["S"]])
          for name in ("minian", "sparser")}
    assert nz["sparser"] < nz["minian"]
    # nothing more to do
    assert cnmf.CNMF.populate(reserve_jobs=True)["success_count"] == 0


def test_movie_without_cells_gives_an_empty_valid_result(db, tmp_path):
    sim.simulate(tmp_path, sim.SimulationParams(height=64, width=64, n_frames=200, n_cells=0, seed=5,
                                                frames_per_file=200))
    (rec,) = ingest(tmp_path, "cn2", "d1")
    _chain(rec.key, ["minian"])
    motion.MotionCorrection.populate(reserve_jobs=True)
    assert initialization.Initialization.populate(reserve_jobs=True, suppress_errors=True)["success_count"] == 1
    out = cnmf.CNMF.populate(reserve_jobs=True, suppress_errors=True)
    assert out["success_count"] == 1 and not out["error_list"], [str(e[1])[:500] for e in out["error_list"]]
    row = (cnmf.CNMF & rec.key).fetch1()
    assert row["n_units"] == len(cnmf.CNMF.Unit & rec.key)
    assert row["n_units"] <= 1  # noise alone: nothing, or at most one spurious unit


def test_invalid_paramsets_refused_with_field_and_reason(db):
    with pytest.raises(ParamSetError, match=r"invalid initialization parameters: diameter: Input should be greater than or equal to 3"):
        initialization.InitParamSet.insert1({"init_paramset": "bad", "params": {"diameter": 1}})
    with pytest.raises(ParamSetError, match=r"invalid CNMF parameters: p: Input should be 1 or 2"):
        cnmf.CNMFParamSet.insert1({"cnmf_paramset": "bad", "params": {"p": 3}})
    with pytest.raises(ParamSetError, match="unknown CNMF preset 'caiman'"):
        cnmf.CNMFParamSet.add_preset("caiman")
    cnmf.CNMFParamSet.add_preset("minian")
    with pytest.raises(ParamSetError, match="same parameters are stored as 'minian'"):
        cnmf.CNMFParamSet.insert1({"cnmf_paramset": "copy", "params": {}})
