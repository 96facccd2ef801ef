"""Constrained non-negative matrix factorization (CNMF) of a 1-photon movie.

The movie Y (frames x pixels) is modelled as ``Y = A C + b f + noise``: footprints A (units x
pixels, non-negative, each confined near its cell), traces C (units x frames, following an AR(p)
model with sparse non-negative activity S), and a rank-1 background b f (the movie is already
background-removed by the motion stage's top-hat). Following Pnevmatikakis et al. 2016 (Neuron) and
Zhou et al. 2018 (CNMF-E, eLife), as in Minian (Dong et al. 2022):

- **noise** per pixel ``sn``: square root of the power spectral density in a high-frequency band
  (:func:`scopeline.core.deconvolve.noise_sn`), from the first ``noise_frames`` frames;
- **spatial update**: for each pixel, a non-negative LASSO over the units whose dilated footprint
  covers it plus the background::

      minimize_a  1/2 ||y_p - a^T C - b_p f||^2 + spatial_penal * sn_p * sum_k ||C_k|| a_k,  a >= 0

  The penalty is scale-free: a unit enters a pixel when its trace explains more of the pixel than
  ``spatial_penal`` noise standard deviations. Solved exactly by coordinate descent on the sufficient
  statistics (``C C^T`` and ``Y C^T`` restricted to each unit's box), which one pass over the movie
  gives; footprints are then scaled to peak 1, so C is in movie units at the footprint's peak;
- **temporal update**: ``YrA = C + (A^T Y - A^T A C - A^T b f) / diag(A^T A)`` by one pass over the
  movie, then each unit's trace is deconvolved (:func:`scopeline.core.deconvolve.deconvolve`: AR(1)
  or AR(2), baseline b0, initial concentration c0, sparse penalty scaled by the trace noise, post-hoc
  rescaling). Units whose footprints overlap (Jaccard index above ``jaccard_threshold``) are solved
  jointly, by block-coordinate descent over the group (``joint_iterations`` passes, each exact for
  one unit given the others); the background trace f is updated last;
- **merging**: units whose footprints overlap and whose traces correlate above ``merge_corr`` become one;
- after each spatial update, units whose footprint is too small (``min_area``) or not cell-shaped
  (:func:`scopeline.core.footprints.not_cell_shaped`: stripes of line noise, arcs of a moving lens
  edge) are dropped;
- at the end every unit's quality metrics are computed (:func:`scopeline.core.quality.unit_metrics`,
  one more pass) and units whose footprint does not look like the movie at their peaks (spatial
  consistency below ``min_r_value``, CaImAn's criterion) are dropped.

The steps run in the order of ``iterations`` (default: spatial, temporal, merge, spatial, temporal).
Every pass over the movie reads it in blocks of ``block_frames`` frames: memory is the blocks, the
footprints' boxes and the traces (units x frames), not the movie.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Literal, Optional

import numpy as np
from pydantic import Field, field_validator

from scopeline import executor

from . import deconvolve as dc
from . import quality
from .footprints import (Footprints, ShapeParams, components, frame_blocks, frame_dots, not_cell_shaped,
                         weighted_frames)
from .initialize import InitParams
from .params import StageParams
from .scratch import select_rows

__all__ = ["PRESETS", "CNMFParams", "CNMFResult", "cnmf", "pixel_noise", "update_spatial", "update_temporal", "merge_units"]

Step = Literal["spatial", "temporal", "merge"]
_DEFAULT_DIAMETER = float(InitParams.model_fields["diameter"].default)  # pixels, when none is given


class CNMFParams(StageParams):
    """CNMF parameters (pixels, frames); JSON round trip via ``model_dump_json``."""

    noise_band: tuple[float, float] = Field((0.25, 0.5), description="Band for noise estimates, cycles per frame.")
    noise_frames: int = Field(1000, ge=16, le=100000, description="Frames (the first) for the per-pixel noise.")
    spatial_penal: float = Field(1.0, ge=0, description="Spatial sparsity, in noise standard deviations of a "
                                                         "pixel (scale-free LASSO penalty).")
    dilate: int = Field(2, ge=0, le=50, description="Pixels a footprint may grow per spatial update.")
    min_area: int = Field(5, ge=1, description="Units with fewer footprint pixels are dropped, pixels.")
    shape: ShapeParams = Field(default_factory=ShapeParams, description="Units whose footprint is not cell-shaped "
                               "after a spatial update are dropped (the area test only when the expected cell "
                               "diameter is given to cnmf).")
    p: Literal[1, 2] = Field(1, description="AR order of the calcium dynamics.")
    sparse_penal: float = Field(1.0, ge=0, description="Temporal sparsity, in noise standard deviations of the "
                                                        "trace.")
    add_lag: int = Field(20, ge=0, le=1000, description="Extra autocovariance lags for the AR fit, frames.")
    backend: Literal["oasis", "cvxpy"] = Field("oasis", description="Deconvolution solver: the fast exact AR(1) "
                                                                     "solver (AR(2) uses CVXPY) or CVXPY.")
    jaccard_threshold: float = Field(0.1, ge=0, le=1, description="Units whose supports overlap more are "
                                                                   "solved jointly.")
    joint_iterations: int = Field(3, ge=1, le=50, description="Block-coordinate passes over a joint group.")
    merge_corr: float = Field(0.75, ge=-1, le=1, description="Touching units whose traces correlate above this "
                              "merge (0.8 left pieces of dim cells as units of their own on simulations with "
                              "heterogeneous cells and line noise).")
    min_r_value: float = Field(0.8, ge=-1, le=1, description="At the end, units whose footprint does not look like "
                               "the movie at their peaks (spatial consistency r_value below this; CaImAn's rval_thr) "
                               "are dropped: on simulations every cell scored above 0.8, units on artifacts 0.3-0.85; "
                               "on the real CA1 recording the units above 0.8 are the visible cells. -1: keep all.")
    iterations: list[Step] = Field(["spatial", "temporal", "merge", "spatial", "temporal"],
                                   description="Update steps in order.")
    spatial_sweeps: int = Field(30, ge=1, le=1000, description="Coordinate-descent sweeps of a spatial update.")
    block_frames: int = Field(100, ge=10, le=5000, description="Frames read at once, at most (memory: "
                              "block_frames x height x width x 4 bytes, a few times; a block holds no more than "
                              "64 MiB, footprints.MAX_BLOCK_BYTES).")

    @field_validator("iterations")
    @classmethod
    def _steps(cls, v: list) -> list:
        if not v:
            raise ValueError("at least one step is needed")
        return v


#: shipped parameter sets: Minian's defaults (AR(1), fast exact solver), and CNMF-E-like (AR(2) with
#: the CVXPY reference solver, milder temporal sparsity)
PRESETS = {
    "minian": CNMFParams(),
    "cnmfe": CNMFParams(p=2, backend="cvxpy", sparse_penal=0.5, merge_corr=0.7),
}


@dataclass
class CNMFResult:
    """Outcome of :func:`cnmf`.

    Attributes
    ----------
    A : Footprints
        Footprints, peak 1 (units).
    C : numpy.ndarray
        float32 (units, frames): calcium traces, movie units at each footprint's peak (not dF/F).
    S : numpy.ndarray
        float32 (units, frames): deconvolved activity, same units.
    YrA : numpy.ndarray
        float32 (units, frames): the traces before deconvolution (C plus residual).
    b0, c0, sn, snr : numpy.ndarray
        float32 (units,): baseline, initial concentration, trace noise standard deviation (movie
        units) and signal-to-noise ratio (peak of C over sn).
    g : numpy.ndarray
        float32 (units, p): AR coefficients.
    b : numpy.ndarray
        float32 (height, width): background footprint.
    f : numpy.ndarray
        float32 (frames,): background trace.
    pixel_sn : numpy.ndarray
        float32 (height, width): per-pixel noise.
    seconds : dict
        Wall time per step, s.
    metrics : dict
        Per-unit quality metrics, name -> float32 (units,) (:func:`scopeline.core.quality.unit_metrics`).
    n_inconsistent : int
        Units dropped at the end for a spatial consistency below ``min_r_value``.
    """

    A: Footprints
    C: np.ndarray
    S: np.ndarray
    YrA: np.ndarray
    b0: np.ndarray
    c0: np.ndarray
    g: np.ndarray
    sn: np.ndarray
    snr: np.ndarray
    b: np.ndarray
    f: np.ndarray
    pixel_sn: np.ndarray
    seconds: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    n_inconsistent: int = 0


# ------------------------------------------------------------------------------ noise


def pixel_noise(movie, p: CNMFParams, rows: int = 64, tile: int = 64) -> np.ndarray:
    """float32 (height, width): each pixel's noise standard deviation from the PSD of its first
    ``noise_frames`` frames, read in strips of ``rows`` rows in the movie's dtype, and computed in
    ``tile``-column pieces (memory per worker ~ noise_frames x rows x width x 2 bytes for a float16
    movie, plus a few times noise_frames x rows x tile x 4 per piece: 80 + 50 MB at 608 px and 1,000
    frames; 128 x 128 made this CNMF's largest pass, 750 MiB with two workers). The motion stage's
    128-row Zarr chunks are then decompressed twice; the noise step took 3.4 s before and 3 s after on
    a 36,000-frame 608-px session (2-core VM), so the cost is within run-to-run spread."""
    n, h, w = movie.shape
    m = min(n, p.noise_frames)
    out = np.zeros((h, w), np.float32)

    def strip_noise(y):
        part = movie[:m, y: y + rows]
        part = np.asarray(part.compute() if hasattr(part, "compute") else part)
        return np.concatenate([dc.noise_sn(np.nan_to_num(np.asarray(part[:, :, x: x + tile], np.float32)),
                                           p.noise_band, nperseg=min(256, m), axis=0)
                               for x in range(0, w, tile)], axis=1)

    for y, noise in executor.read_ahead(strip_noise, range(0, h, rows)):
        out[y: y + rows] = noise
    return out


# ------------------------------------------------------------------------------ spatial


def update_spatial(movie, A: Footprints, C: np.ndarray, b: np.ndarray, f: np.ndarray, sn: np.ndarray,
                   p: CNMFParams, progress: Optional[Callable[[int], None]] = None,
                   overwrite_c: bool = False) -> tuple[Footprints, np.ndarray, np.ndarray]:
    """One spatial update: per-pixel non-negative LASSO for A and least squares for b.

    Parameters
    ----------
    movie : array-like
        (frames, height, width).
    A : Footprints
        Current footprints (their dilated supports bound the new ones).
    C : numpy.ndarray
        float32 (units, frames).
    b, f : numpy.ndarray
        Background image (height, width) and trace (frames,).
    sn : numpy.ndarray
        float32 (height, width): pixel noise.
    p : CNMFParams
    progress : callable, optional
        Called with frames read (one pass).
    overwrite_c : bool
        Rescale a float32 ``C`` in place and return it (one (units, frames) array less).

    Returns
    -------
    (Footprints, numpy.ndarray, numpy.ndarray)
        New footprints (peak 1; empty ones keep their zeros: see :func:`cnmf`), C rescaled to
        them, and the new b.
    """
    k = len(A)
    sy, sx = A.patches.shape[1:]
    R = np.zeros((k, sy, sx))
    rf = np.zeros(A.shape)
    C = np.asarray(C, np.float32)
    for a, frames in frame_blocks(movie, p.block_frames, progress):
        t = slice(a, a + len(frames))
        A.correlate(frames, C[:, t], R)
        rf += weighted_frames(f[t], frames)
    f64 = f.astype(np.float64)
    G, Gf = _gram(C, f64)
    ff = float(f64 @ f64) or 1.0
    support = A.supports(p.dilate)
    lam = [p.spatial_penal * np.sqrt(G[i, i]) * sn[A._slices(i)] for i in range(k)]
    near = A.overlapping()  # only units whose boxes overlap share pixels (O(units) per unit, in numpy)
    pairs = [[(j, A.relative(i, j)) for j in near[i] if G[i, j] != 0] for i in range(k)]
    a_ = np.where(support, A.patches, 0).astype(np.float64)
    bb = np.asarray(b, np.float64).copy()
    for _ in range(p.spatial_sweeps):
        change = 0.0
        for i in range(k):
            if G[i, i] <= 0:
                a_[i] = 0
                continue
            acc = R[i] - Gf[i] * bb[A._slices(i)]
            for j, (si, sj) in pairs[i]:
                acc[si] -= G[i, j] * a_[j][sj]
            new = np.where(support[i], np.maximum((acc - lam[i]) / G[i, i], 0), 0)
            change = max(change, float(np.abs(new - a_[i]).max()))
            a_[i] = new
        mix = np.zeros(A.shape)
        for i in range(k):
            mix[A._slices(i)] += Gf[i] * a_[i]
        bb = (rf - mix) / ff
        if change <= 1e-6 * max(1.0, float(np.abs(a_).max(initial=0))):
            break
    peak = a_.reshape(k, -1).max(axis=1) if k else np.zeros(0)
    scale = np.where(peak > 0, peak, 1.0)
    newA = Footprints((a_ / scale[:, None, None]).astype(np.float32), A.offsets, A.shape)
    if overwrite_c and C.flags.writeable:
        C *= scale[:, None].astype(np.float32)
    else:
        C = C * scale[:, None].astype(np.float32)
    return newA, C, bb.astype(np.float32)


def _gram(C: np.ndarray, f: np.ndarray, block: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """float64 ``C C^T`` (units, units) and ``C f`` (units,) of float32 traces, summed over blocks of
    frames in float64 (a float64 copy of C would grow with the recording: 200 MB at 700 units x 36,000
    frames)."""
    k, n = C.shape
    G, Gf = np.zeros((k, k)), np.zeros(k)
    for a in range(0, n, block):
        part = C[:, a: a + block].astype(np.float64)
        G += part @ part.T
        Gf += part @ f[a: a + block]
    return G, Gf


# ------------------------------------------------------------------------------ temporal


def _groups(A: Footprints, threshold: float) -> list[list[int]]:
    """Units connected by support overlap (Jaccard index above threshold)."""
    sup = A.patches > 0
    pairs = []
    for i, others in enumerate(A.overlaps()):
        for j in others[others > i]:
            si, sj = A.relative(i, j)
            inter = np.logical_and(sup[i][si], sup[j][sj]).sum()
            union = sup[i].sum() + sup[j].sum() - inter
            if union and inter / union > threshold:
                pairs.append((i, j))
    return components(len(A), pairs)


def update_temporal(movie, A: Footprints, C: np.ndarray, b: np.ndarray, f: np.ndarray, p: CNMFParams,
                    progress: Optional[Callable[[int], None]] = None, overwrite_c: bool = False) -> dict:
    """One temporal update: YrA by one pass over the movie, then deconvolution of each unit.

    ``overwrite_c``: update ``C`` (float32) in place and return it as ``C`` (one (units, frames) array
    less; :func:`cnmf` does it with traces of its own).

    Returns
    -------
    dict
        ``C, YrA`` float32 (units, frames); ``b0, c0, sn`` float32 (units,); ``g`` (units, p); ``f``
        float32 (frames,). No S: it is a function of C, g and sn (:func:`scopeline.core.deconvolve.spikes`),
        made for the units kept (one (units, frames) array less, 150 MB at 1,000 units x 36,000 frames).
    """
    k, n = len(A), movie.shape[0]
    R = np.zeros((k, n), np.float32)  # A^T Y, then the residual in place, then YrA (row by row)
    bY = np.zeros(n)
    b64 = np.asarray(b, np.float64)
    for a, frames in frame_blocks(movie, p.block_frames, progress):
        R[:, a: a + len(frames)] = A.project(frames)
        bY[a: a + len(frames)] = frame_dots(frames, b64)
    AA = A.gram()
    Ab = A.dot(b64)
    diag = np.where(np.diag(AA) > 0, np.diag(AA), 1.0)
    C = C if overwrite_c and isinstance(C, np.ndarray) and C.dtype == np.float32 else np.array(C, np.float32)
    f = np.asarray(f, np.float64)
    out = {"b0": np.zeros(k, np.float32),
           "c0": np.zeros(k, np.float32), "sn": np.zeros(k, np.float32), "g": np.zeros((k, p.p), np.float32)}
    # residual R = A^T Y - A^T A C - A^T b f, kept up to date as units change; float32 (k, frames) arrays
    # only, the products in float64 over blocks of frames (float64 @ float32 would convert all of C)
    for cols in _frame_slices(n):
        R[:, cols] -= AA @ C[:, cols].astype(np.float64) + np.outer(Ab, f[cols])
    # a unit's residual is not read once its group is done: its row of R then holds its YrA (no
    # (units, frames) array of its own), and later units' changes are no longer subtracted from it
    done = np.zeros(k, bool)
    for group in _groups(A, p.jaccard_threshold):
        passes = p.joint_iterations if len(group) > 1 else 1
        for it in range(passes):
            for i in group:
                yra = C[i] + R[i] / diag[i]
                res = dc.deconvolve(yra, p=p.p, sparse_penal=p.sparse_penal, backend=p.backend, add_lag=p.add_lag,
                                    noise_band=p.noise_band)
                new = res.c.astype(np.float64) + res.b0  # the baseline belongs to the unit's trace fit
                delta = new - C[i]
                if np.any(delta):
                    nz = np.flatnonzero(AA[:, i] * ~done)  # only units whose footprints touch unit i
                    R[nz] -= AA[nz, i, None] * delta
                C[i] = new
                if it == passes - 1:
                    R[i], done[i] = yra, True
                out["b0"][i], out["c0"][i], out["sn"][i] = res.b0, res.c0, res.sn
                out["g"][i] = res.g[: p.p] if len(res.g) >= p.p else np.pad(res.g, (0, p.p - len(res.g)))
    out["YrA"] = R
    bb = float(b64.ravel() @ b64.ravel())
    if bb > 0:
        AbC = np.concatenate([Ab @ C[:, cols].astype(np.float64) for cols in _frame_slices(n)]) if n else bY
        out["f"] = ((bY - AbC) / bb).astype(np.float32)
    else:
        out["f"] = f.astype(np.float32)
    C -= out["b0"][:, None]  # report C without baseline
    out["C"] = np.maximum(C, 0, out=C)
    return out


#: frames per block of the float64 products of float32 (units, frames) traces in :func:`update_temporal`
#: (9 MB per float64 block at 1,000 units)
_FRAME_BLOCK = 1024


def _frame_slices(n: int) -> list[slice]:
    """Slices of :data:`_FRAME_BLOCK` frames covering ``n``."""
    return [slice(a, a + _FRAME_BLOCK) for a in range(0, n, _FRAME_BLOCK)]


# ------------------------------------------------------------------------------ merging


def combine(A: Footprints, C: np.ndarray, members: list, weight: Optional[np.ndarray] = None,
            how: Literal["sum", "max"] = "sum") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One footprint and trace for a group of units that are one cell.

    The footprint is the sum (``how="sum"``: footprints that share no pixel, as CNMF's spatial update
    leaves a split cell) or the pixel-wise maximum (``"max"``: footprints that may overlap, as a
    person's merge of any two units) of the members' footprints weighted by ``weight`` (default their
    trace peaks), in the box of the strongest member (parts outside it are cut), scaled to peak 1; the
    trace reproduces the members' summed contribution at that scale when their traces share one shape.

    Parameters
    ----------
    A : Footprints
    C : numpy.ndarray
        float (units, frames).
    members : list of int
        Indices of the units to combine.
    weight : numpy.ndarray, optional
        float (units,).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, numpy.ndarray)
        float32 patch (the strongest member's box), int (2,) its offset, float (frames,) trace.
    """
    weight = C.max(axis=1) if weight is None else weight
    lead = max(members, key=lambda m: weight[m])
    patch = np.zeros_like(A.patches[lead])
    for m in members:
        rel = A.relative(lead, m)
        if rel is not None:
            si, sj = rel
            part = weight[m] * A.patches[m][sj]
            patch[si] = patch[si] + part if how == "sum" else np.maximum(patch[si], part)
    peak = patch.max() or 1.0
    # sum_m A_m C_m = phi * patch when every C_m = w_m phi: the combined trace is peak * phi
    trace = C[members].sum(axis=0) / max(float(weight[members].sum()), 1e-12) * peak
    return (patch / peak).astype(A.patches.dtype), np.asarray(A.offsets[lead]), trace


def merge_units(A: Footprints, C: np.ndarray, threshold: float, dilate: int = 0,
                overwrite_c: bool = False) -> tuple[Footprints, np.ndarray, list[list[int]]]:
    """Merge units whose footprints, dilated by ``dilate`` pixels, overlap and whose traces correlate
    above ``threshold`` (a cell found twice often ends as two footprints side by side: the spatial
    update gives each pixel to one of them).

    Each group's footprint and trace come from :func:`combine` (the next updates refine both).

    ``overwrite_c``: write the traces after merging into the first rows of ``C`` (float32, writeable)
    and return a view of them (no second (units, frames) array).

    Returns
    -------
    (Footprints, numpy.ndarray, list of list of int)
        Footprints and traces after merging, and the groups merged (indices before merging).
    """
    k = len(A)
    if k < 2:
        return A, C, []
    mean = np.array([np.mean(c, dtype=np.float64) for c in C])  # a row at a time: no (units, frames) copy
    norm = np.maximum([np.linalg.norm(c - m) for c, m in zip(C, mean)], 1e-12)
    sup = A.supports(dilate)
    pairs = []
    for i, others in enumerate(A.overlaps()):
        for j in others[others > i]:
            si, sj = A.relative(i, j)
            if np.logical_and(sup[i][si], sup[j][sj]).any() and \
                    float((C[i] - mean[i]) @ (C[j] - mean[j])) / (norm[i] * norm[j]) > threshold:
                pairs.append((i, j))
    groups = components(k, pairs)
    merged = [g_ for g_ in groups if len(g_) > 1]
    if not merged:
        return A, C, []
    in_place = overwrite_c and isinstance(C, np.ndarray) and C.dtype == np.float32 and C.flags.writeable
    out = C if in_place else np.empty((len(groups), C.shape[1]), np.float32)
    patches, offsets = [], []
    weight = C.max(axis=1)
    # groups come in order of their first member (components), which is never before the group's row
    # of the result: writing row g in place overwrites no row a later group still reads
    for g_, members in enumerate(groups):
        if len(members) == 1:
            i = members[0]
            patches.append(A.patches[i])
            offsets.append(A.offsets[i])
            out[g_] = C[i]
            continue
        patch, offset, trace = combine(A, C, members, weight)
        patches.append(patch)
        offsets.append(offset)
        out[g_] = trace
    return Footprints(np.stack(patches), np.stack(offsets), A.shape), out[: len(groups)], merged


# ------------------------------------------------------------------------------ driver


#: the temporal update's (units, frames) arrays: subset in place (the others are (units,) or f)
_TRACES = ("C", "YrA")


def _subset(temporal: dict, rows: np.ndarray) -> dict:
    """A temporal update's per-unit arrays at ``rows`` (bool mask or indices), ``f`` as it is; the traces
    in place (:func:`scopeline.core.scratch.select_rows`: no second copy of them)."""
    return {k_: v if k_ == "f" else select_rows(v, rows) if k_ in _TRACES else v[rows] for k_, v in temporal.items()}


def _temporal_step(movie, A: Footprints, C, b, f, p: CNMFParams, progress, owned: bool = False):
    """A temporal update (in place on ``C`` when ``owned``), then units whose trace is all zero are dropped."""
    temporal = update_temporal(movie, A, C, b, f, p, progress, overwrite_c=owned)
    keep = temporal["C"].any(axis=1)
    if not keep.all():
        temporal = _subset(temporal, keep)
    return A.subset(keep), temporal["C"], temporal["f"], temporal


@executor.with_workers
def cnmf(movie, A: Footprints, C: np.ndarray, b: np.ndarray, f: np.ndarray, params: Optional[CNMFParams] = None,
         progress: Optional[Callable[[int], None]] = None, diameter: Optional[float] = None,
         fps: Optional[float] = None, fov: Optional[np.ndarray] = None, overwrite_c: bool = False) -> CNMFResult:
    """Run the CNMF updates from an initialization.

    Parameters
    ----------
    movie : array-like
        (frames, height, width): the motion-corrected movie (the one initialization used).
    A, C, b, f :
        Initial footprints, traces (units, frames), background image and trace
        (:class:`scopeline.core.initialize.InitResult`).
    params : CNMFParams, optional
    progress : callable, optional
        Called with frames read; one pass over the movie per spatial or temporal step.
    diameter : float, optional
        Expected cell diameter, pixels (initialization's): footprints far larger or smaller are dropped
        after a spatial update (``params.shape.area_range``), and the quality metric ``rel_area`` is
        relative to it (8 when not given).
    fps : float, optional
        Frame rate, Hz, for the quality metric ``event_snr`` (an event lasts 0.4 s; 5 frames when not
        given).
    fov : numpy.ndarray, optional
        bool (height, width): the field of view, for the quality metric ``outside_fov``.
    overwrite_c : bool
        ``C`` (float32) may be used as working memory and is overwritten: one (units, frames) array
        less while CNMF runs (the caller should hold no other reference to it).
    workers : int, optional
        Threads (:func:`scopeline.executor.kernel_threads`; default :func:`scopeline.executor.settings`):
        the movie's next blocks are read while one is computed, the per-unit kernels split the units,
        the noise is estimated on several tiles at once. The result does not depend on it.

    Returns
    -------
    CNMFResult
        Units in a stable order (by position: row, then column of the centroid), with their quality
        metrics; units whose spatial consistency is below ``params.min_r_value`` are dropped (counted in
        ``n_inconsistent``). With no unit (none given, or all dropped) an empty result and a
        ``RuntimeWarning``.

    Raises
    ------
    ValueError
        If shapes disagree.
    """
    p = params or CNMFParams()
    n, h, w = movie.shape
    if A.shape != (h, w):
        raise ValueError(f"footprints are {A.shape}, the movie's frames {(h, w)}")
    C = np.asarray(C, np.float32)
    if C.shape != (len(A), n):
        raise ValueError(f"C is {C.shape}, expected {(len(A), n)} (units, frames)")
    seconds: dict = {"noise": 0.0, "spatial": 0.0, "temporal": 0.0, "merge": 0.0}
    t0 = time.perf_counter()
    sn = pixel_noise(movie, p)
    seconds["noise"] = time.perf_counter() - t0
    b, f = np.asarray(b, np.float32), np.asarray(f, np.float32)
    temporal = None
    owned = overwrite_c and C.flags.writeable  # whether C may be updated in place (its own, or given to it)
    for step in p.iterations:
        t0 = time.perf_counter()
        if len(A) == 0:
            break
        if step == "spatial":
            temporal = None  # the update replaces every trace: the last temporal step's S and YrA go now
            A, C, b = update_spatial(movie, A, C, b, f, sn, p, progress, overwrite_c=owned)
            keep = (A.area() >= p.min_area) & ~not_cell_shaped(A, p.shape, diameter)
            A, C = A.subset(keep), select_rows(C, keep)  # C is update_spatial's: its own, or given to it
            temporal, owned = None, True
        elif step == "temporal":
            A, C, f, temporal = _temporal_step(movie, A, C, b, f, p, progress, owned)
            owned = True
        else:
            A, C, merged = merge_units(A, C, p.merge_corr, p.dilate, overwrite_c=owned)
            if merged:
                temporal, owned = None, True
        seconds[step] += time.perf_counter() - t0
    if len(A) and temporal is None:  # the last step changed A or C: the traces must come from them
        t0 = time.perf_counter()
        A, C, f, temporal = _temporal_step(movie, A, C, b, f, p, progress, owned)
        seconds["temporal"] += time.perf_counter() - t0
    if len(A) == 0:
        warnings.warn("CNMF ended with no unit", RuntimeWarning, stacklevel=2)
        z = np.zeros((0, n), np.float32)
        e = np.zeros(0, np.float32)
        return CNMFResult(A=A, C=z, S=z.copy(), YrA=z.copy(), b0=e, c0=e.copy(), g=np.zeros((0, p.p), np.float32),
                          sn=e.copy(), snr=e.copy(), b=b, f=f, pixel_sn=sn, seconds=seconds,
                          metrics={name: e.copy() for name in quality.METRICS})
    t0 = time.perf_counter()
    metrics = quality.unit_metrics(movie, A, temporal["YrA"], temporal["sn"], fov=fov,
                                   diameter=diameter or _DEFAULT_DIAMETER, fps=fps, block_frames=p.block_frames,
                                   progress=progress)
    seconds["metrics"] = time.perf_counter() - t0
    keep = metrics["r_value"] >= p.min_r_value
    if not keep.any():
        warnings.warn(f"CNMF ended with no unit: all {len(keep)} below min_r_value {p.min_r_value}", RuntimeWarning,
                      stacklevel=2)
    order = np.flatnonzero(keep)[np.lexsort((A.centroids()[keep, 1], A.centroids()[keep, 0]))]
    T = _subset(temporal, order)
    snr = np.where(T["sn"] > 0, T["C"].max(axis=1) / np.where(T["sn"] > 0, T["sn"], 1), 0).astype(np.float32)
    return CNMFResult(A=A.subset(order), **{k: T[k] for k in ("C", "YrA", "b0", "c0", "g", "sn", "f")},
                      S=dc.spikes(T["C"], T["g"], T["sn"]), snr=snr,
                      b=b, pixel_sn=sn, seconds=seconds, metrics={name: v[order] for name, v in metrics.items()},
                      n_inconsistent=int((~keep).sum()))
