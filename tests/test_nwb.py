"""NWB export (MariaDB and PostgreSQL): round trip against the database, nwbinspector (DANDI) and pynwb
validation, overwrite rules, atomic writes, bad keys, the embedded corrected movie."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pynwb
import pytest
from conftest import shared_data

from scopeline import query
from scopeline.core import simulate as sim
from scopeline.pipeline import acquisition, cnmf, initialization, motion, nwb
from scopeline.pipeline.ingest import ingest

pytestmark = pytest.mark.db

MOTION = {"registration": {"template_frames": 50}, "block_frames": 100, "chunk_frames": 50}
SERIOUS = ("CRITICAL", "BEST_PRACTICE_VIOLATION")


@pytest.fixture(scope="module")
def cells(tmp_path_factory) -> Path:
    """A simulated V4 recording, 400 frames in two files, 8 cells; not square, so a transposed image shows."""
    out = tmp_path_factory.mktemp("nwb_v4")
    sim.simulate(out, sim.SimulationParams(height=80, width=112, n_frames=400, n_cells=8, frames_per_file=200,
                                           signal_level=1.4, seed=21))
    return out


def _processed(folder: Path, subject_info: dict | None = None, cnmf_sets=("minian",), motion_params=MOTION) -> dict:
    """Ingest ``folder`` and populate motion -> initialization -> CNMF; return the first CNMF key."""
    (rec,) = ingest(folder, "nw1", "d1", subject_info=subject_info)
    motion.MotionParamSet.insert1({"motion_paramset": "m", "params": motion_params})
    initialization.InitParamSet.add_preset("minian")
    motion.MotionTask.insert1({**rec.key, "motion_paramset": "m"})
    initialization.InitTask.insert1({**rec.key, "motion_paramset": "m", "init_paramset": "minian"})
    for name in cnmf_sets:
        if name in cnmf.CNMFParamSet.presets:
            cnmf.CNMFParamSet.add_preset(name)
        cnmf.CNMFTask.insert1({**rec.key, "motion_paramset": "m", "init_paramset": "minian", "cnmf_paramset": name})
    for table in (motion.MotionCorrection, initialization.Initialization, cnmf.CNMF):
        out = table.populate(reserve_jobs=True, suppress_errors=True)
        assert not out["error_list"], out["error_list"]
    keys = (cnmf.CNMF & rec.key).keys(order_by="cnmf_paramset")
    assert len(keys) == len(cnmf_sets)
    return dict(keys[0])


def _serious(messages) -> list[str]:
    return [f"{m.importance.name} {m.check_function_name} {m.object_name}: {m.message}"
            for m in messages if m.importance.name in SERIOUS]


def test_round_trip_matches_the_database(db, cells, tmp_path):
    key = _processed(cells, subject_info={"sex": "F", "date_of_birth": dt.date(2025, 10, 1)})
    out = nwb.export_nwb(key, tmp_path / "nw1.nwb")
    assert out == (tmp_path / "nw1.nwb").absolute() and out.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nw1.nwb"]

    res = (cnmf.CNMF & key).result()
    units = (cnmf.CNMF.Unit & key).to_dicts(order_by="unit_id")
    mc = (motion.MotionCorrection & key).fetch1()
    info = (acquisition.RecordingInfo & key).fetch1()
    files = (acquisition.RecordingInfo.File & key).to_dicts(order_by="file_index")
    times = info["timestamps"][mc["frame_index"]]
    assert len(units) >= 4

    with pynwb.NWBHDF5IO(str(out), "r") as io:
        f = io.read()
        ophys = f.processing["ophys"]
        table = ophys["ImageSegmentation"]["PlaneSegmentation"]
        masks = table["image_mask"].data[:]
        # footprints: [unit, x, y] as the NWB schema defines image_mask; transposed, the dense footprints
        assert masks.shape == (len(units), mc["width"], mc["height"]) == (len(units), 112, 80)
        np.testing.assert_allclose(masks.transpose(0, 2, 1), res["A"].dense(), rtol=0, atol=1e-6)
        for mask, u in zip(masks, units):  # orientation: each mask's peak lies at the unit's centroid
            px, py = np.unravel_index(np.argmax(mask), mask.shape)
            assert abs(px - u["centroid_x"]) <= 2.5 and abs(py - u["centroid_y"]) <= 2.5, (u["unit_id"], px, py)
        assert any(abs(u["centroid_x"] - u["centroid_y"]) > 5 for u in units)  # so a transposition would show
        assert list(table.id[:]) == [u["unit_id"] for u in units] == list(table["unit_id"].data[:])
        for name in ("centroid_y", "centroid_x", "area", "snr", "sn", "b0", "c0"):
            np.testing.assert_allclose(table[name].data[:], [u[name] for u in units], rtol=1e-6)
        np.testing.assert_allclose(table["g"].data[:], np.stack([u["g"] for u in units]), rtol=1e-6)
        # traces C and S (frames, units), timestamps of the corrected frames
        C, S = ophys["Fluorescence"]["C"], ophys["Fluorescence"]["S"]
        np.testing.assert_array_equal(C.data[:], res["C"].T)
        np.testing.assert_array_equal(S.data[:], res["S"].T)
        assert C.unit == S.unit == "a.u." and "not df/f" in C.description.lower()
        assert list(C.rois.data[:]) == list(range(len(units))) and C.rois.table is table
        np.testing.assert_array_equal(C.timestamps[:], times)
        np.testing.assert_array_equal(S.timestamps[:], times)
        # dF/F and events: the same numbers as the query layer's
        dff = query.traces(subject="nw1", kind="dff")
        assert list(dff["unit_id"]) == [u["unit_id"] for u in units] and (dff["F0"] > 0).all()
        series = ophys["DfOverF"]["dff"]
        np.testing.assert_allclose(series.data[:], np.stack(dff["dff"]).T, rtol=1e-6)
        assert list(series.rois.data[:]) == list(range(len(units))) and series.rois.table is table
        np.testing.assert_array_equal(series.timestamps[:], times)
        peak = np.stack(dff["dff"]).max(axis=1)
        assert np.all((peak > 0.01) & (peak < 10)), peak  # a lab's range of dF/F peaks, not movie units
        with pytest.raises(ValueError, match="kind must be 'C' or 'dff', not 'F'"):
            query.traces(subject="nw1", kind="F")
        events = query.events(subject="nw1")
        assert len(events) >= len(units) and set(events["unit_id"]) <= {u["unit_id"] for u in units}
        table_ev = ophys["events"].to_dataframe()
        np.testing.assert_array_equal(table_ev["unit_id"], events["unit_id"])
        np.testing.assert_array_equal(table_ev["onset_frame"], events["onset"])
        np.testing.assert_allclose(table_ev["onset_time"], events["time"])
        np.testing.assert_allclose(table_ev["amplitude_dff"], events["amplitude_dff"])
        onsets = events["onset"].to_numpy()
        S_of = {u["unit_id"]: i for i, u in enumerate(units)}
        assert all(res["S"][S_of[u], o] > 0 for u, o in zip(events["unit_id"], onsets))  # each starts on S
        # motion
        shifts = ophys["motion_shifts"]
        np.testing.assert_array_equal(shifts.data[:], mc["shifts"])
        np.testing.assert_array_equal(shifts.timestamps[:], times)
        assert shifts.unit == "pixels" and "-shift" in shifts.comments
        np.testing.assert_array_equal(ophys["summary_images"]["mean"].data[:].T, mc["mean_image"])
        np.testing.assert_array_equal(ophys["summary_images"]["correlation"].data[:].T, mc["correlation_image"])
        np.testing.assert_array_equal(ophys["summary_images"]["field_of_view"].data[:].T, mc["fov"])
        for name in ("r_value", "event_snr", "outside_fov"):
            np.testing.assert_allclose(table[name].data[:], [u[name] for u in units], rtol=1e-6)
        np.testing.assert_array_equal(ophys["background"]["b"].data[:].T, (cnmf.CNMF & key).fetch1("b"))
        np.testing.assert_array_equal(ophys["background_f"].timestamps[:], times)
        # raw movie by reference, relative to the NWB file, with the acquisition clock's times
        raw = f.acquisition["OnePhotonSeries"]
        assert raw.format == "external" and list(raw.starting_frame) == [r["first_frame"] for r in files] == [0, 200]
        for name, row in zip(raw.external_file[:], files):
            name = name.decode() if isinstance(name, bytes) else name
            assert not Path(name).is_absolute() and (out.parent / name).is_file()
            assert (out.parent / name).resolve() == (acquisition.Recording & key).absolute_path() / row["file_name"]
        np.testing.assert_array_equal(raw.timestamps[:], info["timestamps"])
        assert raw.imaging_plane.imaging_rate == pytest.approx(info["fps"])
        # general metadata and provenance
        assert f.subject.subject_id == "nw1" and f.subject.sex == "F" and f.subject.species == "Mus musculus"
        assert f.subject.date_of_birth.date() == dt.date(2025, 10, 1) and f.subject.age is None
        assert f.session_id == "d1" and f.session_start_time == info["recording_start"].astimezone()
        assert f.session_start_time.tzinfo is not None
        notes = json.loads(f.notes)
        assert notes["key"] == key
        for stage, table_cls, name in (("motion", motion.MotionParamSet, "motion_paramset"),
                                       ("initialization", initialization.InitParamSet, "init_paramset"),
                                       ("cnmf", cnmf.CNMFParamSet, "cnmf_paramset")):
            row = (table_cls & key).fetch1()
            assert notes[stage]["paramset"] == {"name": key[name], "description": row["description"],
                                                "params_hash": row["params_hash"], "params": row["params"]}
        assert ["scopeline", nwb.scopeline.__version__] in [list(r) for r in f.was_generated_by[:]]
        assert "export_nwb" in f.source_script


def test_nwbinspector_dandi_and_pynwb_validation_clean(db, cells, tmp_path):
    # no date of birth: the age is written as unknown ("P0D/"); piecewise-rigid: block shifts too
    piecewise = {**MOTION, "registration": {"template_frames": 50, "mode": "piecewise", "patch_grid": [2, 2]}}
    key = _processed(cells, motion_params=piecewise)
    out = nwb.export_nwb(key, tmp_path / "nw1.nwb", embed_movie=True)
    messages = nwb.inspect_nwb(out)
    assert not _serious(messages), "\n".join(_serious(messages))
    assert pynwb.validate(path=str(out)) == []
    blocks = (motion.MotionCorrection.Block & key).to_dicts(order_by="block_id")
    assert len(blocks) == 4
    with pynwb.NWBHDF5IO(str(out), "r") as io:
        f = io.read()
        assert f.subject.age == "P0D/" and f.subject.date_of_birth is None
        np.testing.assert_array_equal(f.processing["ophys"]["motion_block_shifts"].data[:],
                                      np.stack([b["block_shifts"] for b in blocks], axis=1))


def test_empty_result_exports_clean(db, tmp_path):
    sim.simulate(tmp_path / "rec", sim.SimulationParams(height=64, width=64, n_frames=200, n_cells=0, seed=5,
                                                        frames_per_file=200))
    key = _processed(tmp_path / "rec")
    n_units = (cnmf.CNMF & key).fetch1("n_units")
    (tmp_path / "out").mkdir()
    out = nwb.export_nwb(key, tmp_path / "out" / "empty.nwb")
    messages = nwb.inspect_nwb(out)
    assert not _serious(messages), "\n".join(_serious(messages))
    with pynwb.NWBHDF5IO(str(out), "r") as io:
        ophys = io.read().processing["ophys"]
        assert "motion_shifts" in ophys.data_interfaces and "summary_images" in ophys.data_interfaces
        if n_units == 0:  # no empty tables (a best-practice violation): no segmentation, no traces
            assert "ImageSegmentation" not in ophys.data_interfaces and "Fluorescence" not in ophys.data_interfaces
        else:
            assert len(ophys["ImageSegmentation"]["PlaneSegmentation"]) == n_units


def test_existing_file_needs_overwrite(db, cells, tmp_path):
    target = tmp_path / "nw1.nwb"
    target.write_bytes(b"an older file")
    # refused before any other work: even a key matching nothing gives FileExistsError
    with pytest.raises(FileExistsError, match=r"nw1\.nwb.*overwrite=True"):
        nwb.export_nwb({"subject": "nobody"}, target)
    key = _processed(cells)
    with pytest.raises(FileExistsError, match=r"nw1\.nwb.*overwrite=True"):
        nwb.export_nwb(key, target)
    assert target.read_bytes() == b"an older file"
    nwb.export_nwb(key, target, overwrite=True)
    with pynwb.NWBHDF5IO(str(target), "r") as io:
        assert io.read().subject.subject_id == "nw1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nw1.nwb"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        nwb.export_nwb(key, tmp_path / "missing" / "nw1.nwb")


def test_interrupted_export_leaves_nothing_behind(db, cells, tmp_path, monkeypatch):
    key = _processed(cells)
    read = nwb._movie_block
    seen = []

    def failing(movie, start, stop, dtype):  # the corrected movie is written in blocks: fail at the third
        seen.append([p.name for p in tmp_path.iterdir()])
        if len(seen) == 3:
            raise RuntimeError("disk full (simulated)")
        return read(movie, start, stop, dtype)

    monkeypatch.setattr(nwb, "_movie_block", failing)
    monkeypatch.setattr(nwb, "BUFFER_BYTES", 50 * 80 * 112 * 4)  # 50 frames a block
    target = tmp_path / "nw1.nwb"
    with pytest.raises(RuntimeError, match="disk full"):
        nwb.export_nwb(key, target, embed_movie=True)
    assert any(name.startswith(".nw1.nwb.partial-") for name in seen[-1])  # it failed midway through the file
    assert list(tmp_path.iterdir()) == []
    # replacing an existing file: the old one survives a failed write
    target.write_bytes(b"an older file")
    seen.clear()
    with pytest.raises(RuntimeError, match="disk full"):
        nwb.export_nwb(key, target, overwrite=True, embed_movie=True)
    assert target.read_bytes() == b"an older file" and [p.name for p in tmp_path.iterdir()] == ["nw1.nwb"]


def test_bad_keys_refused_naming_the_key(db, cells, tmp_path):
    with pytest.raises(ValueError, match=r"'subject': 'nobody'.*matches no CNMF row"):
        nwb.export_nwb({"subject": "nobody", "session": "d1"}, tmp_path / "x.nwb")
    with pytest.raises(ValueError, match=r"CNMF has no attribute\(s\) \['animal'\]"):
        nwb.export_nwb({"animal": "nw1"}, tmp_path / "x.nwb")
    with pytest.raises(ValueError, match="must be a dict"):
        nwb.export_nwb("nw1", tmp_path / "x.nwb")
    key = _processed(cells, cnmf_sets=("minian", "cnmfe"))
    partial = {k: v for k, v in key.items() if k != "cnmf_paramset"}
    with pytest.raises(ValueError, match=r"'subject': 'nw1'.*matches 2 CNMF rows"):
        nwb.export_nwb(partial, tmp_path / "x.nwb")
    assert list(tmp_path.iterdir()) == []


def test_embedded_corrected_movie(db, cells, tmp_path):
    key = _processed(cells)
    out = nwb.export_nwb(key, tmp_path / "nw1.nwb", embed_movie=True, progress=True)
    row = motion.MotionCorrection & key
    n, h, w = row.fetch1("n_frames", "height", "width")
    stored = np.asarray(row.open_movie()[:], np.float32)
    with pynwb.NWBHDF5IO(str(out), "r") as io:
        f = io.read()
        movie = f.processing["ophys"]["MotionCorrected"]
        assert movie.data.shape == (n, w, h)  # [time, x, y]: MotionCorrection's (n_frames, height, width) transposed
        assert movie.data.dtype == np.float32 and movie.data.compression == "gzip"
        np.testing.assert_array_equal(movie.data[:].transpose(0, 2, 1), stored)
        np.testing.assert_array_equal(movie.timestamps[:],
                                      (acquisition.RecordingInfo & key).fetch1("timestamps")[row.fetch1("frame_index")])
        table = f.processing["ophys"]["ImageSegmentation"]["PlaneSegmentation"]
        assert table.reference_images[0] is movie


@pytest.mark.realdata
def test_real_ca1_recording_exports_clean(db, tmp_path):
    path = shared_data("ca1_miniscope_v3", "ca1_500x240x376_uint8.tif")
    (rec,) = ingest(path, subject="ca1", session="minian_demo", fps=15)
    motion.MotionParamSet.add_preset("default")
    initialization.InitParamSet.add_preset("minian")
    cnmf.CNMFParamSet.add_preset("minian")
    motion.MotionTask.insert1({**rec.key, "motion_paramset": "default"})
    initialization.InitTask.insert1({**rec.key, "motion_paramset": "default", "init_paramset": "minian"})
    cnmf.CNMFTask.insert1({**rec.key, "motion_paramset": "default", "init_paramset": "minian",
                           "cnmf_paramset": "minian"})
    for table in (motion.MotionCorrection, initialization.Initialization, cnmf.CNMF):
        out = table.populate(reserve_jobs=True, suppress_errors=True)
        assert not out["error_list"], out["error_list"]
    (key,) = (cnmf.CNMF & rec.key).keys()
    out = nwb.export_nwb(key, tmp_path / "ca1.nwb")
    messages = nwb.inspect_nwb(out)
    assert not _serious(messages), "\n".join(_serious(messages))
    with pynwb.NWBHDF5IO(str(out), "r") as io:
        f = io.read()
        raw = f.acquisition["OnePhotonSeries"]
        assert raw.rate == pytest.approx(15) and raw.timestamps is None  # a nominal rate: regular times
        n_units = (cnmf.CNMF & key).fetch1("n_units")
        assert len(f.processing["ophys"]["ImageSegmentation"]["PlaneSegmentation"]) == n_units > 0


def test_lab_metadata_file_sets_indicator_location_and_experimenter(db, cells, tmp_path, monkeypatch):
    key = _processed(cells)
    lab = tmp_path / "lab.yaml"
    lab.write_text("NWBFile:\n  experimenter: ['Doe, Jane']\n  institution: University of Somewhere\n"
                   "  lab: Memory Lab\nOphys:\n  ImagingPlane:\n    indicator: GCaMP6f\n    location: CA1\n"
                   "    emission_lambda: 525\n    grid_spacing_um: 1.1\n")
    out = nwb.export_nwb(key, tmp_path / "lab.nwb", metadata=lab)
    with pynwb.NWBHDF5IO(str(out), "r") as io:
        f = io.read()
        plane = f.imaging_planes["ImagingPlane"]
        assert (plane.indicator, plane.location, plane.excitation_lambda) == ("GCaMP6f", "CA1", 470.0)
        assert plane.optical_channel[0].emission_lambda == 525.0 and list(plane.grid_spacing) == [1.1, 1.1]
        assert "except these defaults: excitation_lambda 470.0" in plane.description
        assert list(f.experimenter) == ["Doe, Jane"] and f.institution == "University of Somewhere"
        assert f.lab == "Memory Lab"
    assert _serious(nwb.inspect_nwb(out)) == []
    # the lab's file for every export, and its errors name the file and the field
    monkeypatch.setenv("SCOPELINE_NWB_METADATA", str(lab))
    with pynwb.NWBHDF5IO(str(nwb.export_nwb(key, tmp_path / "env.nwb")), "r") as io:
        assert io.read().imaging_planes["ImagingPlane"].location == "CA1"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"Ophys": {"ImagingPlane": {"indicatr": "x", "emission_lambda": -1}}}))
    with pytest.raises(nwb.nwb_metadata.MetadataError, match=r"bad.json: invalid NWB metadata: ") as err:
        nwb.export_nwb(key, tmp_path / "bad.nwb", metadata=bad)
    assert "ImagingPlane.indicatr: Extra inputs" in str(err.value) and "emission_lambda: Input should be" in str(err.value)
    assert not (tmp_path / "bad.nwb").exists()
