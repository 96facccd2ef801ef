"""core.io: layout discovery, timing, validation of bad input, and the lazy reader (no database)."""

from __future__ import annotations

import json
import shutil
import tracemalloc
from pathlib import Path

import cv2
import dask
import numpy as np
import pytest
from conftest import shared_data

from scopeline.core import io
from scopeline.core import simulate as sim


def _v4_copy(sim_v4: Path, tmp_path: Path) -> Path:
    out = tmp_path / "rec"
    shutil.copytree(sim_v4, out)
    return next(out.glob("*/My_V4_Miniscope"))


def _write_avi(path: Path, frames: np.ndarray, fps: float = 20.0) -> None:
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), fps,
                         (frames.shape[2], frames.shape[1]), isColor=False)
    for f in frames:
        vw.write(f)
    vw.release()


def test_natural_key_orders_numbers():
    names = ["10.avi", "2.avi", "1.avi", "msCam10.avi", "msCam9.avi"]
    assert sorted(names, key=io.natural_key) == ["1.avi", "2.avi", "10.avi", "msCam9.avi", "msCam10.avi"]


def test_v4_files_read_in_numeric_order(tmp_path):
    """12 files whose frames hold their file index: 10.avi and 11.avi must come after 9.avi."""
    dev = tmp_path / "12_00_00" / "Miniscope"
    dev.mkdir(parents=True)
    for i in range(12):
        _write_avi(dev / f"{i}.avi", np.full((3, 16, 24), 10 * i, np.uint8))
    (dev / "metaData.json").write_text(json.dumps({"deviceType": "Miniscope_V4_BNO", "frameRate": "20FPS"}))
    with open(dev / "timeStamps.csv", "w") as fh:
        fh.write("Frame Number,Time Stamp (ms),Buffer Index\n")
        fh.writelines(f"{i},{50 * i},0\n" for i in range(36))
    (source,) = io.discover(tmp_path)
    assert source.system == "miniscope_v4"
    assert [p.name for p in source.files] == [f"{i}.avi" for i in range(12)]
    meta = io.read_metadata(source)
    movie = meta.movie(chunk_frames=2).compute()
    np.testing.assert_array_equal(movie[:, 0, 0], np.repeat(10 * np.arange(12), 3))
    assert meta.nominal_fps == 20.0 and meta.fps == pytest.approx(20.0)


def test_v4_simulated_timing_exact(sim_v4):
    gt = sim.load_ground_truth(sim_v4)
    (source,) = io.discover(sim_v4)
    meta = io.read_metadata(source)
    assert meta.n_frames == 200 and (meta.height, meta.width) == (64, 80)
    assert [f.n_frames for f in meta.files] == [40] * 5
    np.testing.assert_array_equal(meta.timestamps, gt["timestamps"])
    assert meta.n_dropped_frames == 2
    assert meta.dropped_after.tolist() == gt["dropped_after"]
    assert meta.fps == pytest.approx(20.0, rel=1e-3)
    assert meta.start_time.isoformat() == "2026-01-05T10:00:00"
    assert meta.device["deviceType"] == "Miniscope_V4_BNO"


def test_layouts_hold_identical_pixels(tmp_path):
    """The same simulation written as split V4 AVIs, V3 AVIs and one TIFF reads back identically."""
    params = sim.SimulationParams(height=48, width=56, n_frames=90, n_cells=5, frames_per_file=25, seed=7)
    movies = {}
    for layout in sim.LAYOUTS:
        sim.simulate(tmp_path / layout, params, layout=layout)
        (source,) = io.discover(tmp_path / layout)
        meta = io.read_metadata(source, fps=params.fps)
        assert meta.n_frames == 90
        movies[layout] = meta.movie(chunk_frames=16).compute()
    np.testing.assert_array_equal(movies["v4"], movies["tiff"])
    np.testing.assert_array_equal(movies["v3"], movies["tiff"])


def test_v3_timestamps_pick_miniscope_camera(tmp_path):
    params = sim.SimulationParams(height=32, width=32, n_frames=60, n_cells=3, frames_per_file=25, seed=1)
    sim.simulate(tmp_path, params, layout="v3")
    gt = sim.load_ground_truth(tmp_path)
    (source,) = io.discover(tmp_path)
    assert source.system == "miniscope_v3"
    assert [p.name for p in source.files] == ["msCam1.avi", "msCam2.avi", "msCam3.avi"]
    meta = io.read_metadata(source)
    assert meta.device["camNum"] == 1 and meta.device["msCamExposure"] == "255"
    np.testing.assert_allclose(meta.timestamps[1:], gt["timestamps"][1:])
    assert abs(meta.timestamps[0] - gt["timestamps"][0]) < 0.003  # junk first sysClock repaired


