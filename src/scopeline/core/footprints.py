"""Spatial footprints (A) kept compact, and the streaming products of a movie with them.

A unit's footprint is non-zero only near the cell, so :class:`Footprints` keeps, per unit, a small
patch and its offset in the frame instead of a full frame: 300 units of a 512 x 512 movie take a
few MB instead of 300 MB. Products with the movie (``A^T Y``, ``Y^T C`` restricted to each unit's
patch) are computed block by block over frames, so memory does not grow with the recording.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import cv2
import numba
import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage

from scopeline import executor

__all__ = ["Footprints", "ShapeParams", "not_cell_shaped", "frame_blocks", "read_frames", "components", "patch_contours"]


class ShapeParams(BaseModel):
    """What a cell's footprint looks like (its half-peak region, see :meth:`Footprints.shape_stats`);
    footprints that do not are artifacts: stripes of line noise, arcs of a lens edge that moves in the
    registered movie, blobs of background."""

    model_config = ConfigDict(extra="forbid")

    max_elongation: float = Field(3.0, ge=0, description="Longer than this many times its width is not a cell "
                                  "(0: no limit).")
    max_row_elongation: float = Field(1.8, ge=0, description="... and longer than this along the rows (major axis "
                                      "within row_angle of them) neither: line noise makes stripes along rows, while "
                                      "cells point every way (0: no limit). Measured: 90% of the real CA1 recording's "
                                      "60 best units are under 1.8, stripe units of simulated line noise 1.9-4.3.")
    row_angle: float = Field(20.0, ge=0, le=90, description="Degrees from the rows within which max_row_elongation "
                             "applies.")
    min_compactness: float = Field(0.3, ge=0, le=1, description="Less compact than this (isoperimetric quotient, 1 for "
                                   "a disk) is not a cell.")
    area_range: tuple[float, float] = Field((0.1, 4.0), description="A half-peak area outside this range, as a "
                                            "fraction of the expected cell's pi (diameter / 2)^2, is not a cell (when "
                                            "the expected diameter is known).")


def not_cell_shaped(A: "Footprints", p: ShapeParams, diameter: Optional[float] = None) -> np.ndarray:
    """bool (units,): footprints that are not cell-shaped under ``p`` (empty footprints included).

    Parameters
    ----------
    A : Footprints
    p : ShapeParams
    diameter : float, optional
        Expected cell diameter, pixels: the area test applies when given.
    """
    if len(A) == 0:
        return np.zeros(0, bool)
    st = A.shape_stats()
    with np.errstate(invalid="ignore"):
        odd = st["compactness"] < p.min_compactness
        if p.max_elongation > 0:
            odd |= st["elongation"] > p.max_elongation
        if p.max_row_elongation > 0:
            along = st["horizontal"] >= np.cos(np.radians(p.row_angle)) ** 2
            odd |= along & (st["elongation"] > p.max_row_elongation)
        if diameter:
            expected = np.pi * (diameter / 2) ** 2
            odd |= (st["half_area"] < p.area_range[0] * expected) | (st["half_area"] > p.area_range[1] * expected)
    return odd | ~np.isfinite(st["half_area"])


def read_frames(movie, a: int, b: int) -> np.ndarray:
    """Frames [a, b) of a movie (Zarr, dask or numpy array) as float32, non-finite values as 0
    (see :func:`as_float32`)."""
    return as_float32(_read_raw(movie, a, b))


def _read_raw(movie, a: int, b: int) -> np.ndarray:
    """Frames [a, b) of a movie as stored (a numpy array of its own dtype)."""
    part = movie[a:b]
    if hasattr(part, "compute"):
        part = part.compute()
    return np.asarray(part)


def as_float32(part: np.ndarray) -> np.ndarray:
    """A block of frames as float32 (frames, height, width), non-finite values as 0.

    float16 (the stored movies) is converted by OpenCV's SIMD path: 0.34 instead of 1.8 ms per 608 x 608
    frame with numpy, the same values. A float32 block comes back as it is (no copy) when all finite."""
    if part.dtype == np.float16 and part.ndim == 3 and part.size:
        frames = np.empty(part.shape, np.float32)
        cv2.multiply(np.ascontiguousarray(part).reshape(-1, part.shape[-1]), 1.0,
                     dst=frames.reshape(-1, part.shape[-1]), dtype=cv2.CV_32F)
    else:
        frames = np.asarray(part, dtype=np.float32)
    # one sum tells whether any value is NaN or infinite (they propagate): 3x cheaper than isfinite
    if frames.size and not np.isfinite(np.add.reduce(frames.ravel())):
        frames = np.nan_to_num(frames, nan=0.0, posinf=0.0, neginf=0.0)
    return frames


#: Most bytes of one float32 block of :func:`frame_blocks`: 45 frames of 608 x 608 px, 64 of 512 x 512.
MAX_BLOCK_BYTES = 64 * 2**20

#: Most bytes of one span of the movie as stored that :func:`frame_blocks` reads ahead: a whole number of
#: the movie's chunks along frames (a stored 608 x 608 movie's 100-frame float16 chunks: 74 MB).
MAX_SPAN_BYTES = 128 * 2**20


def _span_frames(movie, block: int) -> int:
    """Frames of each span :func:`frame_blocks` reads: the fewest whole chunks along frames that hold
    ``block`` frames, fewer when over :data:`MAX_SPAN_BYTES`; ``block`` when the movie has no regular
    chunks (numpy, dask) or one chunk is over the limit."""
    chunks = getattr(movie, "chunks", None)
    t = int(chunks[0]) if chunks and isinstance(chunks[0], (int, np.integer)) else 0
    chunk_bytes = t * int(np.prod(movie.shape[1:])) * np.dtype(movie.dtype).itemsize
    if t <= 0 or chunk_bytes > MAX_SPAN_BYTES:
        return block
    return t * max(1, min(-(-block // t), MAX_SPAN_BYTES // chunk_bytes))


def frame_blocks(movie, block: int, progress: Optional[Callable[[int], None]] = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, frames)`` blocks of a movie as float32 (frames, height, width), in order.

    The movie is read in spans of whole chunks along frames (:func:`_span_frames`), so each chunk is
    decompressed once, and each span is handed out as float32 blocks of equal length. Inside
    :func:`scopeline.executor.kernel_threads` the next spans are read (and decompressed) on its worker
    threads while the caller computes on the current block (:func:`scopeline.executor.read_ahead`): with
    two workers three spans as stored and one float32 block are alive.

    Parameters
    ----------
    movie : array-like
        (frames, height, width): a Zarr array, a dask array or a numpy array.
    block : int
        Frames per block, at most: a block holds no more than :data:`MAX_BLOCK_BYTES` (64 MiB as float32,
        45 frames of 608 x 608 px, 64 of 512 x 512), so memory does not grow with the frame size.
    progress : callable, optional
        Called with the number of frames of each block once it has been used.
    """
    n = movie.shape[0]
    frame_bytes = 4 * int(np.prod(movie.shape[1:]))
    block = max(1, min(int(block), MAX_BLOCK_BYTES // max(frame_bytes, 1)))
    span = _span_frames(movie, block)
    for a, raw in executor.read_ahead(lambda start: _read_raw(movie, start, min(start + span, n)),
                                      range(0, n, span)):
        bounds = np.linspace(0, len(raw), -(-len(raw) // block) + 1).round().astype(int)
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            frames = as_float32(raw[lo:hi])
            yield a + int(lo), frames
            if progress is not None:
                progress(len(frames))
        del raw


def frame_dots(frames: np.ndarray, image: np.ndarray) -> np.ndarray:
    """float64 (frames,): the dot product of each frame of a block with one image (a background b, a
    mean image), by float32 BLAS.

    ``frames`` float32 (frames, height, width), ``image`` any float (height, width). A float64 image
    would make numpy convert the whole block to float64 first (117 ms instead of 8 per 100 frames of
    608 x 608, and a 300 MB temporary); the float32 products agree with float64 to about 1e-6 relative.
    """
    x = np.ascontiguousarray(frames, np.float32).reshape(len(frames), -1)
    return (x @ np.asarray(image, np.float32).ravel()).astype(np.float64)


def weighted_frames(weights: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """float64 (height, width): ``sum_t weights[t] frames[t]`` over a block (a trace times the movie,
    such as the background's f^T Y), by float32 BLAS; see :func:`frame_dots` for why not float64."""
    x = np.ascontiguousarray(frames, np.float32)
    return (np.asarray(weights, np.float32) @ x.reshape(len(x), -1)).reshape(x.shape[1:]).astype(np.float64)


def patch_contours(patch: np.ndarray, origin, fraction: float = 0.5) -> list[np.ndarray]:
    """The contour lines of one footprint patch at a fraction of its peak, in frame coordinates.

    Marching squares (contourpy, matplotlib's contouring library) on the patch padded by one zero
    pixel, so every line closes even where the footprint touches the patch's edge.

    Parameters
    ----------
    patch : numpy.ndarray
        float (rows, cols): the footprint's values.
    origin : (int, int)
        The patch's top-left pixel (y, x) in the frame.
    fraction : float
        Contour level as a fraction of the patch's peak (0.5: half peak).

    Returns
    -------
    list of numpy.ndarray
        float64 (points, 2) each: one closed line as (x, y) pixel coordinates (x first, for drawing);
        empty when the patch is all zero.
    """
    import contourpy

    patch = np.asarray(patch, dtype=float)
    peak = patch.max() if patch.size else 0.0
    if not peak > 0:
        return []
    lines = contourpy.contour_generator(z=np.pad(patch, 1), line_type="Separate").lines(fraction * peak)
    y0, x0 = origin
    return [line + np.array([x0 - 1.0, y0 - 1.0]) for line in lines]


def components(n: int, pairs) -> list[list[int]]:
    """Connected components of n items linked by ``pairs`` (i, j), as lists of indices in increasing
    order, the lists in order of their first index (scipy's graph components; singletons included)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    pairs = np.asarray(list(pairs), int).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    out: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        out.setdefault(int(label), []).append(i)
    return list(out.values())


@dataclass
class Footprints:
    """Units' spatial footprints as patches.

    Attributes
    ----------
    patches : numpy.ndarray
        float32 (units, size_y, size_x): each unit's footprint inside its box, 0 outside it.
    offsets : numpy.ndarray
        int32 (units, 2): (y, x) of each box's top-left corner in the frame, pixels.
    shape : (int, int)
        Frame (height, width), pixels.
    """

    patches: np.ndarray
    offsets: np.ndarray
    shape: tuple[int, int]

    def __post_init__(self) -> None:
        self.patches = np.asarray(self.patches, np.float32)
        self.offsets = np.asarray(self.offsets, np.int32).reshape(-1, 2)
        self.shape = (int(self.shape[0]), int(self.shape[1]))

    def __len__(self) -> int:
        return len(self.patches)

    # ------------------------------------------------------------------ construction

    @classmethod
    def empty(cls, shape: tuple[int, int], size: int = 1) -> "Footprints":
        return cls(np.zeros((0, size, size), np.float32), np.zeros((0, 2), np.int32), shape)

    @classmethod
    def from_dense(cls, A: np.ndarray, pad: int = 0) -> "Footprints":
        """From dense footprints (units, height, width), boxed to their support plus ``pad`` pixels."""
        A = np.asarray(A, np.float32)
        k, h, w = A.shape
        if k == 0:
            return cls.empty((h, w))
        boxes = []
        for a in A:
            ys, xs = np.nonzero(a)
            if len(ys) == 0:
                boxes.append((0, 0, 1, 1))
                continue
            boxes.append((max(0, ys.min() - pad), max(0, xs.min() - pad), min(h, ys.max() + 1 + pad),
                          min(w, xs.max() + 1 + pad)))
        sy = max(b[2] - b[0] for b in boxes)
        sx = max(b[3] - b[1] for b in boxes)
        sy, sx = min(sy, h), min(sx, w)
        patches = np.zeros((k, sy, sx), np.float32)
        offsets = np.zeros((k, 2), np.int32)
        for i, (y0, x0, _, _) in enumerate(boxes):
            y0, x0 = min(y0, h - sy), min(x0, w - sx)
            offsets[i] = (y0, x0)
            patches[i] = A[i, y0: y0 + sy, x0: x0 + sx]
        return cls(patches, offsets, (h, w))

    def dense(self, units: Optional[np.ndarray] = None) -> np.ndarray:
        """float32 (units, height, width) full-frame footprints."""
        idx = np.arange(len(self)) if units is None else np.asarray(units)
        out = np.zeros((len(idx), *self.shape), np.float32)
        for j, i in enumerate(idx):
            y, x = self.offsets[i]
            p = self.patches[i]
            out[j, y: y + p.shape[0], x: x + p.shape[1]] = p
        return out

    def subset(self, keep: np.ndarray) -> "Footprints":
        keep = np.asarray(keep)
        return Footprints(self.patches[keep], self.offsets[keep], self.shape)

    # ------------------------------------------------------------------ geometry

    def _slices(self, i: int) -> tuple[slice, slice]:
        y, x = self.offsets[i]
        return slice(y, y + self.patches.shape[1]), slice(x, x + self.patches.shape[2])

    def contours(self, fraction: float = 0.5) -> list[list[np.ndarray]]:
        """Each unit's contour lines at ``fraction`` of its peak (:func:`patch_contours`): a list per
        unit of float64 (points, 2) (x, y) lines in frame pixels."""
        return [patch_contours(self.patches[i], self.offsets[i], fraction) for i in range(len(self))]

    def area(self) -> np.ndarray:
        """int (units,): non-zero pixels of each footprint."""
        return (self.patches > 0).sum(axis=(1, 2))

    def centroids(self) -> np.ndarray:
        """float64 (units, 2): weighted (y, x) centre of each footprint, pixels; NaN when empty."""
        sy, sx = self.patches.shape[1:]
        yy, xx = np.mgrid[0:sy, 0:sx]
        mass = self.patches.sum(axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            cy = (self.patches * yy).sum(axis=(1, 2)) / mass + self.offsets[:, 0]
            cx = (self.patches * xx).sum(axis=(1, 2)) / mass + self.offsets[:, 1]
        return np.stack([cy, cx], axis=1).reshape(len(self), 2)

    def shape_stats(self) -> dict[str, np.ndarray]:
        """Shape of each footprint, for telling cells from artifacts.

        Computed on the pixels at or above half the footprint's peak (the cell body):

        - ``half_area``: their number, pixels;
        - ``elongation``: sqrt(major / minor) of the eigenvalues of their intensity-weighted
          covariance (1 for a disk; a stripe along a row is far longer than high);
        - ``eccentricity``: sqrt(1 - minor / major), 0 for a disk, towards 1 for a line;
        - ``compactness``: isoperimetric quotient 4 pi area / perimeter^2 of the half-peak region (1
          for a disk, clipped at 1; lower for ragged or thin shapes), the perimeter estimated as pi / 4
          of the pixel edges between the region and the rest (Cauchy-Crofton);
        - ``horizontal``: cos^2 of the major axis' angle to the rows (1: along a row).

        Returns
        -------
        dict
            float32 (units,) arrays; NaN for an empty footprint (elongation / eccentricity NaN for a
            single pixel).
        """
        k = len(self)
        out = {name: np.full(k, np.nan, np.float32) for name in
               ("half_area", "elongation", "eccentricity", "compactness", "horizontal")}
        if k == 0:
            return out
        sy, sx = self.patches.shape[1:]
        yy, xx = np.mgrid[0:sy, 0:sx].astype(np.float64)
        for i in range(k):
            a = self.patches[i].astype(np.float64)
            peak = a.max()
            if peak <= 0:
                continue
            m = a >= 0.5 * peak
            wgt = np.where(m, a, 0.0)
            area = float(m.sum())
            edges = (np.count_nonzero(m[1:, :] != m[:-1, :]) + np.count_nonzero(m[:, 1:] != m[:, :-1])
                     + m[0, :].sum() + m[-1, :].sum() + m[:, 0].sum() + m[:, -1].sum())
            out["half_area"][i] = area
            # Euclidean perimeter ~ pixel edges x pi / 4 (Cauchy-Crofton, averaged over orientations)
            out["compactness"][i] = min(1.0, 64 * area / (np.pi * float(edges) ** 2)) if edges else np.nan
            tot = wgt.sum()
            cy, cx = (wgt * yy).sum() / tot, (wgt * xx).sum() / tot
            cyy = (wgt * (yy - cy) ** 2).sum() / tot + 1 / 12  # a pixel's own extent
            cxx = (wgt * (xx - cx) ** 2).sum() / tot + 1 / 12
            cxy = (wgt * (yy - cy) * (xx - cx)).sum() / tot
            tr, det = cyy + cxx, cyy * cxx - cxy**2
            disc = np.sqrt(max(tr**2 / 4 - det, 0.0))
            major, minor = tr / 2 + disc, max(tr / 2 - disc, 1e-12)
            out["elongation"][i] = np.sqrt(major / minor)
            out["eccentricity"][i] = np.sqrt(max(0.0, 1 - minor / major))
            angle = 0.5 * np.arctan2(2 * cxy, cxx - cyy)  # of the major axis, from the x axis (rows)
            out["horizontal"][i] = np.cos(angle) ** 2
        return out

    def overlaps(self) -> list[np.ndarray]:
        """For each unit, the other units whose boxes overlap its box."""
        sy, sx = self.patches.shape[1:]
        oy, ox = self.offsets[:, 0], self.offsets[:, 1]
        out = []
        for i in range(len(self)):
            hit = (np.abs(oy - oy[i]) < sy) & (np.abs(ox - ox[i]) < sx)
            hit[i] = False
            out.append(np.flatnonzero(hit))
        return out

    def gram(self) -> np.ndarray:
        """float64 (units, units): A^T A."""
        k = len(self)
        G = np.zeros((k, k))
        flat = self.patches.reshape(k, self.patches.shape[1] * self.patches.shape[2]).astype(np.float64)
        G[np.arange(k), np.arange(k)] = (flat**2).sum(axis=1)
        for i, others in enumerate(self.overlaps()):
            for j in others[others > i]:
                G[i, j] = G[j, i] = self._product(i, j)
        return G

    def _product(self, i: int, j: int) -> float:
        rel = self.relative(i, j)
        if rel is None:
            return 0.0
        (si, sj) = rel
        return float(np.dot(self.patches[i][si].ravel().astype(np.float64), self.patches[j][sj].ravel()))

    def relative(self, i: int, j: int) -> Optional[tuple[tuple[slice, slice], tuple[slice, slice]]]:
        """Slices (in box i, in box j) of the overlap of two units' boxes, or None when they do not overlap."""
        sy, sx = self.patches.shape[1:]
        dy, dx = self.offsets[j] - self.offsets[i]
        if abs(dy) >= sy or abs(dx) >= sx:
            return None
        si = (slice(max(0, dy), sy + min(0, dy)), slice(max(0, dx), sx + min(0, dx)))
        sj = (slice(max(0, -dy), sy + min(0, -dy)), slice(max(0, -dx), sx + min(0, -dx)))
        return si, sj

    def overlapping(self) -> list[np.ndarray]:
        """For each unit, the indices (int, ascending) of the other units whose boxes overlap its box."""
        sy, sx = self.patches.shape[1:]
        d = np.abs(self.offsets[:, None, :] - self.offsets[None, :, :])
        hit = (d[..., 0] < sy) & (d[..., 1] < sx)
        np.fill_diagonal(hit, False)
        return [np.flatnonzero(row) for row in hit]

    def supports(self, dilate: int = 0) -> np.ndarray:
        """bool (units, size_y, size_x): each footprint's support dilated by ``dilate`` pixels (inside its box)."""
        sup = self.patches > 0
        if dilate > 0:
            disk = np.hypot(*np.mgrid[-dilate: dilate + 1, -dilate: dilate + 1]) <= dilate
            sup = np.stack([ndimage.binary_dilation(s_, disk) for s_ in sup]) if len(sup) else sup
        return sup

    def dot(self, image: np.ndarray) -> np.ndarray:
        """float64 (units,): A^T image for one (height, width) image."""
        return np.array([float(np.vdot(self.patches[i], image[self._slices(i)])) for i in range(len(self))])

    def mix(self, weights: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        """float32 (height, width): sum_k weights_k A_k (e.g. A C_t for one frame)."""
        out = np.zeros(self.shape, np.float32) if out is None else out
        for i in range(len(self)):
            if weights[i]:
                out[self._slices(i)] += weights[i] * self.patches[i]
        return out

    # ------------------------------------------------------------------ streaming products

    def project(self, frames: np.ndarray) -> np.ndarray:
        """float32 (units, frames): A^T Y_t for a block of frames (frames, height, width); the units are
        split over the kernel threads (:func:`scopeline.executor.kernel_threads`), each unit's sums in
        float64 on one thread."""
        out = np.empty((len(self), len(frames)), np.float32)
        _project(np.ascontiguousarray(frames, np.float32), np.ascontiguousarray(self.patches, np.float32),
                 self.offsets.astype(np.int64), out)
        return out

    def correlate(self, frames: np.ndarray, traces: np.ndarray, acc: np.ndarray) -> None:
        """Add ``sum_t Y_t(patch_k) C_k(t)`` to ``acc`` (units, size_y, size_x) for a block of frames.

        Parameters
        ----------
        frames : numpy.ndarray
            float32 (frames, height, width).
        traces : numpy.ndarray
            float32 (units, frames): each unit's trace over the block.
        acc : numpy.ndarray
            float64 (units, size_y, size_x), updated in place (units split over the kernel threads).
        """
        _correlate(np.ascontiguousarray(frames, np.float32), np.ascontiguousarray(traces, np.float32),
                   self.offsets.astype(np.int64), acc)


#: frames per partial sum of :func:`_correlate` (fixed, so that the result does not depend on the threads)
_CHUNK = 8


@numba.njit(parallel=True, cache=True, nogil=True, fastmath=True)
def _project(frames, patches, offsets, out):  # pragma: no cover - compiled
    """out[i, t] = sum of frame t under patch i: frames split over the threads (each frame read from
    cache by every unit), each sum in float64 on one thread."""
    k, sy, sx = patches.shape
    n = frames.shape[0]
    for t in numba.prange(n):
        for i in range(k):
            y0, x0 = offsets[i, 0], offsets[i, 1]
            total = 0.0
            for y in range(sy):
                for x in range(sx):
                    total += frames[t, y0 + y, x0 + x] * patches[i, y, x]
            out[i, t] = total


@numba.njit(parallel=True, cache=True, nogil=True, fastmath=True)
def _correlate(frames, traces, offsets, acc):  # pragma: no cover - compiled
    """acc[i] += sum_t traces[i, t] frames[t] under patch i: partial sums over fixed chunks of frames
    on the threads, then added in chunk order (the same result on any number of threads)."""
    k, sy, sx = acc.shape
    n = frames.shape[0]
    chunks = (n + _CHUNK - 1) // _CHUNK
    partial = np.zeros((chunks, k, sy, sx))
    for c in numba.prange(chunks):
        for t in range(c * _CHUNK, min(n, (c + 1) * _CHUNK)):
            for i in range(k):
                w = traces[i, t]
                if w != 0.0:
                    y0, x0 = offsets[i, 0], offsets[i, 1]
                    for y in range(sy):
                        for x in range(sx):
                            partial[c, i, y, x] += w * frames[t, y0 + y, x0 + x]
    for c in range(chunks):
        acc += partial[c]


def window_moments(frames: np.ndarray, traces: np.ndarray, offsets: np.ndarray, sxy: np.ndarray, sx: np.ndarray,
                   sxx: np.ndarray) -> None:
    """Add each unit's window sums over a block of frames: ``sxy[i] += sum_t traces[i, t] Y_t(window_i)``,
    ``sx[i] += sum_t Y_t(window_i)`` and ``sxx[i] += sum_t Y_t(window_i)^2`` (the moments of the
    correlation and regression of every window pixel on the unit's trace, as initialization's
    footprints need them: Minian's ``init_seeds``, CaImAn's greedy init).

    Parameters
    ----------
    frames : numpy.ndarray
        float32 (frames, height, width).
    traces : numpy.ndarray
        (units, frames), any float dtype: each unit's trace over the block.
    offsets : numpy.ndarray
        int (units, 2): top-left pixel (y, x) of each unit's window; windows lie inside the frame.
    sxy, sx, sxx : numpy.ndarray
        float64 (units, size_y, size_x), updated in place. The units are split over the kernel threads
        (:func:`scopeline.executor.kernel_threads`); each unit's sums run in frame order on one
        thread, so the result does not depend on the threads.

    Raises
    ------
    ValueError
        If the shapes disagree or a window leaves the frame.
    """
    k, sy_, sx_ = sxy.shape
    n, h, w = frames.shape
    offsets = np.asarray(offsets, np.int64)
    if traces.shape != (k, n) or offsets.shape != (k, 2) or sx.shape != sxy.shape or sxx.shape != sxy.shape:
        raise ValueError(f"shapes disagree: traces {traces.shape}, offsets {offsets.shape}, sums {sxy.shape}, "
                         f"{sx.shape}, {sxx.shape} for {k} units and {n} frames")
    if k and (offsets.min() < 0 or (offsets[:, 0] + sy_).max() > h or (offsets[:, 1] + sx_).max() > w):
        raise ValueError(f"a {sy_} x {sx_} window leaves the {h} x {w} frame")
    _moments(np.ascontiguousarray(frames, np.float32), np.ascontiguousarray(traces, np.float64), offsets, sxy, sx, sxx)


@numba.njit(parallel=True, cache=True, nogil=True)
def _moments(frames, traces, offsets, sxy, sx, sxx):  # pragma: no cover - compiled
    """Units split over the threads; each unit's sums in frame order."""
    k, sy, sx_ = sxy.shape
    n = frames.shape[0]
    for i in numba.prange(k):
        y0, x0 = offsets[i, 0], offsets[i, 1]
        for t in range(n):
            c = traces[i, t]
            for y in range(sy):
                for x in range(sx_):
                    v = np.float64(frames[t, y0 + y, x0 + x])
                    sxy[i, y, x] += c * v
                    sx[i, y, x] += v
                    sxx[i, y, x] += v * v

