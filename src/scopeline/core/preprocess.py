"""Preprocessing of 1-photon movies: crop, downsample, corrupted frames, glow, noise, background.

The steps, in the order :mod:`scopeline.core.motion` applies them to each block of frames:

1. crop to a rectangle and downsample in space and time (block mean, or subset);
2. corrupted frames (wireless transmission errors, dropped-to-black frames) are detected by
   :func:`frame_scores` / :func:`flag_corrupted` and then interpolated from their neighbours or dropped;
   defective pixels (hot: stuck bright; dead: stuck dark), found once in the mean image of raw frames
   (:func:`find_defects`), are replaced in every frame by the median of their neighbours
   (:class:`DefectRepair`); horizontal line noise (per-row offsets that change from frame to frame:
   sensor read-out, wireless transmission) is removed frame by frame (:func:`remove_line_noise`);
   frames much darker than the movie at its start (LED warm-up) are flagged (:func:`dark_start`);
3. glow / vignetting removal (optional, off by default): the per-pixel minimum over time, Gaussian-smoothed,
   is subtracted (Minian, Dong et al. 2022, subtract the raw minimum: ``glow_sigma=0``). The raw minimum
   of a moving movie also holds the tissue's texture (cells, vessels) at every position the brain
   took; once the frames are registered, that imprint moves with each shift and reads as
   motion-correlated activity next to cells (measured: 35 false units of 335 and trace correlation
   0.92 with the raw minimum, 6 and 0.97 with none, 512 x 512 x 2,000 frames, 300 cells);
4. denoising of each frame: median filter (default), Gaussian, bilateral or anisotropic diffusion;
5. background removal of each frame: morphological top-hat with a disk (Minian; MIN1PIPE, Lu et al.
   2018), or subtraction of a uniform (box) filter.

Frame-wise steps work on one frame (height, width), the others on blocks of frames (frames, height,
width); the motion stage streams blocks through them so memory is bounded by the block size. Parameters are a pydantic model
(:class:`PreprocessParams`) with units in the field descriptions.
"""

from __future__ import annotations

import functools
import os
import warnings
from typing import Literal, Optional

os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field, model_validator  # noqa: E402
from scipy import ndimage  # noqa: E402

from scopeline.core.fov import FOVParams  # noqa: E402

__all__ = [
    "CorruptionParams",
    "DefectParams",
    "LineNoiseParams",
    "PreprocessParams",
    "crop_downsample",
    "output_shape",
    "frame_scores",
    "flag_corrupted",
    "repair",
    "denoise",
    "remove_background",
    "tophat_uint8",
    "glow_image",
    "preprocess_frame",
    "find_defects",
    "DefectRepair",
    "RowSampler",
    "row_offsets",
    "remove_line_noise",
    "difference_row_noise",
    "striped_rows",
    "dark_start",
    "normalize_light",
    "light_levels",
]


#: Default smoothing of the glow (per-pixel minimum), pixels; see ``PreprocessParams.glow_sigma``.
GLOW_SIGMA = 10.0


class CorruptionParams(BaseModel):
    """Detection of corrupted frames (broken rows or blocks, dropped-to-black frames)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Detect corrupted frames.")
    threshold: float = Field(10.0, gt=1, description="A frame whose largest jump between adjacent rows (or "
                             "columns) exceeds this many times its median jump is corrupted.")
    black_fraction: float = Field(0.5, ge=0, lt=1, description="A frame whose mean is below this fraction of "
                                  "the median frame mean, and of the median of the frames read with it (a block), "
                                  "is dropped-to-black. The second test keeps a slow dimming of the whole field "
                                  "(a simulated background swing halved a recording's light over 600 frames, and "
                                  "every frame of it was replaced) from counting as lost frames.")
    lost_light: float = Field(0.05, ge=0, lt=1, description="... or, in place of the second test, a frame whose "
                              "light above the sensor's black level is below this fraction of the movie's (a run of "
                              "black frames as long as a block). The deepest ~70 frames of that background swing "
                              "still fall under it and are repaired (608 x 608 x 8,000: shift RMSE 0.168 px, "
                              "0.077 without this test).")
    action: Literal["interpolate", "drop"] = Field("interpolate", description="Replace corrupted frames by the "
                                                   "mean of the nearest good frames, or drop them.")


class DefectParams(BaseModel):
    """Defective pixels: found in the mean image of raw frames, replaced by their neighbours' median."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Find and replace defective (hot or dead) pixels.")
    threshold: float = Field(10.0, gt=0, description="A pixel whose mean differs from the median of its 3 x 3 "
                             "neighbourhood by more than this many robust standard deviations of such differences "
                             "(over the frame) ...")
    min_contrast: float = Field(0.25, ge=0, description="... and by more than this fraction of the median "
                                "brightness of the frame is defective (a cell's centre stands out far less).")