def test_tiff_needs_fps(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "movie.tif", np.zeros((20, 32, 32), np.uint16))
    (source,) = io.discover(tmp_path / "movie.tif")
    with pytest.raises(io.RecordingError, match=r"movie\.tif: no frame rate"):
        io.read_metadata(source)
    meta = io.read_metadata(source, fps=12.5)
    assert meta.timing_source == "nominal" and meta.fps == pytest.approx(12.5) and meta.dtype == "uint16"
    assert meta.timestamps[-1] == pytest.approx(19 / 12.5)


def test_tiff_frame_rate_from_file(tmp_path):
    sim.simulate(tmp_path, sim.SimulationParams(height=32, width=32, n_frames=20, n_cells=2, fps=12.5), layout="tiff")
    meta = io.read_metadata(io.discover(tmp_path / "movie.tif")[0])
    assert meta.fps == pytest.approx(12.5) and meta.nominal_fps == 12.5


def test_rgb_tiff_refused(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((40, 50, 3), np.uint8))
    with pytest.raises(io.RecordingError, match=r"rgb\.tif: expected a grayscale stack"):
        io.read_metadata(io.discover(tmp_path / "rgb.tif")[0], fps=10)


def test_daq_device_names_and_behaviour_camera(tmp_path):
    """The V4 DAQ lists "My V4 Miniscope" but names its folder My_V4_Miniscope; BehavCam_0 is skipped."""
    time_folder = tmp_path / "m1" / "2026_11_21" / "15_03_28"
    for name in ("My_V4_Miniscope", "BehavCam_0"):
        dev = time_folder / name
        dev.mkdir(parents=True)
        _write_avi(dev / "0.avi", np.zeros((4, 16, 16), np.uint8))
        (dev / "metaData.json").write_text(json.dumps({"deviceName": name.replace("_", " ")}))
        (dev / "timeStamps.csv").write_text("Frame Number,Time Stamp (ms),Buffer Index\n0,0,0\n1,33,0\n2,67,0\n3,100,0\n")
    (time_folder / "metaData.json").write_text(json.dumps({
        "miniscopes": ["My V4 Miniscope"], "cameras": ["BehavCam 0"],
        "year": 2026, "month": 11, "day": 21, "hour": 15, "minute": 3, "second": 28, "msec": 5}))
    (source,) = io.discover(tmp_path / "m1")
    assert source.system == "miniscope_v4" and source.folder.name == "My_V4_Miniscope"
    meta = io.read_metadata(source)
    assert meta.start_time.isoformat() == "2026-11-21T15:03:28.005000"  # top-level start time keys


def test_fps_from_whole_millisecond_clock():
    """30 Hz on a 1 ms clock gives intervals of 33 and 34 ms: the measured rate must still be 30 Hz."""
    ts = np.round(np.arange(3000) * 1000 / 30) / 1000
    fps, gaps, n = io.frame_timing(ts, "x")
    assert fps == pytest.approx(30.0, rel=1e-3) and n == 0 and gaps.size == 0
    ts_gap = np.delete(ts, [100, 200, 201])
    fps, gaps, n = io.frame_timing(ts_gap, "x")
    assert fps == pytest.approx(30.0, rel=1e-3) and n == 3 and gaps.tolist() == [99, 198]


def test_real_ca1_tiff():
    path = shared_data("ca1_miniscope_v3", "ca1_500x240x376_uint8.tif")
    (source,) = io.discover(path)
    meta = io.read_metadata(source, fps=15)
    assert (meta.n_frames, meta.height, meta.width, meta.dtype) == (500, 240, 376, "uint8")
    movie = meta.movie()
    assert movie.chunks[0][0] < 500  # chunked by frames, not one block
    frame = movie[250].compute()
    assert frame.shape == (240, 376) and frame.max() > frame.min()


def test_real_wireless_avi_header_rate():
    path = shared_data("wireless_corrupted_frames", "wireless_corrupted.avi")
    meta = io.read_metadata(io.discover(path)[0])
    assert (meta.n_frames, meta.height, meta.width) == (60, 200, 200)
    assert meta.fps == pytest.approx(20.0)


# ---------------------------------------------------------------------------------- bad input


