"""Working arrays that grow with the recording (units x frames), kept in memory while they are small
and in a temporary Zarr store on disk when they are not, so that a stage's memory does not grow with
the recording's length.

Both kinds are written by column blocks (frames, in order) through :class:`ColumnWriter` and read by
row blocks (:func:`row_blocks`) or column blocks (``array[:, a:b]``): numpy and Zarr arrays answer
the same slices.
"""

from __future__ import annotations

import shutil
import tempfile
from typing import Iterator, Optional, Union

import numpy as np
import zarr

Array = Union[np.ndarray, zarr.Array]

#: Default budget of a :class:`Scratch` for in-memory arrays, MiB.
BUDGET_MB = 256


class Scratch:
    """Arrays for one computation: numpy while their total fits ``budget_mb``, else Zarr on disk.

    Use as a context manager; the temporary directory (if any) is deleted on exit.

    Parameters
    ----------
    budget_mb : float, optional
        Memory allowed for all in-memory arrays together, MiB (default :data:`BUDGET_MB`); arrays
        beyond it go to disk.
    directory : str, optional
        Where the temporary directory is made (default: the system's temporary directory).
    """

    def __init__(self, budget_mb: Optional[float] = None, directory: Optional[str] = None):
        self.budget = (BUDGET_MB if budget_mb is None else budget_mb) * 2**20
        self.used = 0
        self._parent = directory
        self._dir: Optional[str] = None
        self._count = 0

    def array(self, shape: tuple[int, int], dtype, row_chunk: int = 256, col_chunk: int = 1000) -> Array:
        """A new (rows, columns) array, zero-filled; on disk with chunks (``row_chunk``, ``col_chunk``)
        when it would not fit what is left of the budget."""
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if self.used + nbytes <= self.budget:
            self.used += nbytes
            return np.zeros(shape, dtype)
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="scopeline-scratch-", dir=self._parent)
        self._count += 1
        chunks = (max(1, min(row_chunk, shape[0])), max(1, min(col_chunk, shape[1])))
        path = f"{self._dir}/a{self._count}.zarr"
        if hasattr(zarr, "create_array"):
            return zarr.create_array(path, shape=shape, chunks=chunks, dtype=dtype, fill_value=0,
                                     compressors=None, config={"write_empty_chunks": True})
        return zarr.open_array(path, mode="w", shape=shape, chunks=chunks, dtype=dtype, fill_value=0,
                               compressor=None, write_empty_chunks=True)  # zarr 2 (Python 3.10)

    @property
    def on_disk(self) -> bool:
        """Whether any array went to disk."""
        return self._dir is not None

    def close(self) -> None:
        """Delete the arrays on disk."""
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> "Scratch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ColumnWriter:
    """Writes consecutive column blocks into an array, buffered to whole chunks for Zarr arrays
    (a partial chunk write would read and rewrite the chunk each time)."""

    def __init__(self, array: Array):
        self.array = array
        width = array.chunks[1] if isinstance(array, zarr.Array) else 0
        self._buf = np.empty((array.shape[0], width), array.dtype) if width else None
        self._start = 0
        self._fill = 0

    def write(self, start: int, block: np.ndarray) -> None:
        """Write ``block`` (rows, k) at columns ``start:start + k``; blocks must come in order."""
        if self._buf is None:
            self.array[:, start: start + block.shape[1]] = block
            return
        done = 0
        while done < block.shape[1]:
            take = min(self._buf.shape[1] - self._fill, block.shape[1] - done)
            self._buf[:, self._fill: self._fill + take] = block[:, done: done + take]
            self._fill += take
            done += take
            if self._fill == self._buf.shape[1]:
                self.flush()

    def flush(self) -> None:
        """Write what is buffered."""
        if self._buf is not None and self._fill:
            self.array[:, self._start: self._start + self._fill] = self._buf[:, : self._fill]
            self._start += self._fill
            self._fill = 0

    def __enter__(self) -> "ColumnWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.flush()


def row_blocks(array: Array, rows: Optional[np.ndarray] = None, block: int = 256,
               dtype=np.float32) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(i, values)``: ``values`` (k, columns) in ``dtype`` are the rows ``rows[i:i + k]`` (all
    rows when None), read ``block`` rows at a time."""
    idx = np.arange(array.shape[0]) if rows is None else np.asarray(rows, int)
    for i in range(0, len(idx), block):
        part = idx[i: i + block]
        if len(part) and part[-1] - part[0] == len(part) - 1:
            values = array[int(part[0]): int(part[-1]) + 1]
        elif isinstance(array, zarr.Array):
            values = array.get_orthogonal_selection((part, slice(None)))
        else:
            values = array[part]
        yield i, np.asarray(values, dtype=dtype)


def take_rows(array: Array, rows: np.ndarray, dtype=np.float32) -> np.ndarray:
    """(len(rows), columns) array of the given rows, in ``dtype``."""
    out = np.empty((len(rows), array.shape[1]), dtype)
    for i, values in row_blocks(array, rows, dtype=dtype):
        out[i: i + len(values)] = values
    return out


def select_rows(array: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``array[rows]`` without a second copy of ``array``: the rows are moved within it.

    Fancy indexing copies the selected rows while the original is still alive, so a (units, frames)
    array briefly needs twice its size; this moves rows in place, one row of extra memory.

    Parameters
    ----------
    array : numpy.ndarray
        (rows, ...) in memory; overwritten.
    rows : numpy.ndarray
        bool (rows,) mask, or int indices (distinct, any order).

    Returns
    -------
    numpy.ndarray
        ``array[:len(rows)]`` (a view: its memory stays ``array``'s), holding what ``array[rows]`` would.

    Raises
    ------
    ValueError
        If an index repeats or is out of range.
    """
    rows = np.asarray(rows)
    idx = np.flatnonzero(rows) if rows.dtype == bool else rows.astype(np.intp)
    m = len(idx)
    if m and (idx.min() < 0 or idx.max() >= len(array) or len(np.unique(idx)) != m):
        raise ValueError(f"rows must be distinct indices in [0, {len(array)}), got {m} of them")
    order = np.argsort(idx, kind="stable")
    for j, r in enumerate(idx[order]):  # increasing, r >= j: every row moves up, never onto one still needed
        if r != j:
            array[j] = array[r]
    perm = np.argsort(order)  # now array[:m][perm] is the selection: apply that gather in place, by cycles
    seen = np.zeros(m, bool)
    for start in range(m):
        if seen[start] or perm[start] == start:
            continue
        held, i = array[start].copy(), start
        while True:
            seen[i] = True
            nxt = perm[i]
            if nxt == start:
                array[i] = held
                break
            array[i], i = array[nxt], nxt
    return array[:m]
