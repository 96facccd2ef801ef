"""Recording formats as a registry: a new format is one class, and then it is discovered, validated,
ingested, listed in the database and read by the motion stage with no other edit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scopeline.core import formats, io
from scopeline.pipeline import acquisition, motion
from scopeline.pipeline.ingest import ingest


class NpyStack(formats.RecordingFormat):
    """A folder holding ``frames.npy`` (frames, height, width) uint8 and ``rate.txt`` (Hz)."""

    name = "npy_stack"
    description = "NumPy stack: frames.npy and rate.txt"

    def source_in(self, folder):
        return io.RecordingSource(self.name, folder, [folder / "frames.npy"]) if (folder / "frames.npy").is_file() \
            else None

    def probe(self, path):
        n, h, w = np.load(path, mmap_mode="r").shape
        return formats.FileInfo(n, h, w, "uint8", float((path.parent / "rate.txt").read_text()))

    @staticmethod
    def read(path, start, stop, height, width, dtype):
        return np.asarray(np.load(path, mmap_mode="r")[start:stop], dtype=dtype)


@pytest.fixture
def npy_format():
    fmt = formats.register(NpyStack(), before="avi")
    yield fmt
    formats.unregister("npy_stack")


def _stack(folder: Path, n: int = 120) -> np.ndarray:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    frames = (rng.random((n, 40, 48)) * 40 + 60).astype(np.uint8)
    np.save(folder / "frames.npy", frames)
    (folder / "rate.txt").write_text("12.5")
    return frames


def test_the_shipped_formats_are_the_registry():
    assert [f.name for f in formats.FORMATS] == ["miniscope_v4", "miniscope_v3", "tiff", "avi"]
    assert formats.get("miniscope_v4").device_model == "UCLA Miniscope V4"
    with pytest.raises(io.RecordingError, match="unknown recording format 'x'.*miniscope_v4"):
        formats.get("x")


def test_a_new_format_is_one_class(npy_format, tmp_path):
    frames = _stack(tmp_path / "rec")
    (source,) = io.discover(tmp_path)
    assert source.system == "npy_stack"
    meta = io.read_metadata(source)
    assert (meta.n_frames, meta.height, meta.width, meta.fps, meta.timing_source) == (120, 40, 48, 12.5, "nominal")
    np.testing.assert_array_equal(meta.movie(chunk_frames=50)[30:90].compute(), frames[30:90])
    with pytest.raises(io.RecordingError, match="registered already"):
        formats.register(NpyStack())


@pytest.mark.db
def test_a_new_format_goes_through_ingestion_and_motion_correction(db, npy_format, tmp_path):
    _stack(tmp_path / "rec")
    (rec,) = ingest(tmp_path / "rec", "fmt1", "d1")
    assert (acquisition.Recording & rec.key).fetch1("acquisition_system") == "npy_stack"
    assert (acquisition.AcquisitionSystem & {"acquisition_system": "npy_stack"}).fetch1("system_description") \
        == NpyStack.description
    motion.MotionParamSet.insert1({"motion_paramset": "small", "params": {
        "registration": {"template_frames": 40}, "block_frames": 40, "chunk_frames": 40}})
    motion.MotionTask.insert1({**rec.key, "motion_paramset": "small"})
    assert motion.MotionCorrection.populate(reserve_jobs=True)["success_count"] == 1
    assert (motion.MotionCorrection & rec.key).fetch1("n_frames") == 120
