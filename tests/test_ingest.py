"""Ingestion into the database, on MariaDB and PostgreSQL: rows, idempotence, bad input leaves nothing."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import shared_data

from scopeline.core import io
from scopeline.core import simulate as sim
from scopeline.pipeline import acquisition
from scopeline.pipeline.ingest import IngestError, ingest, match_pattern
from scopeline.pipeline.session import Session
from scopeline.pipeline.subject import Subject

pytestmark = pytest.mark.db


def _counts() -> tuple[int, ...]:
    return tuple(len(t()) for t in (Subject, Session, acquisition.Recording, acquisition.RecordingInfo,
                                    acquisition.RecordingInfo.File))


def test_ingest_v4_rows(db, sim_v4):
    gt = sim.load_ground_truth(sim_v4)
    (res,) = ingest(sim_v4, subject="m1", session="2026_01_05")
    assert res.new and res.n_frames == 200
    key = res.key
    info = (acquisition.RecordingInfo & key).fetch1()
    assert (info["n_frames"], info["height"], info["width"]) == (200, 64, 80)
    np.testing.assert_array_equal(info["timestamps"], gt["timestamps"])
    assert info["n_dropped_frames"] == 2 and info["dropped_after"].tolist() == gt["dropped_after"]
    assert info["timing_source"] == "acquisition_clock" and info["nominal_fps"] == 20.0
    assert info["device_metadata"]["deviceType"] == "Miniscope_V4_BNO"
    assert str(info["recording_start"]) == "2026-01-05 10:00:00"
    files = (acquisition.RecordingInfo.File & key).to_dicts(order_by="file_index")
    assert [f["file_name"] for f in files] == [f"{i}.avi" for i in range(5)]
    assert [f["first_frame"] for f in files] == [0, 40, 80, 120, 160]
    rec = (acquisition.Recording & key).fetch1()
    assert rec["acquisition_system"] == "miniscope_v4"
    assert (acquisition.Recording & key).absolute_path() == next(sim_v4.glob("*/My_V4_Miniscope"))
    assert str((Session & key).fetch1("session_start_time")) == "2026-01-05 10:00:00"
    # the stored file list reads back the same movie as the files on disk
    movie = (acquisition.RecordingInfo & key).movie(chunk_frames=32)
    direct = io.read_metadata(io.discover(sim_v4)[0]).movie()
    np.testing.assert_array_equal(movie[150:170].compute(), direct[150:170].compute())


def test_reingest_is_noop(db, sim_v4):
    first = ingest(sim_v4, subject="m1", session="d1")
    before = _counts()
    again = ingest(sim_v4, subject="m1", session="d1")
    assert [r.new for r in again] == [False] and again[0].key == first[0].key
    assert _counts() == before == (1, 1, 1, 1, 5)


def test_reingest_under_other_subject_refused(db, sim_v4):
    ingest(sim_v4, subject="m1", session="d1")
    with pytest.raises(IngestError, match="already ingested as subject 'm1'"):
        ingest(sim_v4, subject="m2", session="d1")
    assert not (Subject & {"subject": "m2"})


def test_ingest_v3_and_tiff(db, tmp_path):
    p = sim.SimulationParams(height=32, width=40, n_frames=70, n_cells=3, frames_per_file=30, seed=2)
    sim.simulate(tmp_path / "v3", p, layout="v3")
    sim.simulate(tmp_path / "tif", p, layout="tiff")
    (v3,) = ingest(tmp_path / "v3", "ANM-042", "s1", fps=99)  # ignored: V3 has a clock
    (tif,) = ingest(tmp_path / "tif" / "movie.tif", "ANM-042", "s1", fps=20)
    assert v3.key["recording_id"] == 0 and tif.key["recording_id"] == 1
    assert (acquisition.Recording & v3.key).fetch1("acquisition_system") == "miniscope_v3"
    rows = (acquisition.RecordingInfo & {"subject": "ANM-042"}).to_dicts(order_by="recording_id")
    assert [r["n_frames"] for r in rows] == [70, 70]
    assert [r["timing_source"] for r in rows] == ["acquisition_clock", "nominal"]
    assert rows[1]["fps"] == pytest.approx(20) and rows[1]["nominal_fps"] == 20
    assert (acquisition.Recording & tif.key).fetch1("fps_given") == 20
    assert (acquisition.Recording & v3.key).fetch1("fps_given") is None  # a clock: nothing given


def test_pattern_identity(db, tmp_path):
    folder = tmp_path / "m7" / "2026_02_01"
    sim.simulate(folder, sim.SimulationParams(height=32, width=32, n_frames=30, n_cells=2))
    (res,) = ingest(folder, pattern="**/{subject}/{session}/*/*")
    assert res.key["subject"] == "m7" and res.key["session"] == "2026_02_01"
    with pytest.raises(IngestError, match="does not match the pattern"):
        ingest(folder, pattern="**/{subject}/{session}/nothing/*")
    with pytest.raises(IngestError, match="no subject and no session given"):
        ingest(folder)


def test_match_pattern_double_star():
    assert match_pattern("{subject}/**/{session}", "m3/extra/levels/d9") == {"subject": "m3", "session": "d9"}
    assert match_pattern("{subject}/**/{session}", "m3/d9") == {"subject": "m3", "session": "d9"}
    assert match_pattern("lab/{subject}/{session}/**", "lab/m1/s2/10_00_00/Miniscope") == {"subject": "m1", "session": "s2"}
    with pytest.raises(IngestError, match="does not match"):
        match_pattern("lab/{subject}/{session}", "other/m1/s2")
    with pytest.raises(IngestError, match="appears more than once"):
        match_pattern("{subject}/{subject}", "a/b")


def test_several_recordings_in_one_session_folder(db, tmp_path):
    import datetime as dt

    p = sim.SimulationParams(height=32, width=32, n_frames=40, n_cells=2)
    (tmp_path / "session").mkdir()
    for i, hour in enumerate((9, 14)):
        sim.simulate(tmp_path / f"part{i}", p, start_time=dt.datetime(2026, 3, 1, hour))
        shutil.move(str(next((tmp_path / f"part{i}").glob("*_00_00"))), tmp_path / "session")
    res = ingest(tmp_path / "session", "m1", "2026_03_01")
    assert [r.key["recording_id"] for r in res] == [0, 1]
    assert [r.path.split("/")[-2] for r in res] == ["09_00_00", "14_00_00"]


BAD_INPUTS = {
    "truncated_avi": lambda dev: (dev / "2.avi").write_bytes((dev / "2.avi").read_bytes()[:20000]),
    "corrupt_avi": lambda dev: (dev / "1.avi").write_bytes(b"RIFF" + bytes(9000)),
    "missing_timestamps": lambda dev: (dev / "timeStamps.csv").unlink(),
    "timestamp_count": lambda dev: (dev / "timeStamps.csv").write_text(
        "\n".join((dev / "timeStamps.csv").read_text().splitlines()[:-3]) + "\n"),
    "frame_size": lambda dev: shutil.copy(_small_avi(dev), dev / "4.avi"),
    "metadata_json": lambda dev: (dev / "metaData.json").write_text("garbage"),
}
EXPECTED_FILE = {"truncated_avi": "2.avi", "corrupt_avi": "1.avi", "missing_timestamps": "timeStamps.csv",
                 "timestamp_count": "timeStamps.csv", "frame_size": "4.avi", "metadata_json": "metaData.json"}


def _small_avi(dev):
    import cv2

    path = dev.parents[2] / "small.avi"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 20, (40, 30), isColor=False)
    for _ in range(40):
        vw.write(np.zeros((30, 40), np.uint8))
    vw.release()
    return path


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_rejected_without_rows(db, sim_v4, tmp_path, case):
    shutil.copytree(sim_v4, tmp_path / "rec")
    dev = next((tmp_path / "rec").glob("*/My_V4_Miniscope"))
    BAD_INPUTS[case](dev)
    with pytest.raises(io.RecordingError) as err:
        ingest(tmp_path / "rec", subject="bad", session="s")
    assert EXPECTED_FILE[case] in str(err.value)
    assert _counts() == (0, 0, 0, 0, 0)


def test_empty_folder_rejected(db, tmp_path):
    with pytest.raises(io.RecordingError, match="no recording found"):
        ingest(tmp_path, subject="bad", session="s")
    assert _counts() == (0, 0, 0, 0, 0)


def test_one_bad_recording_blocks_the_batch(db, tmp_path):
    """Two recordings in a session folder, the second broken: neither is inserted."""
    import datetime as dt

    p = sim.SimulationParams(height=32, width=32, n_frames=40, n_cells=2, frames_per_file=20)
    (tmp_path / "session").mkdir()
    for i, hour in enumerate((9, 14)):
        sim.simulate(tmp_path / f"part{i}", p, start_time=dt.datetime(2026, 3, 1, hour))
        shutil.move(str(next((tmp_path / f"part{i}").glob("*_00_00"))), tmp_path / "session")
    (tmp_path / "session" / "14_00_00" / "My_V4_Miniscope" / "timeStamps.csv").unlink()
    with pytest.raises(io.RecordingError, match="14_00_00/My_V4_Miniscope/timeStamps.csv: missing"):
        ingest(tmp_path / "session", "m1", "d")
    assert _counts() == (0, 0, 0, 0, 0)


def test_real_ca1_recording(db):
    path = shared_data("ca1_miniscope_v3", "ca1_500x240x376_uint8.tif")
    (res,) = ingest(path, subject="ca1", session="minian_demo", fps=15)
    info = (acquisition.RecordingInfo & res.key).fetch1()
    assert (info["n_frames"], info["height"], info["width"]) == (500, 240, 376)
    assert info["fps"] == pytest.approx(15) and info["duration"] == pytest.approx(500 / 15)
    assert (acquisition.RecordingInfo.File & res.key).fetch1("file_size") == path.stat().st_size


def test_populate_recording_info_from_manual_rows(db, sim_v4):
    """A Recording inserted by hand gets its RecordingInfo from populate (three-part make)."""
    Subject.insert1({"subject": "m9"})
    Session.insert1({"subject": "m9", "session": "s"})
    dev = next(sim_v4.glob("*/My_V4_Miniscope"))
    key = {"subject": "m9", "session": "s", "recording_id": 0}
    acquisition.Recording.insert1({**key, "acquisition_system": "miniscope_v4",
                                   "recording_path": acquisition.relative_path(dev)})
    out = acquisition.RecordingInfo.populate(key)
    assert out["success_count"] == 1
    assert (acquisition.RecordingInfo & key).fetch1("n_frames") == 200
    assert len(acquisition.RecordingInfo.File & key) == 5


def test_paths_relative_to_data_root(db, tmp_path, monkeypatch):
    """Paths are stored under the data root, so the database survives the data moving elsewhere."""
    root_a = tmp_path / "mount_a"
    sim.simulate(root_a / "m1" / "d1", sim.SimulationParams(height=32, width=32, n_frames=30, n_cells=2))
    monkeypatch.setenv("SCOPELINE_DATA_ROOT", str(root_a))
    (res,) = ingest(root_a / "m1" / "d1", pattern="{subject}/{session}/*/*")
    assert res.path == "m1/d1/10_00_00/My_V4_Miniscope"
    first = (acquisition.RecordingInfo & res.key).movie()[5].compute()
    shutil.move(str(root_a), tmp_path / "mount_b")
    monkeypatch.setenv("SCOPELINE_DATA_ROOT", str(tmp_path / "mount_b"))
    np.testing.assert_array_equal((acquisition.RecordingInfo & res.key).movie()[5].compute(), first)
    sim.simulate(tmp_path / "elsewhere", sim.SimulationParams(height=32, width=32, n_frames=30, n_cells=2))
    with pytest.raises(IngestError, match="outside the data root"):
        ingest(tmp_path / "elsewhere", "m1", "d2")
