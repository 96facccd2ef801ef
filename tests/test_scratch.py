"""core.scratch: working arrays that go to disk beyond a memory budget read back exactly."""

from __future__ import annotations

import os

import numpy as np
import pytest
import zarr

from scopeline.core.scratch import ColumnWriter, Scratch, row_blocks, select_rows, take_rows


def test_arrays_beyond_the_budget_go_to_disk_and_read_back_exactly():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(600, 2345)).astype(np.float16)
    with Scratch(budget_mb=2) as scratch:
        small = scratch.array((10, 100), np.float32)
        big = scratch.array(values.shape, np.float16, row_chunk=256, col_chunk=1000)
        assert isinstance(small, np.ndarray) and isinstance(big, zarr.Array) and scratch.on_disk
        where = scratch._dir
        assert os.path.isdir(where)
        with ColumnWriter(big) as out:  # blocks of 100 frames, chunks of 1,000: buffered
            for a in range(0, values.shape[1], 100):
                out.write(a, values[:, a: a + 100])
        assert np.array_equal(np.asarray(big[:]), values)
        rows = np.array([3, 4, 5, 7, 300, 599])
        assert np.array_equal(take_rows(big, rows), values[rows].astype(np.float32))
        seen = np.concatenate([v for _, v in row_blocks(big, block=256)])
        assert np.array_equal(seen, values.astype(np.float32))
    assert not os.path.exists(where)


def test_in_memory_arrays_are_written_directly():
    with Scratch(budget_mb=1) as scratch:
        arr = scratch.array((4, 50), np.float32)
        with ColumnWriter(arr) as out:
            out.write(0, np.ones((4, 30)))
            out.write(30, 2 * np.ones((4, 20)))
        assert not scratch.on_disk and arr[:, :30].sum() == 120 and arr[:, 30:].sum() == 160


def test_select_rows_in_place_is_fancy_indexing_without_a_copy():
    rng = np.random.default_rng(4)
    for trial in range(200):
        k = int(rng.integers(1, 40))
        values = rng.normal(size=(k, 13)).astype(np.float32)
        rows = rng.permutation(k)[: rng.integers(0, k + 1)]
        if trial % 3 == 0:
            rows = np.sort(rows)
        if trial % 3 == 1:
            rows = rng.random(k) < 0.5  # a mask
        want = values[rows].copy()
        got = select_rows(values, rows)
        assert np.array_equal(got, want) and (np.shares_memory(got, values) or not len(got))
    with pytest.raises(ValueError, match="distinct"):
        select_rows(np.zeros((5, 2)), np.array([1, 1]))
    with pytest.raises(ValueError, match="distinct"):
        select_rows(np.zeros((5, 2)), np.array([5]))