def test_truncated_avi(sim_v4, tmp_path):
    dev = _v4_copy(sim_v4, tmp_path)
    data = (dev / "2.avi").read_bytes()
    (dev / "2.avi").write_bytes(data[: len(data) // 2])
    with pytest.raises(io.RecordingError, match=r"2\.avi: truncated or corrupt"):
        io.read_metadata(io.discover(dev)[0])


def test_corrupt_avi(sim_v4, tmp_path):
    dev = _v4_copy(sim_v4, tmp_path)
    (dev / "1.avi").write_bytes(b"RIFF" + bytes(range(256)) * 40)
    with pytest.raises(io.RecordingError, match=r"1\.avi: (cannot be opened|no decodable frame)"):
        io.read_metadata(io.discover(dev)[0])


def test_missing_timestamps(sim_v4, tmp_path):
    dev = _v4_copy(sim_v4, tmp_path)
    (dev / "timeStamps.csv").unlink()
    with pytest.raises(io.RecordingError, match=r"timeStamps\.csv: missing"):
        io.read_metadata(io.discover(dev)[0])


def test_timestamp_count_mismatch(sim_v4, tmp_path):
    dev = _v4_copy(sim_v4, tmp_path)
    lines = (dev / "timeStamps.csv").read_text().splitlines()
    (dev / "timeStamps.csv").write_text("\n".join(lines[:-5]) + "\n")
    with pytest.raises(io.RecordingError, match=r"timeStamps\.csv: 195 timestamps but the movie files hold 200 frames"):
        io.read_metadata(io.discover(dev)[0])


def test_frame_size_mismatch(sim_v4, tmp_path):
    dev = _v4_copy(sim_v4, tmp_path)
    _write_avi(dev / "3.avi", np.zeros((40, 60, 80), np.uint8))
    with pytest.raises(io.RecordingError, match=r"3\.avi: frame size 60x80 differs from 64x80 of 0\.avi"):
        io.read_metadata(io.discover(dev)[0])


def test_empty_folder(tmp_path):
    with pytest.raises(io.RecordingError, match="no recording found"):
        io.discover(tmp_path)


def test_missing_path(tmp_path):
    with pytest.raises(io.RecordingError, match="no such file or folder"):
        io.discover(tmp_path / "nope")


def test_unreadable_metadata_json(sim_v4, tmp_path):
    dev = _v4_copy(sim_v4, tmp_path)
    (dev / "metaData.json").write_text("{ not json")
    with pytest.raises(io.RecordingError, match=r"My_V4_Miniscope/metaData\.json: unreadable"):
        io.read_metadata(io.discover(dev)[0])


def test_decreasing_timestamps(sim_v4, tmp_path):
    dev = _v4_copy(sim_v4, tmp_path)
    lines = (dev / "timeStamps.csv").read_text().splitlines()
    lines[11] = "10,1,0"
    (dev / "timeStamps.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(io.RecordingError, match=r"timeStamps\.csv: timestamps do not increase after frames \[9\]"):
        io.read_metadata(io.discover(dev)[0])


# --------------------------------------------------------------------------------- memory


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_reader_memory_flat_in_frames(tmp_path):
    """A max projection over 4x more frames needs no more memory: chunks stream through.

    Chunks of 100 frames (1.6 MB) against the task graph's share of the peak (about 15 kB a chunk,
    so 40-frame chunks left the 4x movie's graph at a third of the chunk: a margin too thin for a
    suite in which other tests leave caches behind). The lower of two passes is taken for each."""
    peaks = {}
    for n in (240, 960):
        params = sim.SimulationParams(height=128, width=128, n_frames=n, n_cells=5, frames_per_file=200, seed=2)
        sim.simulate(tmp_path / str(n), params)
        meta = io.read_metadata(io.discover(tmp_path / str(n))[0])
        movie = meta.movie(chunk_frames=100)
        with dask.config.set(scheduler="synchronous"):
            peaks[n] = min(_peak_bytes(lambda: movie.max(axis=0).compute()) for _ in range(2))
    assert peaks[960] < 1.3 * peaks[240], peaks
    assert peaks[960] < 0.2 * 960 * 128 * 128  # far below the movie's size


def test_video_readers_continue_where_blocks_end(tmp_path):
    """Blocks read through the kept readers hold exactly the file's frames whatever the order (next
    block, a few frames on, backwards, far ahead), and a block starting where another ended reuses
    that reader instead of seeking."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (120, 24, 32), dtype=np.uint8)
    path = tmp_path / "0.avi"
    _write_avi(path, frames)
    io._VIDEO_READERS.clear()
    for a, b in [(0, 10), (10, 30), (35, 50), (5, 15), (100, 120), (50, 51), (0, 120)]:
        block = io._read_avi(str(path), a, b, 24, 32, "uint8")
        assert np.array_equal(block, frames[a:b]), (a, b)
    io._VIDEO_READERS.clear()
    io._read_avi(str(path), 0, 10, 24, 32, "uint8")
    io._read_avi(str(path), 10, 20, 24, 32, "uint8")
    assert [pos for _, pos, _ in io._VIDEO_READERS._idle] == [20]  # one reader, carried on
    io.close_video_readers()
    assert io._VIDEO_READERS._idle == []


def test_video_readers_see_a_rewritten_file(tmp_path):
    """A file replaced on disk is read anew, not through a reader opened on the old one."""
    path = tmp_path / "0.avi"
    _write_avi(path, np.zeros((20, 16, 16), np.uint8))
    io._read_avi(str(path), 0, 10, 16, 16, "uint8")
    _write_avi(path, np.full((30, 16, 16), 200, np.uint8))
    assert (io._read_avi(str(path), 10, 20, 16, 16, "uint8") == 200).all()
    io._VIDEO_READERS.clear()