class LineNoiseParams(BaseModel):
    """Horizontal line noise: per-row offsets, estimated and subtracted frame by frame."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Remove per-row offsets (horizontal line noise) from every frame, when the "
                          "movie has line noise.")
    detect_ratio: float = Field(2.0, ge=0, description="The movie has line noise when the row medians of differences of "
                                "consecutive sampled frames vary this many times more than pixel noise alone makes "
                                "them (0: always remove). On a movie without line noise, removal would only add the "
                                "estimate's own error (measured: 1.6 units on a simulated moving movie).")
    min_level: float = Field(0.25, ge=0, description="... and by at least this fraction of the pixel noise (the row "
                             "medians of a movie without line noise still move with its cells' activity: 0.16 of the "
                             "pixel noise on the real CA1 recording, 1.2 on the real wireless one).")
    frames: int = Field(41, ge=3, le=1001, description="Frames of the running median over time of each row's level: "
                        "the image's own profile, which changes slowly, while line noise changes every frame (the "
                        "median's own error, 1.25 / sqrt(frames) of the line noise, drifts slowly with the window "
                        "and looks like slow activity along rows: more frames, less of it).")
    smooth_rows: float = Field(0.0, ge=0, le=1000, description="Gaussian sigma, rows: what varies more slowly than "
                               "this down the frame is left (a change of light over the whole frame; the background "
                               "removal takes it out anyway); 0: only each frame's median offset is left.")
    samples: int = Field(128, ge=16, le=4096, description="Pixels per row (evenly spaced inside the field of view) "
                         "whose median is the row's level.")
    striped_ratio: float = Field(2.5, gt=1, description="A frame whose row offsets vary this many times more than the "
                                 "movie's line noise, and more than striped_noise times its pixel noise, is a striped "
                                 "frame (a burst of wireless or read-out errors): it is replaced like a corrupted "
                                 "frame (the real wireless recording's frames vary 0.6-1.45 times its line noise).")
    striped_noise: float = Field(2.0, gt=0, description="See striped_ratio (frames whose strong cells fire move their "
                                 "rows' levels too: up to 0.8 pixel-noise units on the real CA1 recording).")


class PreprocessParams(BaseModel):
    """Preprocessing parameters (pixels refer to the raw frame unless stated)."""

    model_config = ConfigDict(extra="forbid")

    crop: Optional[tuple[int, int, int, int]] = Field(
        None, description="Rectangle kept, (y0, y1, x0, x1) in raw pixels, end exclusive; null keeps all.")
    spatial_downsample: int = Field(1, ge=1, le=16, description="Spatial downsampling factor.")
    temporal_downsample: int = Field(1, ge=1, le=100, description="Temporal downsampling factor.")
    downsample_method: Literal["mean", "subset"] = Field("mean", description="Block mean, or every n-th pixel/frame.")
    corruption: CorruptionParams = Field(default_factory=CorruptionParams)
    defects: DefectParams = Field(default_factory=DefectParams)
    line_noise: LineNoiseParams = Field(default_factory=LineNoiseParams)
    fov: FOVParams = Field(default_factory=FOVParams)
    dark_fraction: float = Field(0.8, gt=0, lt=1, description="Frames at the start of the movie darker than this "
                                 "fraction of its median brightness are flagged as dark (LED warm-up).")
    normalize_light: bool = Field(True, description="Scale the light (intensity above the black level: the dark outside "
                                  "the lens, 0 without one) of frames more than 10% darker or brighter than their "
                                  "block's median (flicker) or, for the dark frames a movie starts with, than the "
                                  "movie's (LED warm-up) back to within 10% of it: these then do not reach the "
                                  "traces, while the slower changes of the background (signal of the tissue) stay.")
    remove_glow: bool = Field(
        False, description="Subtract the glow: the per-pixel minimum over time, smoothed by glow_sigma. Off by default: "
                           "the top-hat takes out smooth glow anyway, and on simulated recordings traces correlate "
                           "better without it (0.98 vs 0.97 smoothed vs 0.92 raw minimum, 300 cells, 1,000 frames).")
    glow_sigma: float = Field(
        GLOW_SIGMA, ge=0, le=200,
        description="Gaussian smoothing of the per-pixel minimum before it is subtracted, pixels after "
                    "downsampling. The sensor's glow and vignetting are smooth; the minimum of a moving movie also "
                    "holds the tissue's texture, which then moves with every shift in the corrected movie and turns "
                    "into motion-correlated false units. 0: the raw minimum (Minian).")
    denoise: Literal["median", "gaussian", "bilateral", "anisotropic", "none"] = Field(
        "median", description="Per-frame denoising filter.")
    denoise_window: int = Field(5, ge=1, le=31, description="Denoising window, pixels (odd for median).")
    background: Literal["tophat", "uniform", "none"] = Field(
        "tophat", description="Per-frame background removal: morphological top-hat with a disk, or minus a box mean.")
    background_radius: int = Field(10, ge=1, le=100, description="Disk radius (top-hat) or half box size (uniform), "
                                   "pixels after downsampling; about the largest cell radius.")

    @model_validator(mode="after")
    def _check(self) -> "PreprocessParams":
        if self.crop is not None:
            y0, y1, x0, x1 = self.crop
            if not (0 <= y0 < y1 and 0 <= x0 < x1):
                raise ValueError(f"crop {self.crop}: need 0 <= y0 < y1 and 0 <= x0 < x1")
        if self.denoise == "median" and self.denoise_window % 2 == 0:
            raise ValueError(f"denoise_window {self.denoise_window}: a median window must be odd")
        return self


# -------------------------------------------------------------------------------- geometry


def output_shape(n_frames: int, height: int, width: int, p: PreprocessParams) -> tuple[int, int, int]:
    """Shape (frames, height, width) after crop and downsampling.

    Raises
    ------
    ValueError
        If the crop rectangle does not fit in the frame.
    """
    if p.crop is not None:
        y0, y1, x0, x1 = p.crop
        if y1 > height or x1 > width:
            raise ValueError(f"crop {p.crop} does not fit in a {height}x{width} frame")
        height, width = y1 - y0, x1 - x0
    s, t = p.spatial_downsample, p.temporal_downsample
    return n_frames // t, height // s, width // s


def crop_downsample(block: np.ndarray, p: PreprocessParams) -> np.ndarray:
    """Crop and downsample a block of raw frames.

    Parameters
    ----------
    block : numpy.ndarray
        (frames, height, width), any dtype; ``frames`` a multiple of ``temporal_downsample``.
    p : PreprocessParams

    Returns
    -------
    numpy.ndarray
        (frames // t, height // s, width // s): uint8 when the input is uint8 and nothing is averaged
        (keeping the fast 8-bit path of :func:`preprocess_frame`), else float32.
    """
    if p.crop is not None:
        y0, y1, x0, x1 = p.crop
        block = block[:, y0:y1, x0:x1]
    s, t = p.spatial_downsample, p.temporal_downsample
    n, h, w = block.shape[0] // t * t, block.shape[1] // s * s, block.shape[2] // s * s
    block = block[:n, :h, :w]
    keep8 = block.dtype == np.uint8
    if p.downsample_method == "subset" or (s == 1 and t == 1):
        return np.ascontiguousarray(block[::t, ::s, ::s], dtype=np.uint8 if keep8 else np.float32)
    out = block.astype(np.float32, copy=False)
    if t > 1:
        out = out.reshape(n // t, t, h, w).mean(axis=1)
    if s > 1:
        out = out.reshape(out.shape[0], h // s, s, w // s, s).mean(axis=(2, 4))
    return np.ascontiguousarray(out, dtype=np.float32)


# ------------------------------------------------------------------------ corrupted frames


def frame_scores(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame corruption score and mean brightness.

    The score looks at each frame alone: the mean absolute jump between adjacent rows (and between
    adjacent columns), and the largest jump divided by the median one. Wireless transmission errors
    break whole rows or blocks, whose edges are jumps an order of magnitude above a frame's usual
    ones: on the labelled real wireless recording corrupted frames score >= 20 and clean ones <= 5.1,
    real CA1 frames <= 6.5, simulated frames ~1.3. Needing no temporal reference, the score does
    not depend on how the movie is cut into blocks, and motion does not change it.

    Parameters
    ----------
    block : numpy.ndarray
        (frames, height, width), uint8 or float.

    Returns
    -------
    scores : numpy.ndarray
        float64 (frames,), dimensionless (>= 1).
    means : numpy.ndarray
        float64 (frames,), mean intensity of each frame.
    """
    if block.dtype == np.uint8:  # OpenCV's saturating absdiff and integer sums on 8 bits: exact, SIMD
        h, w = block.shape[1:]
        rows = np.stack([cv2.reduce(cv2.absdiff(f[1:], f[:-1]), 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S)[:, 0]
                         for f in block]) / w
        cols = np.stack([cv2.reduce(cv2.absdiff(f[:, 1:], f[:, :-1]), 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S)[0]
                         for f in block]) / h
        means = np.array([cv2.mean(f)[0] for f in block], np.float64)
    else:
        block = block.astype(np.float32, copy=False)
        rows = np.abs(np.diff(block, axis=1)).mean(axis=2)
        cols = np.abs(np.diff(block, axis=2)).mean(axis=1)
        means = block.mean(axis=(1, 2)).astype(np.float64)
    eps = 1e-6
    row_score = rows.max(axis=1) / (np.median(rows, axis=1) + eps)
    col_score = cols.max(axis=1) / (np.median(cols, axis=1) + eps)
    return np.maximum(row_score, col_score).astype(np.float64), means


def flag_corrupted(scores: np.ndarray, means: np.ndarray, p: CorruptionParams, brightness: float | None = None,
                   offset: int = 0, black: float = 0.0) -> dict[int, str]:
    """Decide which frames are corrupted from their :func:`frame_scores`.

    Parameters
    ----------
    scores, means : numpy.ndarray
        float64 (frames,), from :func:`frame_scores`.
    p : CorruptionParams
    brightness : float, optional
        Typical frame mean of the movie (dropped-to-black frames fall below ``black_fraction`` of
        it, and of the median of ``means`` or to ``lost_light`` of it above ``black``: a block
        dimmed as a whole is not black); default the median of ``means``.
    offset : int
        Index of the first frame (for blocks of a longer movie).
    black : float
        The sensor's black level, movie units (0: unknown).

    Returns
    -------
    dict
        frame index -> reason (``"rows/blocks"`` or ``"black"``), in frame order.
    """
    if not p.enabled or scores.size == 0:
        return {}
    local = float(np.median(means))
    movie = local if brightness is None else brightness
    out = {}
    for i in range(scores.size):
        lost = means[i] < p.black_fraction * local or means[i] - black < p.lost_light * (movie - black)
        if means[i] < p.black_fraction * movie and lost:
            out[offset + i] = "black"
        elif scores[i] > p.threshold:
            out[offset + i] = "rows/blocks"
    return out


def repair(block: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """Replace flagged frames by the mean of the nearest good frame before and after (in the block).

    Parameters
    ----------
    block : numpy.ndarray
        (frames, height, width).
    bad : numpy.ndarray
        bool (frames,), True for corrupted frames.

    Returns
    -------
    numpy.ndarray
        The block with corrupted frames replaced (a copy when any is replaced). Where only one side
        has a good frame, that frame is used; with no good frame at all the block is returned as is.
    """
    if not bad.any() or bad.all():
        return block
    out = block.copy()
    good = np.flatnonzero(~bad)
    for i in np.flatnonzero(bad):
        before, after = good[good < i], good[good > i]
        sides = [block[before[-1]]] if before.size else []
        sides += [block[after[0]]] if after.size else []
        mean = np.mean(sides, axis=0)
        out[i] = np.rint(mean) if np.issubdtype(block.dtype, np.integer) else mean
    return out


# ------------------------------------------------------------------ denoise and background


def denoise(frame: np.ndarray, method: str, window: int) -> np.ndarray:
    """Denoise one float32 frame (height, width); ``window`` in pixels.

    ``median``: median filter. OpenCV filters float32 frames with windows 3 and 5; larger windows run
    on uint8, exactly when the frame holds integers in 0-255 (raw 8-bit Miniscope data after glow
    removal), else after scaling the frame's range to 0-255 (error at most range / 510);
    ``gaussian``: sigma = window / 4; ``bilateral``:
    diameter = window, range sigma = 2 x the frame's robust noise; ``anisotropic``: Perona-Malik
    diffusion, ``window`` iterations.
    """
    if method == "none" or window <= 1:
        return frame
    if method == "median":
        if window <= 5:
            return cv2.medianBlur(frame, window)
        lo, hi = float(frame.min()), float(frame.max())
        if lo >= 0 and hi <= 255 and np.array_equal(frame, np.round(frame)):
            return cv2.medianBlur(frame.astype(np.uint8), window).astype(np.float32)
        scale = 255.0 / (hi - lo) if hi > lo else 1.0
        q = np.rint((frame - lo) * scale).astype(np.uint8)
        return cv2.medianBlur(q, window).astype(np.float32) / scale + lo
    if method == "gaussian":
        return cv2.GaussianBlur(frame, (0, 0), window / 4.0)
    if method == "bilateral":
        noise = 1.4826 * float(np.median(np.abs(np.diff(frame, axis=1)))) / np.sqrt(2) + 1e-6
        return cv2.bilateralFilter(frame, window, 2 * noise, window / 2.0)
    if method == "anisotropic":
        return _perona_malik(frame, window)
    raise ValueError(f"unknown denoise method {method!r}")


def _perona_malik(frame: np.ndarray, iterations: int, step: float = 0.2) -> np.ndarray:
    """Perona-Malik anisotropic diffusion (exponential conductance, kappa from the gradient MAD)."""
    u = frame.astype(np.float32, copy=True)
    for _ in range(iterations):
        dn = np.roll(u, -1, 0) - u
        ds = np.roll(u, 1, 0) - u
        de = np.roll(u, -1, 1) - u
        dw = np.roll(u, 1, 1) - u
        kappa = 1.4826 * float(np.median(np.abs(de))) * 2 + 1e-6
        u += step * sum(np.exp(-((d / kappa) ** 2)) * d for d in (dn, ds, de, dw))
    return u


_DISKS: dict[int, np.ndarray] = {}


def _disk(radius: int) -> np.ndarray:
    if radius not in _DISKS:
        _DISKS[radius] = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return _DISKS[radius]


@functools.lru_cache(maxsize=None)
def _disk_rows(radius: int) -> list[tuple[int, int]]:
    """The disk as horizontal lines: (row offset, line width) per row of :func:`_disk` (widths odd)."""
    disk = _disk(radius)
    return [(dy - radius, int(disk[dy].sum())) for dy in range(disk.shape[0])]


@functools.lru_cache(maxsize=None)
def _line_plan(widths: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """How to build every line width from shorter ones: steps ``(w, a, b)`` meaning width ``w`` is
    width ``a`` combined with width ``b`` shifted by ``a`` (``a + b = w``), starting from width 1 and
    doubling up to the smallest width, then adding the differences between successive widths."""
    have, steps = {1}, []

    def make(w: int) -> None:
        if w in have:
            return
        if w % 2 == 0 or w < 4:
            a = w // 2
        else:
            a = max(x for x in have if x < w)
        make(a)
        make(w - a)
        steps.append((w, a, w - a))
        have.add(w)

    for w in sorted(widths):
        make(w)
    return steps


def _by_rows(frame: np.ndarray, radius: int, erode: bool) -> np.ndarray:
    """Erosion (or dilation) of a uint8 frame by the disk, as the minimum (maximum) over the disk's rows
    of a line erosion (dilation) shifted by the row's offset: the same result as with the disk
    element, pixels outside the frame ignored.

    The line erosions are built from each other by van Herk-style composition (a window of width
    ``a + b`` is the minimum of a window of width ``a`` and one of width ``b`` shifted by ``a``), one
    SIMD minimum of two views each, instead of one OpenCV line erosion per width (whose cost grows
    with the width).
    """
    combine, fill = (cv2.min, 255) if erode else (cv2.max, 0)
    h, w = frame.shape
    padded = cv2.copyMakeBorder(frame, radius, radius, radius, radius, cv2.BORDER_CONSTANT, value=fill)
    full = padded.shape[1]
    rows = _disk_rows(radius)
    left = {1: padded}  # width -> windows starting at each column: (h + 2r, full - width + 1)
    for width, a, b in _line_plan(tuple(sorted({n for _, n in rows}))):
        n = full - width + 1
        left[width] = combine(left[a][:, :n], left[b][:, a: a + n])
    out = None
    for dy, width in rows:
        x0 = radius - (width - 1) // 2
        part = left[width][radius + dy: radius + dy + h, x0: x0 + w]
        out = part.copy() if out is None else combine(out, part, dst=out)
    return out


def tophat_uint8(frame: np.ndarray, radius: int) -> np.ndarray:
    """Morphological (white) top-hat of an 8-bit frame: the frame minus its opening by a disk.

    Equal to ``cv2.morphologyEx(frame, cv2.MORPH_TOPHAT, disk)`` (tested on radii 1-15 and frames
    smaller than the disk): erosion and dilation by the disk are computed as the minimum / maximum
    over the disk's rows of line erosions / dilations (the disk is the union of its rows), the lines
    built from each other (:func:`_by_rows`). Measured on a 512 x 512 frame, radius 10, OpenCV on one
    thread: 0.6-0.7 ms; OpenCV's disk element 2.2 ms; one OpenCV line erosion per width 1.2 ms.

    Parameters
    ----------
    frame : numpy.ndarray
        uint8 (height, width).
    radius : int
        Disk radius, pixels (OpenCV's elliptic structuring element of size 2 radius + 1).

    Returns
    -------
    numpy.ndarray
        uint8 (height, width).
    """
    opened = _by_rows(_by_rows(frame, radius, erode=True), radius, erode=False)
    return cv2.subtract(frame, opened)


def glow_image(minimum: np.ndarray, sigma: float) -> np.ndarray:
    """The glow subtracted from every frame: the per-pixel minimum over time, Gaussian-smoothed and
    lowered until it lies nowhere above the minimum.

    Smoothing keeps the sensor's glow and vignetting (smooth) and drops the tissue's texture that the
    minimum of a moving movie holds; lowering it by its largest excess over the minimum keeps every
    sampled pixel above 0 after subtraction (8-bit subtraction clips at 0, which would distort dark
    texture such as vessel shadows). A constant offset does not matter: the background removal that
    follows takes it out.

    Parameters
    ----------
    minimum : numpy.ndarray
        uint8 or float32 (height, width): per-pixel minimum of (sampled) raw frames.
    sigma : float
        Gaussian standard deviation, pixels; 0 returns ``minimum`` unchanged.

    Returns
    -------
    numpy.ndarray
        Same dtype and shape as ``minimum``; never above it.
    """
    if sigma <= 0:
        return minimum
    low = minimum.astype(np.float32)
    smooth = cv2.GaussianBlur(low, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)
    smooth = np.maximum(smooth - float((smooth - low).max()), 0)
    return np.floor(smooth).astype(np.uint8) if minimum.dtype == np.uint8 else smooth


def remove_background(frame: np.ndarray, method: str, radius: int) -> np.ndarray:
    """Remove the smooth background of one float32 frame.

    ``tophat``: frame minus its morphological opening with a disk of ``radius`` pixels (keeps bright
    structures smaller than the disk: cells); ``uniform``: frame minus its mean over a
    (2 radius + 1) box.
    """
    if method == "none":
        return frame
    if method == "tophat":
        return cv2.morphologyEx(frame, cv2.MORPH_TOPHAT, _disk(radius))
    if method == "uniform":
        return frame - cv2.blur(frame, (2 * radius + 1, 2 * radius + 1), borderType=cv2.BORDER_REFLECT)
    raise ValueError(f"unknown background method {method!r}")


def preprocess_frame(frame: np.ndarray, p: PreprocessParams, min_image: np.ndarray | None) -> np.ndarray:
    """Glow removal, denoising and background removal of one frame.

    Parameters
    ----------
    frame : numpy.ndarray
        uint8 or float (height, width), already cropped, downsampled and repaired.
    p : PreprocessParams
    min_image : numpy.ndarray or None
        (height, width), the per-pixel minimum over the movie (subtracted when ``p.remove_glow``).

    Returns
    -------
    numpy.ndarray
        float32 (height, width).

    Notes
    -----
    8-bit frames (uint8 frame and minimum) run glow removal, median denoising and top-hat on uint8,
    which is exact (values stay integers in 0-255) and several times faster than float32.
    """
    glow = p.remove_glow and min_image is not None
    if (frame.dtype == np.uint8 and (not glow or min_image.dtype == np.uint8)
            and p.denoise in ("median", "none") and p.background in ("tophat", "none")):
        f = cv2.subtract(frame, min_image) if glow else frame
        if p.denoise == "median" and p.denoise_window > 1:
            f = cv2.medianBlur(f, p.denoise_window)
        if p.background == "tophat":
            f = tophat_uint8(f, p.background_radius)
        return f.astype(np.float32)
    f = frame.astype(np.float32)
    if glow:  # clipped at 0 as on the 8-bit path: the minimum comes from sampled frames
        f = np.maximum(f - min_image, 0)
    f = denoise(np.ascontiguousarray(f, dtype=np.float32), p.denoise, p.denoise_window)
    return remove_background(f, p.background, p.background_radius)


# ------------------------------------------------------------------------ defective pixels


def find_defects(mean_image: np.ndarray, p: DefectParams) -> np.ndarray:
    """Defective pixels of the sensor from the mean image of raw frames.

    A hot pixel (stuck bright) or dead pixel (stuck at 0) differs from the median of its 3 x 3
    neighbourhood in the mean image by much more than anything else in the frame: by more than
    ``threshold`` robust standard deviations (1.4826 MAD) of those differences, and by more than
    ``min_contrast`` of the frame's median brightness. Cells and vessels are smooth over 3 x 3 pixels
    and, in the mean of a moving movie, blurred further; they stand out far less.

    Parameters
    ----------
    mean_image : numpy.ndarray
        float (height, width): mean of raw frames (cropped, downsampled), movie units.
    p : DefectParams

    Returns
    -------
    numpy.ndarray
        int8 (height, width): 1 hot, -1 dead, 0 good (all 0 when ``p.enabled`` is False).
    """
    img = np.asarray(mean_image, np.float32)
    out = np.zeros(img.shape, np.int8)
    if not p.enabled or min(img.shape) < 3:
        return out
    diff = img - ndimage.median_filter(img, size=3, mode="reflect")
    spread = 1.4826 * float(np.median(np.abs(diff - np.median(diff))))
    limit = max(p.threshold * spread, p.min_contrast * float(np.median(img)), 1e-6)
    out[diff > limit] = 1
    out[diff < -limit] = -1
    return out


class DefectRepair:
    """Replaces defective pixels in frames by the median of their good neighbours (3 x 3, then 5 x 5
    for clusters).

    Parameters
    ----------
    defects : numpy.ndarray
        int (height, width): non-zero at defective pixels (:func:`find_defects`).
    """

    def __init__(self, defects: np.ndarray) -> None:
        bad = np.asarray(defects) != 0
        self.shape = bad.shape
        self.pixels = np.flatnonzero(bad)
        self._yx = np.divmod(self.pixels, bad.shape[1])
        h, w = bad.shape
        ys, xs = np.divmod(self.pixels, w)
        neigh = []
        for r in (1, 2):
            offs = [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if max(abs(dy), abs(dx)) == r]
            neigh += offs
        ny = ys[:, None] + np.array([o[0] for o in neigh])[None]
        nx = xs[:, None] + np.array([o[1] for o in neigh])[None]
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        flat = np.where(inside, np.clip(ny, 0, h - 1) * w + np.clip(nx, 0, w - 1), 0)
        good = inside & ~bad.ravel()[flat]
        ring1 = np.arange(len(neigh)) < 8
        # the 3 x 3 ring when it has a good pixel, else the 5 x 5 ring
        use = np.where((good & ring1).any(axis=1, keepdims=True), good & ring1, good)
        self.index = flat
        self.use = use

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """Repair one frame, or a block of frames, in place and return it.

        Parameters
        ----------
        frame : numpy.ndarray
            (height, width) of the defect map's shape, or (n_frames, height, width); any dtype (integer
            frames get rounded values); a view is repaired in place too.

        Raises
        ------
        ValueError
            If the frames' shape is not the defect map's.
        """
        if frame.shape[-2:] != self.shape or frame.ndim not in (2, 3):
            raise ValueError(f"frame of shape {frame.shape} for a defect map of shape {self.shape}")
        if not len(self.pixels):
            return frame
        frames = frame.reshape(-1, self.shape[0] * self.shape[1])  # read only: a copy for a non-contiguous view
        vals = np.where(self.use[None], frames[:, self.index].astype(np.float32), np.nan)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            fill = np.nanmedian(vals, axis=2)  # (n_frames, n_defects)
        lost = np.isnan(fill)  # no good neighbour at all: the frame's median
        if lost.any():
            for i in np.flatnonzero(lost.any(axis=1)):
                fill[i, lost[i]] = float(np.median(frames[i]))
        if np.issubdtype(frame.dtype, np.integer):
            fill = np.rint(fill)
        if frame.ndim == 2:
            frame[self._yx] = fill[0]
        else:
            frame[:, self._yx[0], self._yx[1]] = fill
        return frame


# ------------------------------------------------------------------------------ line noise


class RowSampler:
    """Where each row's level is measured: up to ``samples`` evenly spaced pixels of the row inside a
    mask (the lens' field of view on the sensor; every pixel without one).

    Parameters
    ----------
    mask : numpy.ndarray
        bool (height, width).
    samples : int
        Pixels per row.
    min_pixels : int
        Rows with fewer pixels inside get no estimate (offset 0).
    """

    def __init__(self, mask: np.ndarray, samples: int = 128, min_pixels: int = 16) -> None:
        mask = np.asarray(mask, bool)
        h, w = mask.shape
        self.cols = np.zeros((h, samples), np.int64)
        self.valid = np.zeros(h, bool)
        for y in range(h):
            xs = np.flatnonzero(mask[y])
            if len(xs) >= min(min_pixels, w):
                self.valid[y] = True
                self.cols[y] = xs[np.linspace(0, len(xs) - 1, samples).round().astype(int)]
        self.rows = np.flatnonzero(self.valid)
        self.cols = self.cols[self.valid]
        # distinct pixels per row (a row with fewer than ``samples`` inside repeats some): what a median's
        # standard error goes by
        self.distinct = np.array([len(np.unique(c)) for c in self.cols], np.int64)

    def levels(self, frame: np.ndarray, reference: Optional[np.ndarray] = None) -> np.ndarray:
        """float32 (valid rows,): median of each valid row's samples (of ``frame - reference`` when a
        reference image is given)."""
        values = frame[self.rows[:, None], self.cols]
        if reference is not None:
            values = values.astype(np.float32) - self._samples(reference)
        return np.median(values, axis=1).astype(np.float32)

    def _samples(self, reference: np.ndarray) -> np.ndarray:
        """The reference image at the sampled pixels (kept for the last reference seen)."""
        if getattr(self, "_ref", None) is not reference:
            self._ref, self._ref_samples = reference, reference[self.rows[:, None], self.cols].astype(np.float32)
        return self._ref_samples

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_ref", "_ref_samples")}


def row_offsets(frames: np.ndarray, sampler: RowSampler, p: LineNoiseParams,
                reference: Optional[np.ndarray] = None) -> np.ndarray:
    """Per-row offsets of a block of consecutive frames (horizontal line noise).

    The level of each row is the median of its samples (:class:`RowSampler`) of the frame minus a
    reference image (the movie's mean): robust to the pixels of an active cell, which would move the
    median of the row's own, textured values. Line noise changes from frame to frame, the image slowly (its
    vertical profile moves with the brain, changes with the light): the offsets are each row's level
    minus its running median over ``p.frames`` frames (a burst of striped frames does not move it),
    minus each frame's median offset (a change of the whole frame's brightness; or, with
    ``p.smooth_rows``, what varies more slowly than that down the frame).

    Parameters
    ----------
    frames : numpy.ndarray
        (frames, height, width), uint8 or float: consecutive frames.
    sampler : RowSampler
    p : LineNoiseParams
    reference : numpy.ndarray, optional
        float32 (height, width): a static image of the movie (its mean), subtracted before the medians.

    Returns
    -------
    numpy.ndarray
        float32 (frames, height): the offset of each row of each frame, movie units (0 for rows without
        an estimate).
    """
    n, h = frames.shape[:2]
    out = np.zeros((n, h), np.float32)
    if len(sampler.rows) < 3 or n == 0:
        return out
    level = np.stack([sampler.levels(f, reference) for f in frames])
    # mirrored at the block's ends: a first or last frame must not be most of its own reference
    dev = level - ndimage.median_filter(level, size=(min(p.frames, 2 * n - 1), 1), mode="mirror")
    if p.smooth_rows > 0:
        dev -= ndimage.gaussian_filter1d(dev, p.smooth_rows, axis=1, mode="nearest")
    else:
        dev -= np.median(dev, axis=1, keepdims=True)
    out[:, sampler.rows] = dev
    return out


def striped_rows(frames: np.ndarray, reference: np.ndarray, window: int) -> np.ndarray:
    """A cheap look at the row offsets of a block of consecutive frames, for finding striped frames in a
    movie without line noise throughout: each row's mean (OpenCV's SIMD reduce, 8-bit) minus the
    reference image's, minus its running mean over ``window`` frames (a burst of three striped frames
    moves it by a tenth of its offsets), minus each frame's median offset.

    Parameters
    ----------
    frames : numpy.ndarray
        (frames, height, width), uint8 or float.
    reference : numpy.ndarray
        float32 (height, width): the movie's mean image.
    window : int
        Frames of the running mean.

    Returns
    -------
    numpy.ndarray
        float32 (frames, height).
    """
    ref = reference.mean(axis=1, dtype=np.float64).astype(np.float32)
    level = np.stack([cv2.reduce(f, 1, cv2.REDUCE_AVG, dtype=cv2.CV_32F)[:, 0] for f in frames]) - ref
    dev = level - ndimage.uniform_filter1d(level, size=min(window, len(level)), axis=0, mode="mirror")
    return (dev - np.median(dev, axis=1, keepdims=True)).astype(np.float32)


def remove_line_noise(frames: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Subtract per-row offsets (:func:`row_offsets`) from a block of consecutive frames, in place.

    Parameters
    ----------
    frames : numpy.ndarray
        (frames, height, width), uint8 or float; changed in place (uint8: each row's offset is
        subtracted in whole units from every pixel, its fraction from an evenly spread share of them,
        the result clipped to 0-255: this keeps the fast 8-bit path of :func:`preprocess_frame` and the
        rows' means right; saturated pixels, 255, are left as they are: their true value is unknown).
    offsets : numpy.ndarray
        float (frames, height): each row's offset in each frame, movie units.

    Returns
    -------
    numpy.ndarray
        ``offsets``: what was subtracted.
    """
    r = offsets
    phase = _dither(frames.shape[2])
    for j in range(len(frames)):
        if frames.dtype == np.uint8:
            whole = np.floor(r[j])
            # each row's fraction of a unit: a matching share of its pixels rounded up, spread evenly, so the
            # row's mean is right (rounding the whole row the same way would leave line noise of 0.29 units)
            ri = (whole[:, None] + (phase[None, :] < (r[j] - whole)[:, None])).astype(np.int16)
            f = frames[j]
            fixed = np.clip(f.astype(np.int16) - ri, 0, 255).astype(np.uint8)
            saturated = f == 255  # its true value is unknown: subtracting would paint the stripes in
            frames[j] = np.where(saturated, f, fixed) if saturated.any() else fixed
        else:
            frames[j] -= r[j][:, None].astype(frames.dtype)
    return r


@functools.lru_cache(maxsize=8)
def _dither(width: int) -> np.ndarray:
    """float32 (width,) in [0, 1): an evenly spread sequence over the columns (golden-ratio steps)."""
    return ((np.arange(width) * 0.6180339887498949) % 1.0).astype(np.float32)


def difference_row_noise(a: np.ndarray, b: np.ndarray, sampler: RowSampler, with_floor: bool = False):
    """Line noise of two consecutive frames measured without any model of the image: the standard
    deviation over rows of the row medians of their difference (which cancels the static image and
    the slow background), divided by sqrt(2), in movie units (0 without rows to measure).

    Independent of :func:`row_offsets`, it tells how much line noise a movie has before and after its
    removal (``benchmarks/artifacts.py`` measures real recordings with it).

    Parameters
    ----------
    a, b : numpy.ndarray
        (height, width): consecutive frames.
    sampler : RowSampler
    with_floor : bool
        Also return what pixel noise alone gives: ``1.2533 sigma / sqrt(n)`` (the standard error of a
        median of ``n`` distinct pixels, the median over rows of the sampler's), with ``sigma`` the pixel noise (the standard deviation of the difference's samples
        about their rows' levels, winsorized at 5 robust sds, over sqrt(2)); and ``sigma``.

    Returns
    -------
    float or (float, float, float)
        The line noise; with ``with_floor`` also the floor and ``sigma``.
    """
    if len(sampler.rows) < 3:
        return (0.0, 0.0, 0.0) if with_floor else 0.0
    d = a.astype(np.float32) - b.astype(np.float32)
    levels = sampler.levels(d)
    noise = float(np.std(levels - np.median(levels)) / np.sqrt(2))
    if not with_floor:
        return noise
    sample = d[sampler.rows[:, None], sampler.cols] - levels[:, None]
    # the standard deviation of the differences winsorized at 5 robust sds (active cells out; a MAD alone
    # is quantized on 8-bit data: 1 or 1.5 units for noise of 2-3)
    clip = 5 * 1.4826 * max(float(np.median(np.abs(sample))), 1.0)
    sigma = float(np.std(np.clip(sample, -clip, clip))) / np.sqrt(2)
    return noise, 1.2533 * sigma / np.sqrt(float(np.median(sampler.distinct))), sigma


# ------------------------------------------------------------------------------ dark frames


def dark_start(brightness: np.ndarray, fraction: float) -> int:
    """Number of frames at the start of a movie darker than ``fraction`` of its median brightness.

    Parameters
    ----------
    brightness : numpy.ndarray
        float (frames,): mean intensity of each frame.
    fraction : float
        A frame is dark below this fraction of the median brightness (0-1).

    Returns
    -------
    int
        Length of the leading run of dark frames (LED warm-up); 0 when the first frame is bright.
    """
    b = np.asarray(brightness, np.float64)
    if b.size == 0:
        return 0
    bright = b >= fraction * float(np.median(b))
    return int(np.argmax(bright)) if bright.any() else int(b.size)


def light_levels(light: np.ndarray, movie_level: float, dark_fraction: float, at_start: bool) -> np.ndarray:
    """The light each frame of a block of consecutive frames is brought towards (:func:`normalize_light`).

    Flicker is the LED's and lasts a frame or a few: the block's own median light. A change as slow as
    a block is the tissue's (out-of-focus fluorescence) and stays: scaled back to the movie's light, a
    simulated background swing that dimmed the field to a third for 600 frames had its cells'
    transients tripled too (trace r 0.5 there, against 0.93 elsewhere). The dark frames a movie starts
    with (LED warm-up, below ``dark_fraction`` of the movie's light) go to the movie's light.

    Parameters
    ----------
    light : numpy.ndarray
        float (frames,): each frame's mean intensity.
    movie_level : float
        The movie's (median) brightness.
    dark_fraction : float
        :attr:`PreprocessParams.dark_fraction`.
    at_start : bool
        Whether the block is the movie's first.

    Returns
    -------
    numpy.ndarray
        float64 (frames,).
    """
    light = np.asarray(light, np.float64)
    level = np.full(len(light), float(np.median(light)) if len(light) else movie_level)
    if at_start:
        bright = light >= dark_fraction * movie_level
        level[: int(np.argmax(bright)) if bright.any() else len(light)] = movie_level
    return level


def normalize_light(frames: np.ndarray, brightness: np.ndarray, level, black: float,
                    tolerance: float = 0.1) -> np.ndarray:
    """Bring frames whose light is far from a level back towards it, in place (LED warm-up, flicker;
    :func:`light_levels` gives the levels).

    A frame's light relative to its level is ``g = (brightness - black) / (level - black)``; its
    intensity above the black level is divided by ``g / clip(g, 1 - tolerance, 1 + tolerance)``, so
    frames within ``tolerance`` of their level are left as they are and the correction is continuous in
    ``g``. An unknown black level (0) leaves a uniform offset, which the background removal takes out.

    Parameters
    ----------
    frames : numpy.ndarray
        (frames, height, width), uint8 (rounded and clipped back to 0-255) or float.
    brightness : numpy.ndarray
        float (frames,): each frame's mean intensity.
    level : float or numpy.ndarray
        The brightness the light is brought towards: the movie's (median), or one per frame (frames,).
    black : float
        The sensor's black level, movie units.
    tolerance : float
        Relative change of light left alone.

    Returns
    -------
    numpy.ndarray
        float32 (frames,): the factor each frame's light was divided by (1 where nothing was done, and
        where the level is not above the black level).
    """
    span = np.broadcast_to(np.asarray(level, np.float64) - black, (len(frames),))
    ok = span > 0
    g = np.clip((np.asarray(brightness, np.float64) - black) / np.where(ok, span, 1), 0.05, 20)
    factor = np.where(ok, g / np.clip(g, 1 - tolerance, 1 + tolerance), 1).astype(np.float32)
    levels = np.arange(256, dtype=np.float32)
    for j in np.flatnonzero(factor != 1):
        if frames.dtype == np.uint8:  # the same map through a 256-entry table (OpenCV's LUT: 15x faster)
            lut = np.clip(np.rint((levels - black) / factor[j] + black), 0, 255).astype(np.uint8)
            cv2.LUT(frames[j], lut, dst=frames[j])
        else:
            frames[j] = (frames[j].astype(np.float32) - black) / factor[j] + black
    return factor
