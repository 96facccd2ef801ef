"""The stored movie's format and reading, and the fingerprint of what a stage fetched (no database)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import zarr

from scopeline.core.footprints import read_frames
from scopeline.pipeline._objects import create_zarr
from scopeline.pipeline._util import fingerprint


def test_stored_movie_is_lz4_in_row_strips_and_reads_back_as_float32(tmp_path):
    rng = np.random.default_rng(0)
    movie = (rng.random((30, 64, 48)) * 100).astype(np.float16)
    movie[3, 5, 7] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither writing nor opening warns (zarr does for LZ4 in format 3)
        a = create_zarr(str(tmp_path / "m.zarr"), movie.shape, (10, 16, 48), "float16")
        a[:] = movie
        back = zarr.open_array(str(tmp_path / "m.zarr"), mode="r")
    assert back.metadata.zarr_format == 2 and "lz4" in str(back.compressors).lower()
    frames = read_frames(back, 2, 12)
    assert frames.dtype == np.float32 and frames.shape == (10, 64, 48)
    expected = np.nan_to_num(movie[2:12].astype(np.float32), nan=0.0)
    np.testing.assert_array_equal(frames, expected)  # OpenCV's float16 conversion is numpy's, exactly


class _Ref:
    """Stands for DataJoint's lazy <npy@> reference: metadata, and a load that must not be called."""

    def __init__(self, path):
        self._meta = {"path": path, "shape": [3], "dtype": "<f4"}

    def load(self):
        raise AssertionError("the fingerprint must not load a reference")


def test_fingerprint_follows_the_data_not_the_objects():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    base = fingerprint(({"movie": _Ref("a.npy")}, x, 30.0, {"p": 1}))
    assert base == fingerprint(({"movie": _Ref("a.npy")}, x.copy(), 30.0, {"p": 1}))
    y = x.copy()
    y[2, 3] += 1
    assert base != fingerprint(({"movie": _Ref("a.npy")}, y, 30.0, {"p": 1}))  # one element
    assert base != fingerprint(({"movie": _Ref("b.npy")}, x, 30.0, {"p": 1}))  # another stored array
    assert base != fingerprint(({"movie": _Ref("a.npy")}, x.astype(np.float64), 30.0, {"p": 1}))  # dtype
    assert base != fingerprint(({"movie": _Ref("a.npy")}, x.reshape(4, 3), 30.0, {"p": 1}))  # shape
    assert base != fingerprint(({"movie": _Ref("a.npy")}, x, 30.0, {"p": 2}))
    with pytest.raises(TypeError, match="no stable repr"):
        fingerprint((object(),))
