"""Cross-session registration (core.registration): alignment, the same-cell model, clustering; the
footprint reader and `scopeline register` on synthetic sessions with known identities and on the
real CellReg footprints of ../shared/data."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import one_backend, shared_data

from scopeline.core import registration as reg


def _sessions(**kw):
    from scopeline.core.simulate import session_footprints

    return session_footprints(**kw)


def test_five_sessions_rotated_and_shifted_are_aligned_and_matched():
    """5 sessions, 300 cells, rotations up to 5 degrees, shifts up to 20 px, a mild non-rigid field (1 px):
    alignment within 0.5 px / 0.5 degree, pairwise precision and recall >= 0.97."""
    sessions, ids, truth = _sessions(deformation=1.0)
    res = reg.register(sessions)
    for a, (theta, shift) in zip(res.alignment, truth):
        assert abs(a.rotation - theta) < 0.5 and np.hypot(a.dy - shift[0], a.dx - shift[1]) < 0.5, (a, theta, shift)
    precision, recall = reg.match_scores(res, ids)
    assert precision >= 0.97 and recall >= 0.97, (precision, recall)
    # every cell once per session at most, and the counts add up
    summary = res.summary()
    assert sum(summary["cells_in_n_sessions"]) == summary["n_cells"] == len(res.cells)
    for s in range(len(sessions)):
        col = res.cells[:, s]
        assert sorted(col[col >= 0]) == list(range(len(sessions[s])))
    assert summary["error_rates"]["false_positive"] < 0.03 and summary["error_rates"]["false_negative"] < 0.03


def test_harder_sessions_keep_high_precision():
    """Larger position jitter (0.8 px) and fewer shared cells (70%): the model still separates same from
    different cells."""
    sessions, ids, _ = _sessions(n_cells=200, n_sessions=3, presence=0.7, seed=5, jitter=0.8)
    precision, recall = reg.match_scores(reg.register(sessions), ids)
    assert precision >= 0.97 and recall >= 0.95, (precision, recall)


def test_bad_input_is_refused_with_the_reason():
    a, _, _ = _sessions(n_cells=150, n_sessions=2, seed=1)
    b, _, _ = _sessions(n_cells=150, n_sessions=2, seed=2)
    with pytest.raises(reg.RegistrationError, match="1 session.*at least two"):
        reg.register(a[:1])
    with pytest.raises(reg.RegistrationError, match="session 2 does not overlap the reference session 1"):
        reg.register([a[0], b[1]])  # other cells: another field of view
    zoomed = reg.rescale(a[1], 1.5)  # pixels 1.5 times finer
    assert zoomed.shape == (384, 480) and abs(reg.cell_width(zoomed) / reg.cell_width(a[1]) - 1.5) < 0.1
    with pytest.raises(reg.RegistrationError, match="session 2's footprints are .* wide.*another pixel size"):
        reg.register([a[0], zoomed])
    # told the scale (1.5 times finer pixels), the same sessions register
    back = reg.rescale(zoomed, 1 / 1.5)
    assert back.shape == (256, 320) and abs(reg.cell_width(back) - reg.cell_width(a[1])) < 0.5
    res = reg.register([a[0], back])
    both = (res.cells >= 0).all(axis=1).sum()
    assert both >= 0.6 * min(len(a[0]), len(back)) and res.alignment[1].quality > 0.6, (both, res.alignment)
    with pytest.raises(reg.RegistrationError, match="reference session 3 of 2"):
        reg.register(a, reg.RegistrationParams(reference=2))


def test_footprint_reader(tmp_path):
    import scipy.io

    A = np.zeros((3, 20, 30))
    for k, (y, x) in enumerate(((5, 5), (10, 15), (14, 25))):
        A[k, y - 1: y + 2, x - 1: x + 2] = 0.01 * (k + 1)
    import h5py

    scipy.io.savemat(tmp_path / "s.mat", {"allFiltersMat": A})
    with h5py.File(tmp_path / "v73.mat", "w") as f:  # MATLAB v7.3: HDF5, every dimension reversed
        f["allFiltersMat"] = A.T
    np.save(tmp_path / "s.npy", A)
    np.savez(tmp_path / "s.npz", footprints=A, other=np.zeros(3))
    for name in ("s.mat", "v73.mat", "s.npy", "s.npz"):
        fp = reg.read_footprints(tmp_path / name)
        assert len(fp) == 3 and fp.shape == (20, 30) and np.allclose(fp.patches.max(axis=(1, 2)), 1)
        assert np.allclose(fp.centroids(), [(5, 5), (10, 15), (14, 25)])
    np.savez(tmp_path / "two.npz", a=A, b=A)
    with pytest.raises(reg.RegistrationError, match="2 3-D arrays.*name one"):
        reg.read_footprints(tmp_path / "two.npz")
    np.save(tmp_path / "flat.npy", A[0])
    with pytest.raises(reg.RegistrationError, match="cells x height x width"):
        reg.read_footprints(tmp_path / "flat.npy")
    np.save(tmp_path / "neg.npy", -A)
    with pytest.raises(reg.RegistrationError, match="non-negative"):
        reg.read_footprints(tmp_path / "neg.npy")
    (tmp_path / "junk.mat").write_text("not a mat file")
    with pytest.raises(reg.RegistrationError, match="junk.mat: cannot read footprints"):
        reg.read_footprints(tmp_path / "junk.mat")
    with pytest.raises(reg.RegistrationError, match="no such file"):
        reg.read_footprints(tmp_path / "absent.mat")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "scopeline.cli", "register", *map(str, args)], capture_output=True,
                          text=True, timeout=600)


def test_register_command_on_the_real_cellreg_footprints(tmp_path):
    """The 5 real sessions (495-598 cells, fields of view of slightly different sizes): every session
    aligned (quality well above unrelated sessions' 0.17), cells counted in 1..5 sessions, the model's
    error rates small, the figure, table and summary written."""
    files = sorted(shared_data("cellreg_sample_footprints").glob("spatial_footprints_0*.mat"))
    assert len(files) == 5
    out = _cli(*files, "--json", "--out", tmp_path / "reg")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["n_units"] == [598, 552, 548, 594, 495]
    assert all(a["quality"] > 0.6 for a in summary["alignment"]) and summary["alignment"][0]["dy"] == 0
    assert all(abs(a["rotation"]) < 2 and np.hypot(a["dy"], a["dx"]) < 20 for a in summary["alignment"])
    counts = summary["cells_in_n_sessions"]
    assert len(counts) == 5 and sum(counts) == summary["n_cells"]
    assert max(summary["n_units"]) <= summary["n_cells"] <= sum(summary["n_units"])
    assert counts[4] > 200  # most cells of a chronic field of view are seen every day
    assert summary["error_rates"]["false_positive"] < 0.05 and summary["error_rates"]["false_negative"] < 0.05
    for name in ("registration.png", "cells.csv", "registration.json"):
        assert (tmp_path / "reg" / name).stat().st_size > 1000
    rows = (tmp_path / "reg" / "cells.csv").read_text().splitlines()
    assert len(rows) == summary["n_cells"] + 1 and rows[0].startswith("cell,score,spatial_footprints_01")


def test_register_command_bad_input(tmp_path):
    one = _cli(tmp_path / "absent.mat", "--out", tmp_path / "o")
    assert one.returncode == 1 and "absent.mat: no such file" in one.stderr and not (tmp_path / "o").exists()
    np.save(tmp_path / "a.npy", np.ones((2, 10, 10)))
    single = _cli(tmp_path / "a.npy", "--out", tmp_path / "o")
    assert single.returncode == 1 and "at least two" in single.stderr and not (tmp_path / "o").exists()
    # a session at 1.5 times finer pixels: refused with the reason, registered when told the pixel sizes
    a, _, _ = _sessions(n_cells=120, n_sessions=2, seed=3)
    np.save(tmp_path / "d1.npy", a[0].dense())
    np.save(tmp_path / "d2.npy", reg.rescale(a[1], 1.5).dense())
    scaled = _cli(tmp_path / "d1.npy", tmp_path / "d2.npy", "--out", tmp_path / "o")
    assert scaled.returncode == 1 and "another pixel size" in scaled.stderr and not (tmp_path / "o").exists()
    miscount = _cli(tmp_path / "d1.npy", tmp_path / "d2.npy", "--pixel-size", "1.5")
    assert miscount.returncode == 1 and "given 1 times for 2 files" in miscount.stderr
    told = _cli(tmp_path / "d1.npy", tmp_path / "d2.npy", "--pixel-size", "1.5", "--pixel-size", "1.0", "--json")
    assert told.returncode == 0, told.stderr
    summary = json.loads(told.stdout)
    assert summary["cells_in_n_sessions"][1] >= 0.6 * min(summary["n_units"]) and summary["alignment"][1]["quality"] > 0.6


@pytest.mark.db
def test_registration_stage_on_simulated_sessions(db, tmp_path):
    """Three simulated sessions of one animal (the same cells, the field of view shifted each day) through
    the whole pipeline, then a registration group: populate registers them; the cells' units across
    sessions are the same true cells; bad groups are refused and write nothing. On PostgreSQL only (the
    suite's time): its tables are declared on both backends by every DB test, and nothing in them is
    server-specific beyond what the other stages' tests insert and read on both."""
    one_backend(db, "postgresql")
    from scopeline import query
    from scopeline.core import quality
    from scopeline.core import simulate as sim
    from scopeline.pipeline import motion, presets, stages, units
    from scopeline.pipeline import registration as pl
    from scopeline.pipeline.ingest import ingest

    folders = sim.simulate_sessions(tmp_path / "days", sim.SimulationParams(height=96, width=96, n_frames=400,
                                    n_cells=12, signal_level=1.4, seed=4), n_sessions=3, fov_shift=4.0)
    import shutil

    shutil.copytree(folders[0].parent.parent, tmp_path / "other")  # another animal's recording
    recs = [ingest(f, "rg1", f"d{k + 1}")[0].key for k, f in enumerate(folders)]
    (other,) = ingest(tmp_path / "other", "rg2", "d1")
    presets.queue([*recs, other.key], presets.stage_paramsets("default"), "curation")
    for stage in stages.STAGES:
        assert not stage.computed.populate(reserve_jobs=True, suppress_errors=True)["error_list"]
    results = [presets.result_key(r, "default") for r in recs]
    with pytest.raises(pl.GroupError, match="at least two sessions"):
        pl.create_group("one", results[:1])
    with pytest.raises(pl.GroupError, match="results of different subjects"):
        pl.create_group("mixed", [results[0], presets.result_key(other.key, "default")])
    assert not pl.RegistrationGroup() and not pl.RegistrationTask()
    group = pl.create_group("rg1_fov", results)
    out = pl.Registration.populate(reserve_jobs=True, suppress_errors=True)
    assert not out["error_list"], out["error_list"]
    table = pl.cells("rg1_fov")
    assert list(table.columns) == ["cell_id", "score", "n_sessions", "d1", "d2", "d3"]
    assert len(table) == (pl.Registration & group).fetch1("n_cells") >= 8
    # the truth: each unit's true cell (nearest true centroid, in the corrected movie's frame)
    truth = []
    for f, key in zip(folders, results):
        gt = sim.load_ground_truth(f.parent.parent)
        shifts = (motion.MotionCorrection & key).fetch1("shifts")
        offset = -np.median(shifts - gt["shifts"], axis=0)
        true_xy = quality.centroids(gt["A"]) + offset
        res = units.arrays(key)
        ei, ti = quality.match_units(res["A"].centroids(), true_xy, 4.0)
        truth.append({int(res["unit_id"][e]): int(gt["cell_ids"][t]) for e, t in zip(ei, ti)})
    same = wrong = 0
    for row in table.itertuples(index=False):
        found = [(s, getattr(row, f"d{s + 1}")) for s in range(3) if not pd.isna(getattr(row, f"d{s + 1}"))]
        ids = [truth[s].get(int(u)) for s, u in found]
        for i in range(len(ids)):
            for j in range(i + 1, len(ids)):
                if ids[i] is not None and ids[j] is not None:
                    same += ids[i] == ids[j]
                    wrong += ids[i] != ids[j]
    assert same >= 10 and wrong == 0, (same, wrong)
    frame = query.results(stage="registration", subject="rg1")
    assert len(frame) == 1 and frame.iloc[0]["n_cells"] == len(table)
    every = query.cells(subject="rg1")
    assert len(every) == len(table) and set(every["group_name"]) == {"rg1_fov"} and (every["d2"].dropna() >= 0).all()
    # each session's NWB file carries the global cell id of its units
    from pynwb import NWBHDF5IO

    from scopeline.pipeline.nwb import export_nwb

    path = export_nwb(results[1], tmp_path / "d2.nwb")
    with NWBHDF5IO(str(path), "r") as io:
        seg = io.read().processing["ophys"]["ImageSegmentation"]["PlaneSegmentation"]
        ids = dict(zip(seg.id[:], seg["cell_id_rg1_fov"][:]))
    expected = {int(u): int(c) for c, u in zip(table["cell_id"], table["d2"]) if not pd.isna(u)}
    assert expected and all(ids[u] == c for u, c in expected.items())
    alignment = (pl.Registration.Session & group).to_dicts(order_by="session")
    assert len(alignment) == 3 and all(a["quality"] > 0.4 for a in alignment)
    # one cell's traces in each session where it is found, each on its own session's clock
    cell = int(table.loc[table["n_sessions"] == 3, "cell_id"].iloc[0])
    tr = query.cell_traces("rg1_fov", cell)
    assert list(tr["session"]) == ["d1", "d2", "d3"] and list(tr["session_order"]) == [0, 1, 2]
    for row, k in zip(tr.itertuples(index=False), range(3)):
        unit = int(table.loc[table["cell_id"] == cell, f"d{k + 1}"].iloc[0])
        shown = units.arrays(results[k])
        np.testing.assert_array_equal(row.C, shown["C"][list(shown["unit_id"]).index(unit)])
        assert row.unit_id == unit and len(row.time) == len(row.C) and row.time[0] == 0
        assert row.recording_start.day == 5 + k  # a day apart: each session keeps its own clock
    with pytest.raises(pl.GroupError, match="no cell 9999"):
        pl.traces("rg1_fov", 9999)
    # the stored registration rebuilt (the same cells and transforms) and its figure, also in the report
    stored = pl.result("rg1_fov")
    assert stored.cells.shape == (len(table), 3) and (stored.cells >= 0).sum() == table[["d1", "d2", "d3"]].notna().sum().sum()
    assert [round(a.dy, 3) for a in stored.alignment] == [round(a["dy"], 3) for a in alignment]
    from scopeline import report

    paths = report.write_figures(results[1], tmp_path / "report")
    assert paths["registration_rg1_fov"].stat().st_size > 20_000
    # the same from the command line: a group of two of the sessions, then populate
    from conftest import db_env

    env = db_env(db["backend"], db["url"], db["prefix"], db["store"])
    run = lambda *a: subprocess.run([sys.executable, "-m", "scopeline.cli", *a], capture_output=True,  # noqa: E731
                                    text=True, env=env, timeout=600)
    made = run("register-group", "rg1_two", "-s", "rg1", "-d", "d1", "-d", "d3")
    assert made.returncode == 0 and "2 results of subject rg1" in made.stdout, made.stderr
    assert run("populate", "--stage", "registration").returncode == 0
    listed = run("results", "--stage", "registration", "--subject", "rg1").stdout
    assert "rg1_fov" in listed and "rg1_two" in listed
    bad = run("register-group", "rg1_two", "-s", "rg1")
    assert bad.returncode == 1 and "exists already" in bad.stderr
