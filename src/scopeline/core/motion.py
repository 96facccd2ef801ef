"""Motion correction of 1-photon movies: rigid (sub-pixel) and piecewise-rigid, with summary images.

Method
------
Shifts are estimated on a *filtered copy*: the cropped, downsampled, repaired raw movie through a
band pass (a box high pass that removes glow and background, then a Gaussian low pass in the Fourier
domain that denoises; :class:`Filter`), which keeps the tissue's stable texture (vessel shadows) as
well as cells; they are applied to the preprocessed (glow- and background-removed, denoised) movie. Texture seen in every
frame is what makes single-frame registration reliable when few cells are active. The filtered copy
is not glow-removed: the per-pixel minimum over a moving movie holds a static imprint of its texture,
which would pull every estimate towards zero; for the same reason the band-passed images are tapered
to zero at their borders before the FFT.

- Registration of a frame to a template: the peak of their cross-correlation (via FFT), restricted to
  ``max_shift`` pixels, refined to ``1 / upsample`` pixel by the matrix-multiply upsampled DFT of
  Guizar-Sicairos, Thurman & Fienup (2008, Opt. Lett. 33:156) around the peak.
- Template: the first ``template_frames`` frames are registered to their own mean, then iteratively
  to the mean (or max) projection of the registered frames. The filtered copy keeps the stable
  texture that every frame shows (vessel shadows, resting cells), so the template does not depend on
  which cells happen to fire, which is what makes it robust when activity is sparse. (Minian uses max
  projections; on band-passed frames they erase dark vessels, so the mean is the default here.)
- Piecewise-rigid (optional): after the rigid shift, overlapping patches on a grid are registered to
  the template's patches (within ``max_deviation`` pixels of the rigid shift), and the patch shifts
  are interpolated into a smooth displacement field applied with one remap (the approach of
  NoRMCorre, Pnevmatikakis & Giovannucci 2017).

Shift convention: ``shifts[t] = (dy, dx)`` pixels is where frame ``t``'s content sits relative to the
template (content at ``p`` in the template is at ``p + shift`` in the frame); correction moves the
frame by ``-shift``.

Streaming: the movie is processed in blocks of frames, in parallel on a dask.distributed cluster
(threads, local worker processes, or a remote scheduler); each block is read, preprocessed,
registered, written to the output Zarr array and summarized frame by frame, so memory is bounded by
``block_frames`` x workers and does not grow with the recording. The raw movie is decoded once: a
sample of evenly spaced blocks (the glow minimum and brightness) and the template's first frames are
read first and kept (up to 256 MiB) for the correction, which reads the rest; dropping corrupted
frames adds a first full pass that finds them. Each thread takes one contiguous run of blocks, so
a block mostly starts where the thread's video reader stopped and needs no seek.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Literal, NamedTuple, Optional

import cv2
import numba
import numpy as np
import scipy.fft as sfft
from pydantic import BaseModel, ConfigDict, Field, model_validator
from threadpoolctl import threadpool_limits

from scopeline.core import fov as fov_
from scopeline.core import io
from scopeline.core import preprocess as pp
from scopeline.core.params import StageParams
from scopeline import executor
from scopeline.errors import ScopelineError

__all__ = [
    "MotionError",
    "RegistrationParams",
    "MotionParams",
    "MotionResult",
    "PRESETS",
    "Filter",
    "taper",
    "register",
    "peak_to_sidelobe",
    "doubtful_shifts",
    "shift_frame",
    "build_template",
    "lens_window",
    "patch_boxes",
    "SummaryStats",
    "correct_motion",
]


class MotionError(ScopelineError, ValueError):
    """Motion correction cannot run on this input; the message says why."""


class RegistrationParams(BaseModel):
    """Registration parameters (pixels are after cropping and downsampling)."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["rigid", "piecewise"] = Field("rigid", description="Rigid translation, or piecewise-rigid patches.")
    max_shift: float = Field(20.0, gt=0, le=200, description="Largest translation searched, pixels.")
    upsample: int = Field(20, ge=1, le=100, description="Sub-pixel precision: 1 / upsample pixel.")
    filter_low: float = Field(1.0, ge=0, le=10, description="Band pass of the filtered copy: small Gaussian sigma, pixels.")
    filter_high: float = Field(4.0, gt=0, le=100, description="Band pass: large Gaussian sigma, pixels (about a cell "
                               "radius); structure larger than this is ignored.")
    template_frames: int = Field(200, ge=10, le=5000, description="Frames from the start used to build the template.")
    template_iterations: int = Field(3, ge=1, le=10, description="Register-and-project iterations for the template.")
    template_stat: Literal["mean", "max"] = Field("mean", description="Projection of registered frames that forms "
                                                  "the template (a max projection loses dark texture such as vessels).")
    patch_grid: tuple[int, int] = Field((4, 4), description="Piecewise: patches per (rows, columns).")
    max_deviation: float = Field(4.0, gt=0, le=50, description="Piecewise: largest patch shift away from the rigid "
                                 "shift, pixels.")
    border: Literal["zero", "nan", "reflect"] = Field("zero", description="Values moved in at the borders.")
    min_confidence: float = Field(0.5, ge=0, le=1, description="A frame whose registration peak stands out less than "
                                  "this fraction of its block's median (peak-to-sidelobe ratio of its correlation with "
                                  "the template) is in doubt, and so is a block whose median is below this fraction of "
                                  "the movie's: frames without the template's texture score 3-4, clear frames of "
                                  "simulated and real movies 9-27 (lower in small frames).")
    max_jump: float = Field(3.0, gt=0, le=100, description="A frame whose shift is farther than this (pixels, either "
                            "axis) from the running median of its clear neighbours, and whose peak stands out less "
                            "than its block's median, is in doubt too.")
    neighbours: int = Field(5, ge=1, le=100, description="Frames on each side whose shifts make a frame's expected shift.")
    fallback_radius: float = Field(2.0, gt=0, le=50, description="A frame in doubt is registered again within this "
                                   "many pixels of its expected shift (interpolated from confident frames); when its "
                                   "peak is not inside that window, the expected shift is used.")

    @model_validator(mode="after")
    def _check(self) -> "RegistrationParams":
        if self.filter_low >= self.filter_high:
            raise ValueError(f"filter_low {self.filter_low} must be below filter_high {self.filter_high}")
        if not (1 <= self.patch_grid[0] <= 16 and 1 <= self.patch_grid[1] <= 16):
            raise ValueError(f"patch_grid {self.patch_grid}: 1 to 16 patches per side")
        return self


class MotionParams(StageParams):
    """One motion-correction parameter set: preprocessing, registration and output storage."""

    preprocess: pp.PreprocessParams = Field(default_factory=pp.PreprocessParams)
    registration: RegistrationParams = Field(default_factory=RegistrationParams)
    block_frames: int = Field(100, ge=10, le=2000, description="Output frames processed at once by a worker "
                              "(memory ~ (temporal_downsample + 3) x block_frames x height x width bytes per worker "
                              "for 8-bit movies).")
    chunk_frames: int = Field(100, ge=1, le=2000, description="Frames per chunk of the output Zarr array.")
    chunk_tile: int = Field(128, ge=16, le=4096, description="Rows of a chunk of the output Zarr array (chunks span "
                            "the frame's width: a strip reads 2x faster than square tiles, and every reader reads "
                            "whole frames).")
    glow_samples: int = Field(500, ge=0, le=100000, description="Frames, in evenly spaced blocks (plus the "
                              "template's), whose per-pixel minimum is the glow removed (0: every frame, one more "
                              "pass over the movie).")
    store_dtype: Literal["float16", "float32"] = Field(
        "float16", description="Output pixel type. float16 keeps 11 significant bits: an error below 0.05 "
        "intensity units for values under 100, an order of magnitude under 8-bit quantization, at half the size.")

    @model_validator(mode="after")
    def _check(self) -> "MotionParams":
        if self.block_frames % self.chunk_frames:
            raise ValueError(f"block_frames {self.block_frames} must be a multiple of chunk_frames {self.chunk_frames}")
        return self



#: Shipped parameter sets. "default": the defaults, with which the accuracy of initialization and
#: CNMF was measured (5-pixel median, 10-pixel top-hat; benchmarks/cnmf.py), the CLI's default for
#: the whole chain; "minian" follows Minian's demo preprocessing (median denoising with a 7-pixel
#: window, top-hat background removal with a 15-pixel disk: more background is left for CNMF, which
#: then finds more units that are not cells); "fast" trades a little precision for speed (3-pixel
#: median, 10-pixel top-hat, 1/10 pixel, smaller template, larger blocks).
PRESETS: dict[str, MotionParams] = {
    "default": MotionParams(),
    "minian": MotionParams(
        preprocess=pp.PreprocessParams(remove_glow=True, glow_sigma=0, denoise="median", denoise_window=7,
                                       background="tophat", background_radius=15),
        registration=RegistrationParams(upsample=20),
    ),
    "fast": MotionParams(
        preprocess=pp.PreprocessParams(denoise="median", denoise_window=3, background="tophat", background_radius=10),
        registration=RegistrationParams(upsample=10, template_frames=100, template_iterations=2),
        block_frames=200,
    ),
}


# ----------------------------------------------------------------------------- registration


_TAPERS: dict = {}


def taper(shape: tuple[int, int], width: int) -> np.ndarray:
    """2-D Tukey window: 1 inside, a cosine ramp of ``width`` pixels to 0 at the borders (cached).

    Registration multiplies band-passed images by it before the FFT: otherwise the frame border (and
    the FFT's wrap-around) is a feature that never moves and pulls small shifts towards zero.
    """
    key = (shape, width)
    if key not in _TAPERS:
        def ramp(n: int) -> np.ndarray:
            w = np.ones(n, np.float32)
            k = min(width, n // 4)
            if k > 0:
                edge = 0.5 * (1 - np.cos(np.pi * (np.arange(k) + 0.5) / k))
                w[:k], w[n - k:] = edge, edge[::-1]
            return w
        _TAPERS[key] = np.outer(ramp(shape[0]), ramp(shape[1])).astype(np.float32)
    return _TAPERS[key]


#: Relative weight below which the cross-power spectrum's high frequencies are dropped (see :class:`Filter`).
CROP_WEIGHT = 1e-2


class Filter:
    """The filtered copy's spectrum: high pass, border taper, real FFT, Gaussian low pass, band kept.

    High pass: the frame minus two passes of a box filter of width ``2 round(1.22 high) + 1``
    (variance close to a Gaussian of sigma ``high``; O(1) per pixel). Low pass: a Gaussian of sigma
    ``low`` applied as a product in the Fourier domain. The taper (:func:`taper`) goes between them.

    Only the band the low pass leaves is kept: the cross-power spectrum of two low-passed images
    weighs frequency ``f`` (cycles/pixel) by ``exp(-4 pi^2 low^2 f^2)``, below :data:`CROP_WEIGHT`
    beyond ``f_c = sqrt(ln(1 / CROP_WEIGHT)) / (2 pi low)`` (0.34 for ``low`` = 1 px), so frequencies
    up to ``f_c`` are kept, laid out as the spectrum of a smaller grid (``grid``, padded with zeros
    to a fast FFT size). The cross-correlation computed on that grid samples the full one every
    ``height / grid[0]`` pixels (1.4 px for ``low`` = 1 px); :func:`register` refines its peak
    from the same frequencies. With ``low`` = 0 nothing is dropped.

    Parameters
    ----------
    shape : (int, int)
        Frame (or patch) size, pixels.
    low, high : float
        Gaussian sigmas of the band, pixels.
    window : numpy.ndarray, optional
        float32 (height, width) in [0, 1], multiplied into the taper: :func:`lens_window`, so the lens
        edge (fixed to the optics, it never moves) and the dark outside it play no part.

    Attributes
    ----------
    shape : (int, int)
        The frame size.
    grid : (int, int)
        Size of the (coarse) cross-correlation grid; ``shape`` when nothing is dropped.
    ky, kx : numpy.ndarray
        float32 (grid[0],) and (grid[1] // 2 + 1,): the frequency (in cycles per frame) of each row
        and column of :meth:`spectrum` (0 on padding).
    kx_weight : numpy.ndarray
        float32 (grid[1] // 2 + 1,): how many times each column counts in a real inverse DFT (2 for
        the columns whose conjugates the real FFT leaves out, 1 for 0 and the Nyquist column, 0 on
        padding).
    """

    def __init__(self, shape: tuple[int, int], low: float, high: float, window: Optional[np.ndarray] = None) -> None:
        h, w = self.shape = tuple(shape)
        self.box = 2 * int(round(1.22 * high)) + 1
        self.win = taper(shape, int(math.ceil(2 * high)))
        if window is not None:
            self.win = (self.win * window).astype(np.float32)
        f_c = 0.5 if low <= 0 else math.sqrt(math.log(1 / CROP_WEIGHT)) / (2 * math.pi * low)
        my, mx = int(math.ceil(f_c * h)), int(math.ceil(f_c * w))
        if 2 * my + 1 < h and 2 * mx + 1 < w:
            gy, gx = sfft.next_fast_len(2 * my + 1), sfft.next_fast_len(2 * mx + 1, real=True)
            self.grid = (gy, gx)
            self._rows = np.r_[0:my + 1, h - my:h]  # kept rows of the full spectrum ...
            self._at = np.r_[0:my + 1, gy - my:gy]  # ... and where they go
            self._cols = mx + 1
            self.ky = np.zeros(gy, np.float32)
            self.ky[self._at] = np.r_[0:my + 1, -my:0]
            self.kx = np.zeros(gx // 2 + 1, np.float32)
            self.kx[:mx + 1] = np.arange(mx + 1)
            self.kx_weight = np.zeros(gx // 2 + 1, np.float32)
            self.kx_weight[:mx + 1] = 2.0
        else:
            self.grid, self._rows = (h, w), None
            self.ky = (sfft.fftfreq(h) * h).astype(np.float32)
            self.kx = np.arange(w // 2 + 1, dtype=np.float32)
            self.kx_weight = np.full(w // 2 + 1, 2.0, np.float32)
            if w % 2 == 0:
                self.kx_weight[-1] = 1.0
        self.kx_weight[0] = 1.0
        fy, fx = (self.ky / h)[:, None], (self.kx / w)[None, :]
        self.lowpass = np.exp(-2 * np.pi**2 * low**2 * (fy**2 + fx**2)).astype(np.float32)

    def highpass(self, frame: np.ndarray) -> np.ndarray:
        """float32 frame minus its twice box-filtered version.

        An 8-bit frame is box-filtered in 8 bits (OpenCV's SIMD path, 0.31 instead of 0.86 ms per
        512 x 512 frame): the low-passed copy is rounded to whole units twice, an error of 0.29 units
        (sd), as large as the 8-bit rounding the frame itself went through and far below its noise."""
        k = (self.box, self.box)
        if frame.dtype == np.uint8:
            low = cv2.blur(cv2.blur(frame, k, borderType=cv2.BORDER_REFLECT), k, borderType=cv2.BORDER_REFLECT)
            return cv2.subtract(frame, low, dtype=cv2.CV_32F)
        f = np.asarray(frame, np.float32)
        return f - cv2.blur(cv2.blur(f, k, borderType=cv2.BORDER_REFLECT), k, borderType=cv2.BORDER_REFLECT)

    def spectrum(self, highpassed: np.ndarray) -> np.ndarray:
        """complex64 (grid[0], grid[1] // 2 + 1): real FFT of the tapered, high-passed image, low-passed,
        the band kept."""
        full = sfft.rfft2(highpassed * self.win)
        if self._rows is None:
            return (full * self.lowpass).astype(np.complex64)
        out = np.zeros(self.lowpass.shape, np.complex64)
        out[self._at, : self._cols] = full[self._rows, : self._cols]
        out *= self.lowpass
        return out


def _upsampled_dft(spectrum: np.ndarray, filt: Filter, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Real inverse DFT of a :meth:`Filter.spectrum`-laid-out spectrum at fractional positions
    (``ys`` x ``xs``, pixels of the full frame), by two matrix products (Guizar-Sicairos et al. 2008)."""
    h, w = filt.shape
    ey = np.exp((2j * np.pi / h) * np.outer(ys, filt.ky)).astype(np.complex64)
    ex = (np.exp((2j * np.pi / w) * np.outer(filt.kx, xs)) * filt.kx_weight[:, None]).astype(np.complex64)
    return (ey @ spectrum @ ex).real


def _peak(spectrum: np.ndarray, filt: Filter, y: float, x: float, step: float, half: float) -> tuple[float, float, float]:
    """Position of the largest value of the cross-correlation on a grid of ``step`` pixels within
    ``half`` pixels of (y, x), and that value."""
    offs = np.arange(-round(half / step), round(half / step) + 1) * step
    local = _upsampled_dft(spectrum, filt, y + offs, x + offs)
    jy, jx = np.unravel_index(int(np.argmax(local)), local.shape)
    return y + offs[jy], x + offs[jx], float(local[jy, jx])


def register(frame_spec: np.ndarray, template_spec_conj: np.ndarray, filt: Filter, max_shift: float,
             upsample: int, center: tuple[float, float] = (0.0, 0.0), score: bool = False):
    """Sub-pixel shift of a frame relative to a template, from their spectra.

    The peak of the cross-correlation is found on the coarse grid of the kept band
    (:attr:`Filter.grid`), within ``max_shift``; then the correlation is evaluated around it by the
    matrix-multiply DFT (Guizar-Sicairos, Thurman & Fienup 2008, Opt. Lett. 33:156): at whole pixels
    within 2 px when ``upsample`` is 1 (none needed when no band was dropped), else every 1/4 pixel
    within 1.25 px and then every ``1 / upsample`` pixel within 1/4 pixel of the best (one stage when
    ``upsample`` <= 4). Cost per 512 x 512 frame: a 360 x 360 inverse FFT and about 1.3 million
    complex products (the single-stage DFT over the full spectrum: 3.9 million).

    Parameters
    ----------
    frame_spec : numpy.ndarray
        complex64 (grid[0], grid[1] // 2 + 1), :meth:`Filter.spectrum` of the frame.
    template_spec_conj : numpy.ndarray
        complex64, same shape: complex conjugate of the template's spectrum (same filter).
    filt : Filter
        The filter that made both spectra (it knows the frame size and the band kept).
    max_shift : float
        Search radius around ``center``, pixels; clamped to under half the image so the search window
        cannot wrap.
    upsample : int
        Sub-pixel refinement factor (precision 1 / upsample pixel); 1 for whole-pixel shifts.
    center : (float, float)
        Where the search window is centred (dy, dx), pixels: 0, or an expected shift (a frame's
        neighbours' shift when its own peak is in doubt).
    score : bool
        Also return how clearly the peak stands out (:func:`peak_to_sidelobe`).

    Returns
    -------
    (float, float) or (float, float, float)
        (dy, dx) in pixels: the frame's content sits at ``template position + (dy, dx)``; with
        ``score``, also the peak-to-sidelobe ratio of the correlation (coarse grid, search window).
    """
    spectrum = frame_spec * template_spec_conj
    gy, gx = filt.grid
    h, w = filt.shape
    corr = sfft.irfft2(spectrum, s=(gy, gx))
    r = min(max_shift, (h - 1) // 2, (w - 1) // 2)
    cy, cx = int(round(center[0] * gy / h)), int(round(center[1] * gx / w))
    iys = cy + np.arange(-int(r * gy / h), int(r * gy / h) + 1)
    ixs = cx + np.arange(-int(r * gx / w), int(r * gx / w) + 1)
    window = corr[np.ix_(iys % gy, ixs % gx)]
    iy, ix = np.unravel_index(int(np.argmax(window)), window.shape)
    dy, dx = iys[iy] * h / gy, ixs[ix] * w / gx  # within about half a coarse step of the peak
    if upsample == 1:
        dy, dx = float(round(dy)), float(round(dx))
        if (gy, gx) == (h, w):
            peak = (dy, dx, float(window[iy, ix]) * gy * gx)
        else:
            peak = _peak(spectrum, filt, dy, dx, 1.0, 2.0)
    elif upsample <= 4:
        peak = _peak(spectrum, filt, dy, dx, 1.0 / upsample, 1.25)
    else:
        dy, dx, _ = _peak(spectrum, filt, dy, dx, 0.25, 1.25)
        peak = _peak(spectrum, filt, dy, dx, 1.0 / upsample, 0.25)
    if not score:
        return peak[0], peak[1]
    return peak[0], peak[1], peak_to_sidelobe(window, iy, ix)


def peak_to_sidelobe(window: np.ndarray, iy: int, ix: int, exclude: int = 2) -> float:
    """Peak-to-sidelobe ratio of a cross-correlation: (peak - median of the rest) / robust standard
    deviation (1.4826 MAD) of the rest, the rest being the search window outside ``exclude`` grid
    cells of the peak (Bolme et al. 2010, CVPR). A frame without the template's texture (noise only)
    has no peak that stands out: about 3-4; registered frames of simulated and real movies 9-27.

    Parameters
    ----------
    window : numpy.ndarray
        float (rows, columns): the correlation over the search window.
    iy, ix : int
        The peak's position in it.
    exclude : int
        Cells around the peak left out of the side lobe.

    Returns
    -------
    float
        0 when the side lobe is flat or too small to judge.
    """
    mask = np.ones(window.shape, bool)
    mask[max(0, iy - exclude): iy + exclude + 1, max(0, ix - exclude): ix + exclude + 1] = False
    rest = window[mask]
    if rest.size < 10:
        return 0.0
    med = _median(rest)
    sd = 1.4826 * _median(np.abs(rest - med))
    return float((window[iy, ix] - med) / sd) if sd > 0 else 0.0


def _median(x: np.ndarray) -> float:
    """Median of a small 1-D array, with np.partition (np.median's checks cost more than the work on
    the ~800 values of a search window, twice for every frame)."""
    n = len(x)
    part = np.partition(x, [(n - 1) // 2, n // 2])
    return 0.5 * (float(part[(n - 1) // 2]) + float(part[n // 2]))


_BORDERS = {"zero": (cv2.BORDER_CONSTANT, 0.0), "nan": (cv2.BORDER_CONSTANT, float("nan")),
            "reflect": (cv2.BORDER_REFLECT, 0.0)}


def shift_frame(frame: np.ndarray, dy: float, dx: float, border: str = "zero") -> np.ndarray:
    """Move a frame by (-dy, -dx) pixels with bilinear interpolation, undoing a shift of (dy, dx).

    Parameters
    ----------
    frame : numpy.ndarray
        float32 (height, width).
    dy, dx : float
        The frame's shift, pixels (see the module's shift convention).
    border : {"zero", "nan", "reflect"}
        Values moved in at the borders.

    Returns
    -------
    numpy.ndarray
        float32 (height, width).
    """
    mode, value = _BORDERS[border]
    m = np.float32([[1, 0, -dx], [0, 1, -dy]])
    return cv2.warpAffine(frame, m, (frame.shape[1], frame.shape[0]), flags=cv2.INTER_LINEAR,
                          borderMode=mode, borderValue=value)


def _project(frames, stat: str) -> np.ndarray:
    """Mean or max (``stat``) of an iterable of float32 (height, width) frames, accumulated frame by
    frame (float64 sum) so the frames need not be stacked."""
    acc, n = None, 0
    for f in frames:
        if acc is None:
            acc = f.astype(np.float64) if stat == "mean" else f.copy()
        elif stat == "mean":
            cv2.accumulate(f, acc)
        else:
            cv2.max(acc, f, dst=acc)
        n += 1
    return (acc / n if stat == "mean" else acc).astype(np.float32)


def build_template(highpassed, p: RegistrationParams, map_=map, window: Optional[np.ndarray] = None,
                   return_scores: bool = False):
    """Template from the first frames of a movie.

    The frames are registered to their mean, then to the projection (``p.template_stat``) of the
    registered frames, ``p.template_iterations`` times; all but the last iteration use whole pixels.
    Projections are accumulated as the registered frames come (memory: the frames and their spectra).

    Parameters
    ----------
    highpassed : numpy.ndarray or sequence of numpy.ndarray
        float32 (frames, height, width), or a sequence of float32 (height, width) frames, through
        :meth:`Filter.highpass`.
    p : RegistrationParams
    map_ : callable
        ``map``-like function applying the per-frame steps (e.g. a thread pool's ``map``).
    window : numpy.ndarray, optional
        float32 (height, width): :func:`lens_window`, applied to each frame before it is moved into the
        template (so the template holds nothing of the lens edge).
    return_scores : bool
        Also return each frame's correlation with the template in the last iteration.

    Returns
    -------
    numpy.ndarray or (numpy.ndarray, numpy.ndarray)
        float32 (height, width), the high-passed template; with ``return_scores``, float32 (frames,)
        correlation coefficients (see :func:`register`).
    """
    # windowed as they come: an iterator's frames (see _template) are freed one by one
    frames = [f * window for f in highpassed] if window is not None else list(highpassed)
    filt = Filter(frames[0].shape, p.filter_low, p.filter_high, window)
    specs = list(map_(filt.spectrum, frames))
    template = _project(frames, "mean")
    scores = np.zeros(len(frames), np.float32)
    for it in range(p.template_iterations):
        upsample = p.upsample if it == p.template_iterations - 1 else 1
        tconj = np.conj(filt.spectrum(template))

        def moved(i: int, tconj=tconj, upsample=upsample) -> np.ndarray:
            dy, dx, scores[i] = register(specs[i], tconj, filt, p.max_shift, upsample, score=True)
            return shift_frame(frames[i], dy, dx, "reflect")

        template = _project(map_(moved, range(len(frames))), p.template_stat)
    return (template, scores) if return_scores else template


def lens_window(lens: np.ndarray, high: float) -> Optional[np.ndarray]:
    """float32 (height, width) in [0, 1]: the registration window of a lens mask, 0 outside the lens and
    within half a high-pass box of its edge (where the static edge dominates the filtered copy), rising
    to 1 over about ``2 high`` pixels; None for a mask without a lens (all True).

    Parameters
    ----------
    lens : numpy.ndarray
        bool (height, width): :func:`scopeline.core.fov.lens_mask`.
    high : float
        The filtered copy's high-pass sigma (``RegistrationParams.filter_high``), pixels.
    """
    lens = np.asarray(lens, bool)
    if lens.all():
        return None
    box = 2 * int(round(1.22 * high)) + 1
    inner = cv2.erode(lens.astype(np.uint8), np.ones((box, box), np.uint8), borderType=cv2.BORDER_REPLICATE)
    ramp = max(1, int(math.ceil(2 * high)))
    return np.clip(cv2.GaussianBlur(inner.astype(np.float32), (0, 0), ramp / 2.0), 0, 1).astype(np.float32)


def patch_boxes(height: int, width: int, grid: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """Patches of the piecewise-rigid mode.

    Parameters
    ----------
    height, width : int
        Frame size, pixels.
    grid : (int, int)
        Patches per (rows, columns); patch centres are evenly spaced, each patch spans twice the
        spacing (half-overlapping neighbours), clipped to the frame.

    Returns
    -------
    list of (int, int, int, int)
        (y0, y1, x0, x1) per patch, row-major, pixels, end exclusive.
    """
    gy, gx = grid
    boxes = []
    for i in range(gy):
        for j in range(gx):
            cy, cx = (i + 0.5) * height / gy, (j + 0.5) * width / gx
            hy, hx = height / gy, width / gx
            y0, y1 = max(0, int(cy - hy)), min(height, int(math.ceil(cy + hy)))
            x0, x1 = max(0, int(cx - hx)), min(width, int(math.ceil(cx + hx)))
            boxes.append((y0, y1, x0, x1))
    return boxes


class _Registrar:
    """Registers frames to a fixed template (rigid, then optionally per patch)."""

    def __init__(self, template: np.ndarray, p: RegistrationParams, window: Optional[np.ndarray] = None) -> None:
        self.p = p
        self.shape = template.shape
        self.filter = Filter(template.shape, p.filter_low, p.filter_high, window)
        self.tconj = np.conj(self.filter.spectrum(template))
        self.boxes = patch_boxes(*template.shape, p.patch_grid) if p.mode == "piecewise" else []
        self.grid = np.mgrid[0:template.shape[0], 0:template.shape[1]].astype(np.float32) if self.boxes else None
        self.patch_filters = [Filter((y1 - y0, x1 - x0), p.filter_low, p.filter_high,
                                     None if window is None else window[y0:y1, x0:x1])
                              for y0, y1, x0, x1 in self.boxes]
        self.patch_tconj = [np.conj(f.spectrum(template[y0:y1, x0:x1]))
                            for f, (y0, y1, x0, x1) in zip(self.patch_filters, self.boxes)]

    def rigid(self, highpassed: np.ndarray, center: tuple[float, float] = (0.0, 0.0),
              radius: Optional[float] = None) -> tuple[float, float, float]:
        """(dy, dx, score) of a high-passed frame (see :func:`register`), searched within ``radius``
        (default ``max_shift``) of ``center``."""
        return register(self.filter.spectrum(highpassed), self.tconj, self.filter,
                        self.p.max_shift if radius is None else radius, self.p.upsample, center=center, score=True)

    def patches(self, highpassed: np.ndarray, rigid: tuple[float, float]) -> np.ndarray:
        """float32 (n_patches, 2): total shift of each patch (rigid + residual)."""
        moved = shift_frame(highpassed, *rigid, border="reflect")
        out = np.empty((len(self.boxes), 2), np.float32)
        for k, ((y0, y1, x0, x1), filt, tconj) in enumerate(zip(self.boxes, self.patch_filters, self.patch_tconj)):
            r = register(filt.spectrum(moved[y0:y1, x0:x1]), tconj, filt, self.p.max_deviation, self.p.upsample)
            out[k] = (rigid[0] + r[0], rigid[1] + r[1])
        return out

    def apply_field(self, frame: np.ndarray, patch_shifts: np.ndarray) -> np.ndarray:
        """Undo a displacement field interpolated (bilinear) from the patch shifts."""
        gy, gx = self.p.patch_grid
        h, w = self.shape
        field = patch_shifts.reshape(gy, gx, 2)
        dy = cv2.resize(np.ascontiguousarray(field[..., 0]), (w, h), interpolation=cv2.INTER_LINEAR)
        dx = cv2.resize(np.ascontiguousarray(field[..., 1]), (w, h), interpolation=cv2.INTER_LINEAR)
        yy, xx = self.grid
        mode, value = _BORDERS[self.p.border]
        return cv2.remap(frame, xx + dx, yy + dy, cv2.INTER_LINEAR, borderMode=mode, borderValue=value)


# ------------------------------------------------------------------------------ summaries


@numba.njit(cache=True, nogil=True)
def _accumulate(x, prev, paired, total, sumsq, diffsq, top, c01, c10, c11, c1m1):  # pragma: no cover - compiled
    """Add one frame to the running sums of :class:`SummaryStats`, row by row (the row and the next stay
    in cache for every statistic): sum, sum of squares, max, squared difference to ``prev`` (when
    ``paired``), and the products with the right, lower, lower-right and lower-left neighbours."""
    h, w = x.shape
    for i in range(h):
        for j in range(w):
            v = x[i, j]
            total[i, j] += v
            sumsq[i, j] += v * v
            if v > top[i, j]:
                top[i, j] = v
        if paired:
            for j in range(w):
                d = x[i, j] - prev[i, j]
                diffsq[i, j] += d * d
        for j in range(w - 1):
            c01[i, j] += x[i, j] * x[i, j + 1]
        if i + 1 < h:
            for j in range(w):
                c10[i, j] += x[i, j] * x[i + 1, j]
            for j in range(w - 1):
                c11[i, j] += x[i, j] * x[i + 1, j + 1]
            for j in range(1, w):
                c1m1[i, j] += x[i, j] * x[i + 1, j - 1]


class SummaryStats:
    """Streaming per-pixel statistics of a movie, added frame by frame.

    Gives the mean, max and standard-deviation images; the local correlation image (each pixel's mean
    Pearson correlation over time with its 8 neighbours; Smith & Hausser 2010, as used by CNMF-E); and
    the peak-to-noise image ``(max - mean) / noise`` with noise = RMS of frame-to-frame differences
    / sqrt(2), over consecutive pairs within blocks (pairs across block edges, or across dropped
    frames, are not counted). NaN pixels (border mode ``"nan"``) count as 0. Accumulation is one compiled
    pass per frame (:func:`_accumulate`); a worker accumulates its block (up to 2,000 frames) in float32,
    about 6 significant digits, and :meth:`merge` adds blocks in float64.

    Parameters
    ----------
    height, width : int
        Frame size, pixels.
    dtype : numpy dtype
        Accumulator type: float32 for a block, float64 for a whole movie.
    """

    _NEIGHBOURS = ((0, 1), (1, 0), (1, 1), (1, -1))

    def __init__(self, height: int, width: int, dtype=np.float64) -> None:
        z = lambda: np.zeros((height, width), dtype)  # noqa: E731
        self.n = 0
        self.n_pairs = 0
        self.sum, self.sumsq, self.diffsq = z(), z(), z()
        self.max = np.full((height, width), -np.inf, np.float32)
        self.cross = {d: z() for d in self._NEIGHBOURS}
        self._prev = None

    @staticmethod
    def _views(a: np.ndarray, d: tuple[int, int]):
        """(a[p], a[p + d]) over the pixels p whose neighbour p + d is inside; last two axes."""
        dy, dx = d
        h, w = a.shape[-2:]
        src = a[..., : h - dy, max(0, -dx): w - max(0, dx)]
        dst = a[..., dy:, max(0, dx): w - max(0, -dx) if dx < 0 else w]
        return src, dst

    def add_frame(self, x: np.ndarray) -> None:
        """Add the next frame: float32 (height, width), consecutive with the previous one (no NaN).

        One compiled pass over the frame (:func:`_accumulate`: each row of the frame is read once for
        every statistic, where separate SIMD passes read the frame nine times)."""
        x = np.ascontiguousarray(x, np.float32)
        prev = self._prev if self._prev is not None else x
        c = self.cross
        _accumulate(x, prev, self._prev is not None, self.sum, self.sumsq, self.diffsq, self.max,
                    c[(0, 1)], c[(1, 0)], c[(1, 1)], c[(1, -1)])
        self.n_pairs += self._prev is not None
        self.n += 1
        self._prev = x

    def gap(self) -> None:
        """The next frame does not follow the previous one (a frame left out between them)."""
        self._prev = None

    def merge(self, other: "SummaryStats") -> None:
        """Add another block's statistics (computed elsewhere, e.g. on a worker process)."""
        self.n += other.n
        self.n_pairs += other.n_pairs
        self.sum += other.sum
        self.sumsq += other.sumsq
        self.diffsq += other.diffsq
        np.maximum(self.max, other.max, out=self.max)
        for d in self._NEIGHBOURS:
            self.cross[d] += other.cross[d]

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_prev"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._prev = None

    def images(self) -> dict[str, np.ndarray]:
        """float32 (height, width) images: mean, max, std, correlation, pnr."""
        n = max(self.n, 1)
        mean = self.sum / n
        var = np.maximum(self.sumsq / n - mean**2, 0)
        std = np.sqrt(var)
        corr_sum = np.zeros_like(mean)
        count = np.zeros_like(mean)
        for d in self._NEIGHBOURS:
            (ma, mb), (sa, sb) = self._views(mean[None], d), self._views(std[None], d)
            xa, _ = self._views(self.cross[d][None], d)
            denom = sa[0] * sb[0]
            c = np.where(denom > 0, (xa[0] / n - ma[0] * mb[0]) / np.where(denom > 0, denom, 1), 0)
            a_view, b_view = self._views(corr_sum[None], d)
            a_view[0] += c
            b_view[0] += c
            ca, cb = self._views(count[None], d)
            ca[0] += 1
            cb[0] += 1
        noise = np.sqrt(self.diffsq / max(2 * self.n_pairs, 1))
        pnr = np.where(noise > 0, (self.max - mean) / np.where(noise > 0, noise, 1), 0)
        out = {"mean": mean, "max": self.max, "std": std, "correlation": corr_sum / np.maximum(count, 1), "pnr": pnr}
        return {k: np.nan_to_num(v).astype(np.float32) for k, v in out.items()}


# ------------------------------------------------------------------------------ the driver


@dataclass
class MotionResult:
    """Outcome of :func:`correct_motion`.

    Attributes
    ----------
    shifts : numpy.ndarray
        float32 (frames_out, 2), rigid (dy, dx) per output frame, pixels (after downsampling).
    confidence : numpy.ndarray
        float32 (frames_out,): how clearly each frame's registration peak stands out (peak-to-sidelobe
        ratio, :func:`peak_to_sidelobe`; under ``min_confidence``: in doubt).
    fallback : numpy.ndarray
        bool (frames_out,): frames whose own peak was in doubt (low confidence, or a jump away from
        their neighbours), registered again near the shift their neighbours give (see
        :class:`RegistrationParams`).
    template_confidence : float
        Median peak-to-sidelobe ratio of the template's frames (registered to a template they are part
        of: higher than other frames').
    frame_index : numpy.ndarray
        int64 (frames_out,), raw index of the first raw frame of each output frame.
    corrupted : dict
        raw frame index -> reason, for frames flagged as corrupted.
    dark_frames : numpy.ndarray
        int64: raw indices of the frames at the start darker than ``dark_fraction`` of the movie's
        median brightness (LED warm-up); kept, only flagged.
    brightness : numpy.ndarray
        float32 (frames_out,): mean of each raw (cropped, downsampled) frame, movie units.
    row_noise : numpy.ndarray
        float32 (frames_out,): standard deviation of the per-row offsets removed from each frame
        (line noise), movie units (0 with line-noise removal off).
    line_noise : dict
        ``sampled``, ``floor`` and ``pixel_noise``: line noise of the sampled frames, what pixel noise
        alone gives, and the pixel noise (:func:`scopeline.core.preprocess.difference_row_noise`, medians
        over every 10th pair); ``removed``: whether it was removed (``sampled`` above ``detect_ratio`` x
        ``floor`` and ``min_level`` x ``pixel_noise``); then
        ``before`` / ``after``: line noise of every block's raw frames and of the corrected ones,
        measured the same model-free way, movie units (both 0 when not removed).
    lens : numpy.ndarray
        bool (height, width): the lens' field of view on the sensor (raw frame; all True when none).
    fov : numpy.ndarray
        bool (height, width): the field of view of the corrected movie: pixels that showed the inside of
        the lens in every frame (:func:`scopeline.core.fov.registered_fov`).
    fov_info : dict
        What :func:`scopeline.core.fov.lens_mask` found (``found``, levels, ``fraction``).
    defects : numpy.ndarray
        int8 (height, width): defective pixels found and repaired (1 hot, -1 dead, 0 good).
    mean_raw : numpy.ndarray
        float32 (height, width): mean of the sampled raw frames (defects repaired): what the lens was
        found in.
    template : numpy.ndarray
        float32 (height, width), high-passed template.
    glow : numpy.ndarray
        (height, width), the per-pixel minimum subtracted as glow (sampled blocks, corrupted and
        dropped-to-black frames left out).
    summary : dict
        float32 (height, width) images of the corrected movie: mean, max, std, correlation, pnr.
    patch_boxes : list
        Piecewise mode: (y0, y1, x0, x1) of each patch; empty for rigid.
    patch_shifts : numpy.ndarray or None
        Piecewise mode: float32 (frames_out, n_patches, 2), total shift of each patch.
    shape : tuple
        (frames_out, height, width) of the corrected movie.
    seconds : dict
        Wall time of each pass, s.
    """

    shifts: np.ndarray
    confidence: np.ndarray
    fallback: np.ndarray
    template_confidence: float
    frame_index: np.ndarray
    corrupted: dict
    dark_frames: np.ndarray
    brightness: np.ndarray
    row_noise: np.ndarray
    line_noise: dict
    lens: np.ndarray
    fov: np.ndarray
    fov_info: dict
    defects: np.ndarray
    mean_raw: np.ndarray
    template: np.ndarray
    glow: np.ndarray
    summary: dict
    patch_boxes: list
    patch_shifts: Optional[np.ndarray]
    shape: tuple
    seconds: dict


def _read(movie, a: int, b: int) -> np.ndarray:
    """Frames [a, b) of an array or dask array; a block within one dask chunk is returned as the chunk
    task made it (dask's compute would copy it into a new array: 26 MB a 100-frame 512 x 512 block)."""
    block = movie[a:b]
    if not hasattr(block, "compute"):
        return np.asarray(block)
    if block.npartitions == 1 and hasattr(block, "to_delayed"):
        (part,) = block.to_delayed(optimize_graph=True).ravel()
        return np.asarray(part.compute(scheduler="synchronous"))
    return np.asarray(block.compute(scheduler="synchronous"))


def _has_nan(raw: np.ndarray) -> bool:
    """Whether a block holds NaN (integer blocks cannot: ``np.isnan`` on 8 bits would cost 0.7 ms per
    512 x 512 frame for nothing)."""
    return raw.dtype.kind == "f" and bool(np.isnan(raw).any())


def _single_threaded(fn):
    """Run a block function with OpenCV and BLAS on one thread: blocks already run in parallel, and
    OpenBLAS threads busy-wait on the small products of the upsampled DFT (measured: two workers went
    from 1.1x to 1.8x the speed of one)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        cv2.setNumThreads(1)
        with threadpool_limits(1):
            return fn(*args, **kwargs)

    return wrapper


@dataclass
class _Loaded:
    """Frames of a block as the correction uses them, and what was found on the way."""

    frames: Optional[np.ndarray]  # (frames_out, h, w) downsampled, repaired, line noise removed
    corrupted: dict  # raw index -> reason
    brightness: np.ndarray  # float32 (frames_out,) mean of each raw frame (downsampled)
    row_noise: np.ndarray  # float32 (frames_out,) sd of the row offsets removed
    line_before: list  # difference_row_noise of every 10th pair, before / after line-noise removal
    line_after: list


@dataclass
class _Job:
    """Everything a worker needs for its blocks (sent to every worker before each pass)."""

    movie: object
    params: MotionParams
    n_used: int
    brightness: float = 0.0
    min_image: Optional[np.ndarray] = None
    repair: Optional[pp.DefectRepair] = None
    sampler: Optional[pp.RowSampler] = None
    line_level: float = 0.0  # the movie's line noise (or what pixel noise makes of row levels), movie units
    remove_rows: bool = False  # whether the movie has line noise to remove from every frame
    pixel_noise: float = 0.0  # the movie's pixel noise (frame differences' robust sd / sqrt 2), movie units
    mean_raw: Optional[np.ndarray] = None  # float32 (h, w) mean of the sampled (downsampled) raw frames
    black: float = 0.0  # the sensor's black level (the dark outside the lens; 0 without one)
    window: Optional[np.ndarray] = None
    template: Optional[np.ndarray] = None
    template_score: float = 0.0
    psr_reference: float = 0.0  # what a clear frame of this movie scores (median over sampled frames)
    keep: Optional[np.ndarray] = None
    out_pos: Optional[np.ndarray] = None
    out: object = None
    redo: Optional[dict] = None  # block start -> (output frames, expected shifts) to register again
    _registrar: object = None

    @property
    def t(self) -> int:
        return self.params.preprocess.temporal_downsample

    @property
    def block_raw(self) -> int:
        return self.params.block_frames * self.t

    @property
    def registrar(self) -> "_Registrar":
        if self._registrar is None:
            self._registrar = _Registrar(self.template, self.params.registration, self.window)
        return self._registrar

    def raw(self, a: int, b: int) -> np.ndarray:
        """Raw frames [a, b), cropped."""
        pre = self.params.preprocess
        return pp.crop_downsample(_read(self.movie, a, b), pre.model_copy(update={"spatial_downsample": 1,
                                                                                 "temporal_downsample": 1}))

    def downsample(self, raw: np.ndarray) -> np.ndarray:
        return pp.crop_downsample(raw, self.params.preprocess.model_copy(update={"crop": None}))

    def flags(self, raw: np.ndarray, offset: int) -> tuple[dict[int, str], np.ndarray]:
        """Corrupted frames of a raw block starting at frame ``offset`` (each frame's own score, its
        brightness against the movie's), and the frames' means (float, movie units)."""
        scores, means = pp.frame_scores(raw)
        return pp.flag_corrupted(scores, means, self.params.preprocess.corruption, self.brightness, offset,
                                 self.black), means

    def load_raw(self, a: int, b: int, raw: Optional[np.ndarray] = None) -> _Loaded:
        """Raw frames [a, b) cropped (``raw`` if already read), corrupted ones found and repaired (from up
        to 3 neighbours outside the block), downsampled, defective pixels repaired and line noise removed."""
        raw = self.raw(a, b) if raw is None else raw
        if _has_nan(raw):
            raise MotionError(f"frames {a}-{b - 1} hold NaN values")
        found, means = self.flags(raw, a)
        if found:
            ra, rb = max(0, a - 3), min(self.n_used, b + 3)
            if (min(found) < a + 3 and ra < a) or (max(found) >= b - 3 and rb > b):
                padded = np.concatenate([self.raw(ra, a) if ra < a else raw[:0], raw,
                                         self.raw(b, rb) if rb > b else raw[:0]])
                bad = np.zeros(len(padded), bool)
                bad[[i - ra for i in {**self.flags(padded, ra)[0], **found}]] = True
                raw = pp.repair(padded, bad)[a - ra: a - ra + (b - a)]
            else:
                bad = np.zeros(len(raw), bool)
                bad[[i - a for i in found]] = True
                raw = pp.repair(raw, bad)
        small = self.downsample(raw)
        if np.shares_memory(small, raw):  # the raw block may be kept for a later pass: leave it as read
            small = small.copy()
        n = len(small)
        brightness = means[: n * self.t].reshape(n, self.t).mean(axis=1).astype(np.float32)
        if self.repair is not None:
            self.repair(small)
        gain = np.ones(n, np.float32)  # what light normalization multiplied each frame's intensity by
        if self.params.preprocess.normalize_light and self.brightness > 0:
            # the light of repaired frames is their neighbours'
            light = np.array([cv2.mean(f)[0] for f in small]) if found else brightness
            level = pp.light_levels(light, self.brightness, self.params.preprocess.dark_fraction, a == 0)
            gain = 1 / pp.normalize_light(small, light, level, self.black)  # means do not change with downsampling
        row_noise = np.zeros(n, np.float32)
        before, after = [], []
        line = self.params.preprocess.line_noise
        if self.sampler is not None and line.enabled:
            # every movie's frames are checked for bursts of stripes; the offsets are subtracted from all
            # frames only when the movie has line noise throughout
            pairs = range(1, n, 10)
            if self.remove_rows:
                offsets = pp.row_offsets(small, self.sampler, line, self.mean_raw)
                rows = self.sampler.rows
            else:  # only a check for striped frames: the rows' means do
                offsets = pp.striped_rows(small, self.mean_raw, line.frames)
                rows = np.arange(small.shape[1])
            if len(rows):
                row_noise = offsets[:, rows].std(axis=1).astype(np.float32)
            if self.remove_rows:
                before = [pp.difference_row_noise(small[j], small[j - 1], self.sampler) for j in pairs]
                pp.remove_line_noise(small, offsets)
            limit = max(line.striped_ratio * self.line_level, line.striped_noise * self.pixel_noise)
            # in the frame's own light: normalizing a dim frame multiplied its line noise too (a background
            # swing to a third of the light made 600 frames 'striped' at 2-4x the limit)
            striped = row_noise > limit * gain if limit > 0 else np.zeros(n, bool)
            if striped.any():
                small = pp.repair(small, striped)
                found = {**found, **{a + j * self.t: "striped" for j in np.flatnonzero(striped)}}
            if self.remove_rows:
                after = [pp.difference_row_noise(small[j], small[j - 1], self.sampler) for j in pairs]
            else:
                row_noise[:] = 0  # nothing was removed
        return _Loaded(small, dict(sorted(found.items())), brightness, row_noise, before, after)


def _store(frame: np.ndarray, row: np.ndarray) -> None:
    """Write a float32 frame into a row of the output block (float16 through OpenCV's SIMD conversion,
    about 7x faster than numpy's and identical; numpy's where OpenCV lacks it)."""
    if row.dtype == np.float16:
        try:
            cv2.multiply(frame, 1.0, dst=row, dtype=cv2.CV_16F)
            return
        except cv2.error:
            pass
    row[...] = frame


class _Sample(NamedTuple):
    """What the first pass learns from one sampled block."""

    minimum: Optional[np.ndarray]  # per-pixel minimum of the good (downsampled) frames; None if none
    means: np.ndarray  # mean of every raw frame
    lo: float  # value range of the raw block
    hi: float
    has_nan: bool
    raw: Optional[np.ndarray]  # the raw block (cropped), kept for the template and the correction
    total: Optional[np.ndarray]  # float64 sum of the good downsampled frames (the mean image)
    count: int
    line: list  # (line noise, what pixel noise alone gives, pixel noise) of every 10th pair of downsampled frames
    frames: int  # raw frames read (for progress)


@_single_threaded
def _glow_block(job: _Job, a: int) -> _Sample:
    """Minimum and sum over the good frames of a block, frame means, value range, NaN, and the raw
    block (cropped; kept for the template and the correction, which then do not decode it again).

    Corrupted frames are left out of the minimum and the sum; dropped-to-black ones only once
    ``job.brightness`` (the movie's) is known: :func:`correct_motion` re-runs the blocks with dark
    frames then.
    """
    b = min(a + job.block_raw, job.n_used)
    raw = job.raw(a, b)
    found, means = job.flags(raw, a)
    bad = np.zeros(len(raw), bool)
    bad[[i - a for i in found]] = True
    small = job.downsample(raw)
    good = ~bad.reshape(len(small), job.t).any(axis=1)
    minimum = small[good].min(axis=0) if good.any() else None  # an all-bad block says nothing
    total = small[good].sum(axis=0, dtype=np.float64) if good.any() else None
    line = []
    if job.params.preprocess.line_noise.enabled:
        whole = _whole_frame_sampler(small.shape[1:], job.params.preprocess.line_noise.samples)
        line = [pp.difference_row_noise(small[j], small[j - 1], whole, with_floor=True)
                for j in range(1, len(small), 10) if good[j] and good[j - 1]]
    return _Sample(minimum, means, float(raw.min()), float(raw.max()), _has_nan(raw), raw, total, int(good.sum()),
                   line, b - a)


@functools.lru_cache(maxsize=4)
def _whole_frame_sampler(shape: tuple[int, int], samples: int) -> "pp.RowSampler":
    """A row sampler over the whole frame (built once per frame size: a loop over its rows); used with
    no reference image, so sharing it between threads is safe."""
    return pp.RowSampler(np.ones(shape, bool), samples)


@_single_threaded
def _scan_block(job: _Job, a: int) -> tuple:
    b = min(a + job.block_raw, job.n_used)
    return job.flags(job.raw(a, b), a)[0], b - a


def _running_median(values: np.ndarray, ok: np.ndarray, k: int) -> np.ndarray:
    """float64 (n, 2): per frame, the median of the ``ok`` frames' values within ``k`` frames (NaN where
    there is none)."""
    n = len(values)
    out = np.full((n, 2), np.nan)
    idx = np.flatnonzero(ok)
    if len(idx) == 0:
        return out
    for i in range(n):
        lo, hi = np.searchsorted(idx, [i - k, i + k + 1])
        near = idx[lo:hi]
        near = near[near != i]
        if len(near):
            out[i] = np.median(values[near], axis=0)
    return out


def doubtful_shifts(shifts: np.ndarray, scores: np.ndarray, p: RegistrationParams,
                    reference: Optional[float] = None) -> tuple[np.ndarray, np.ndarray]:
    """Which frames' shifts are in doubt, and what their clear neighbours say instead.

    A frame is in doubt when its registration peak stands out less than ``p.min_confidence`` x
    ``reference`` (peak-to-sidelobe ratios; dim, striped or textureless frames), or when its shift is
    more than ``p.max_jump`` pixels (either axis) from the median of its clear neighbours within
    ``p.neighbours`` frames while its peak stands out less than the median clear frame's (a clear
    frame that moved fast is believed).

    Parameters
    ----------
    shifts : numpy.ndarray
        float (frames, 2): consecutive frames' (dy, dx), pixels.
    scores : numpy.ndarray
        float (frames,): their peak-to-sidelobe ratios (:func:`register`).
    p : RegistrationParams
    reference : float, optional
        What a clear frame scores; default the median of ``scores``.

    Returns
    -------
    doubt : numpy.ndarray
        bool (frames,).
    expected : numpy.ndarray
        float64 (frames, 2): for frames in doubt, the shift interpolated (linearly, in frame order)
        between the nearest frames not in doubt (the nearest one beyond the ends); NaN where no frame
        is clear; for clear frames their own shift.
    """
    shifts = np.asarray(shifts, np.float64)
    scores = np.asarray(scores, np.float64)
    reference = float(np.median(scores)) if reference is None and len(scores) else (reference or 0.0)
    clear = scores >= p.min_confidence * reference
    med = _running_median(shifts, clear, p.neighbours)
    typical = float(np.median(scores[clear])) if clear.any() else 0.0
    far = np.zeros(len(shifts), bool)
    ok = ~np.isnan(med[:, 0])
    far[ok] = np.abs(shifts[ok] - med[ok]).max(axis=1) > p.max_jump
    doubt = ~clear | (far & (scores < typical))
    expected = shifts.copy()
    good = np.flatnonzero(~doubt)
    if len(good) == 0:
        expected[doubt] = np.nan
        return doubt, expected
    bad = np.flatnonzero(doubt)
    for axis in (0, 1):
        expected[bad, axis] = np.interp(bad, good, shifts[good, axis])
    return doubt, expected


def _refine(registrar: "_Registrar", hp: np.ndarray, expected: np.ndarray, p: RegistrationParams) -> tuple[float, float]:
    """A frame in doubt registered again within ``p.fallback_radius`` of its expected shift: its own peak
    when it lies inside that window, else the expected shift."""
    dy, dx, _ = registrar.rigid(hp, center=(float(expected[0]), float(expected[1])), radius=p.fallback_radius)
    if max(abs(dy - expected[0]), abs(dx - expected[1])) < p.fallback_radius - 0.25:
        return dy, dx
    return float(expected[0]), float(expected[1])


@dataclass
class _Block:
    """What the correction of one block returns."""

    shifts: np.ndarray  # float32 (kept, 2)
    scores: np.ndarray  # float32 (kept,)
    fallback: np.ndarray  # bool (kept,)
    deferred: np.ndarray  # int: indices (into the kept frames) with no clear frame in the block to go by
    patch: Optional[np.ndarray]
    loaded: _Loaded  # without its frames
    stats: "SummaryStats"
    frames: int  # raw frames done (for progress; last, as executor.stream reports it)


def _apply(job: _Job, small: np.ndarray, kept: np.ndarray, shifts: np.ndarray, skip: np.ndarray,
           stats: "SummaryStats", out: np.ndarray) -> Optional[np.ndarray]:
    """Preprocess, correct, summarize and store the kept frames of a block (frames in ``skip`` are
    stored but left out of the statistics; the statistics skip a gap around them). Returns the
    piecewise patch shifts, or None."""
    reg, pre = job.params.registration, job.params.preprocess
    registrar = job.registrar
    patch = np.empty((len(kept), len(registrar.boxes), 2), np.float32) if registrar.boxes else None
    for i, j in enumerate(kept):
        frame = pp.preprocess_frame(small[j], pre, job.min_image)
        if patch is not None:
            patch[i] = registrar.patches(registrar.filter.highpass(small[j]), tuple(shifts[i]))
            corrected = registrar.apply_field(frame, patch[i])
        else:
            corrected = shift_frame(frame, *shifts[i], border=reg.border)
        if skip[i]:
            stats.gap()
        else:
            stats.add_frame(np.nan_to_num(corrected) if reg.border == "nan" else corrected)
        _store(corrected, out[i])
    return patch


@_single_threaded
def _correct_block(job: _Job, a: int, raw: Optional[np.ndarray] = None) -> _Block:
    """Preprocess, register, correct, summarize and write raw frames [a, a + block) (``raw``: the
    block if already read).

    First every kept frame is registered (shift and confidence); frames in doubt
    (:func:`doubtful_shifts`) are registered again near their clear neighbours' shift; then each frame
    is preprocessed, moved, summarized and stored. With no clear frame in the block, its frames are
    stored with their own shifts but deferred: :func:`correct_motion` registers them again near the
    shifts of the nearest clear frames of other blocks. Only the raw block and the output block (in
    the stored dtype) are held.
    """
    reg = job.params.registration
    registrar = job.registrar
    b = min(a + job.block_raw, job.n_used)
    loaded = job.load_raw(a, b, raw)
    small = loaded.frames
    j0 = a // job.t
    kept = np.flatnonzero(job.keep[j0: j0 + len(small)])
    h, w = small.shape[1:]
    shifts = np.empty((len(kept), 2), np.float32)
    scores = np.empty(len(kept), np.float32)
    for i, j in enumerate(kept):
        *shifts[i], scores[i] = registrar.rigid(registrar.filter.highpass(small[j]))
    # a block of dim or textureless frames would judge them against each other: against the movie's then
    median = float(np.median(scores)) if len(scores) else 0.0
    doubt, expected = doubtful_shifts(shifts, scores, reg,
                                      median if median >= reg.min_confidence * job.psr_reference else job.psr_reference)
    deferred = np.flatnonzero(doubt & np.isnan(expected[:, 0]))
    for i in np.flatnonzero(doubt & ~np.isnan(expected[:, 0])):
        shifts[i] = _refine(registrar, registrar.filter.highpass(small[kept[i]]), expected[i], reg)
    skip = np.zeros(len(kept), bool)
    skip[deferred] = True
    out = _block_buffer((len(kept), h, w), job.params.store_dtype)
    stats = SummaryStats(h, w, np.float32)
    patch = _apply(job, small, kept, shifts, skip, stats, out)
    if len(kept) and job.out is not None:
        p0 = int(job.out_pos[j0 + kept[0]])
        job.out[p0: p0 + len(out)] = out
    loaded.frames = None  # the block's frames stay here: results are kept until the pass ends
    return _Block(shifts, scores, doubt, deferred, patch, loaded, stats, b - a)


@_single_threaded
def _redo_block(job: _Job, a: int) -> tuple:
    """Register again, near their expected shifts, the deferred frames of block ``a``
    (``job.redo[a]``), then correct, summarize and store them. Returns (output frames, shifts,
    patch shifts or None, statistics, raw frames)."""
    reg = job.params.registration
    registrar = job.registrar
    frames, expected = job.redo[a]
    b = min(a + job.block_raw, job.n_used)
    small = job.load_raw(a, b).frames
    j0 = a // job.t
    local = np.array([np.flatnonzero(job.out_pos == f)[0] - j0 for f in frames], int)
    shifts = np.empty((len(frames), 2), np.float32)
    for i, j in enumerate(local):
        shifts[i] = _refine(registrar, registrar.filter.highpass(small[j]), expected[i], reg)
    h, w = small.shape[1:]
    stats = SummaryStats(h, w, np.float32)
    out = np.empty((len(frames), h, w), job.params.store_dtype)
    patch = None
    for run in np.split(np.arange(len(frames)), np.flatnonzero(np.diff(frames) != 1) + 1):
        stats.gap()
        part = _apply(job, small, local[run], shifts[run], np.zeros(len(run), bool), stats,
                      out[run[0]: run[-1] + 1])
        patch = part if patch is None else (np.concatenate([patch, part]) if part is not None else None)
        if job.out is not None:
            job.out[int(frames[run[0]]): int(frames[run[-1]]) + 1] = out[run]
    return frames, shifts, patch, stats, 0


_BUFFERS = threading.local()


def _block_buffer(shape: tuple[int, int, int], dtype) -> np.ndarray:
    """An output block of this thread, reused from block to block: the block is written to the Zarr
    array before the next one starts, and a fresh 50 MB array per block costs its page faults again
    (measured: storing into fresh memory 0.6 ms per 512 x 512 frame, into reused memory 0.2 ms)."""
    buf = getattr(_BUFFERS, "out", None)
    if buf is None or buf.shape[1:] != shape[1:] or buf.dtype != np.dtype(dtype) or len(buf) < shape[0]:
        buf = _BUFFERS.out = np.empty(shape, dtype)
    return buf[: shape[0]]


_READ_BUDGET = 256 * 2**20  # bytes of raw blocks kept from the glow pass


def _kept(results) -> dict:
    """Glow-pass results by block start, the raw block kept for the first blocks that fit in
    ``_READ_BUDGET`` (so memory does not grow with the movie when every block is sampled)."""
    out, used = {}, 0
    for a, r in results:
        if r.raw is not None and used + r.raw.nbytes > _READ_BUDGET:
            r = r._replace(raw=None)
        elif r.raw is not None:
            used += r.raw.nbytes
        out[a] = r
    return out


def _texture(filt: Filter, frames: np.ndarray, window: Optional[np.ndarray], step: int = 10) -> float:
    """How much stable texture a block of consecutive frames holds: the median correlation of the
    filtered copies of every ``step``-th pair of consecutive frames (texture is shared by
    neighbouring frames, noise is not: about 0 for frames of noise alone)."""
    out = []
    for j in range(0, len(frames) - 1, step):
        a, b = (filt.highpass(f) for f in frames[j: j + 2])
        if window is not None:
            a, b = a * window, b * window
        a, b = a - a.mean(), b - b.mean()
        den = float(np.sqrt((a * a).sum() * (b * b).sum()))
        out.append(float((a * b).sum()) / den if den > 0 else 0.0)
    return float(np.median(out)) if out else 0.0


def _drain(items: list):
    """Yield a list's items in order, removing each from the list as it goes (so each can be freed once
    the consumer lets go of it)."""
    items.reverse()
    while items:
        yield items.pop()


def _bounded_map(threads: int) -> Callable:
    """A ``map`` on ``threads`` threads that computes at most ``threads`` results ahead of its consumer
    (:func:`scopeline.executor.read_ahead`), unlike a thread pool's ``map``, which holds every result."""
    return lambda fn, items: (r for _, r in executor.read_ahead(fn, list(items), threads))


def _template(job: _Job, shape: tuple[int, int], threads: int, read: dict) -> tuple[np.ndarray, float, float]:
    """The registration template, its frames' median peak-to-sidelobe ratio, and what a clear frame of
    the movie scores (the median over every 5th frame of up to 3 sampled blocks outside the template's
    whose texture is within 20% of the best).

    The template is made of ``template_frames`` consecutive frames that are not dark (below
    ``dark_fraction`` of the movie's median brightness: LED warm-up) nor corrupted, starting at the
    block, of those already read (``read``: raw blocks by start; the evenly spaced sample and the
    movie's first blocks), whose frames hold the most stable texture (:func:`_texture`; the first
    such block on a tie, the start of the movie for a movie of uniform texture): first frames that
    show nothing to register (cells silent, the light still coming up) must not make the template.
    Registered on ``threads`` threads of this process (each on one OpenCV/BLAS thread).
    """
    reg, pre = job.params.registration, job.params.preprocess
    filt = Filter(shape, reg.filter_low, reg.filter_high)

    def load(a: int) -> tuple[np.ndarray, np.ndarray]:
        b = min(a + job.block_raw, job.n_used)
        loaded = job.load_raw(a, b, read[a][: b - a] if a in read else None)
        good = loaded.brightness >= pre.dark_fraction * job.brightness
        bad = {(i - a) // job.t for i in loaded.corrupted}
        good[[i for i in bad if i < len(good)]] = False
        good &= job.keep[a // job.t: a // job.t + len(good)]
        return loaded.frames, good

    def texture(a: int) -> float:
        return _texture(filt, job.downsample(read[a]), job.window)

    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with ThreadPoolExecutor(threads) as pool, threadpool_limits(1):
            starts = list(range(0, job.n_used, job.block_raw))
            sampled = sorted(read)
            score = dict(zip(sampled, pool.map(texture, sampled)))
            best = max(score.values(), default=0.0)
            # the first block within 20% of the best: a movie of uniform texture keeps the start
            first_ok = next((a for a in sampled if score[a] >= 0.8 * best), starts[0])
            first, got, k, used = [], 0, starts.index(first_ok), []
            while got < reg.template_frames and k < len(starts):
                batch = starts[k: k + max(1, threads)]
                k += len(batch)
                used += batch
                for frames, good in pool.map(load, batch):
                    first.append(frames[good])
                    got += int(good.sum())
            frames = np.concatenate(first)[: reg.template_frames] if first else np.zeros((0, *shape))
            if len(frames) < min(10, reg.template_frames):
                raise MotionError(f"only {len(frames)} frames are bright enough for the template "
                                  f"(dark_fraction {pre.dark_fraction} of the median brightness)")
            first = None
            highpassed = list(pool.map(filt.highpass, frames))
            frames = None
            # a bounded map (threads frames ahead, not every frame's result at once) and the frames handed
            # over one by one: the template's step held ~230 MiB more than the correction at 608 x 608
            template, scores = build_template(_drain(highpassed), reg, _bounded_map(threads), job.window,
                                              return_scores=True)
            job.template = template
            # textured blocks only: the movie's first blocks may be the textureless ones left out
            others = [a for a in sampled if a not in used and score[a] >= 0.8 * best][:3]
            registrar = job.registrar
            sampled_frames = [f for a in others for f in job.downsample(read[a])[::5]]
            reference = list(pool.map(lambda f: registrar.rigid(registrar.filter.highpass(f))[2], sampled_frames))
            job._registrar = None  # built again where the blocks run (not shipped with the job)
    finally:
        cv2.setNumThreads(previous)
    if not np.any(template):
        raise MotionError("the template is empty: the first frames hold no structure to register")
    # what a clear frame of this movie scores: frames outside the template's blocks (its own frames score
    # higher against a template they are part of), or those when there are no others
    return template, float(np.median(scores)), float(np.median(reference)) if reference else float(np.median(scores))


def correct_motion(movie, params: MotionParams, out_array=None, *, workers: Optional[int] = None,
                   scheduler: Optional[str] = None,
                   progress: Optional[Callable[[int], None]] = None) -> MotionResult:
    """Preprocess and motion-correct a movie, writing the corrected movie block by block.

    Parameters
    ----------
    movie : dask.array.Array or numpy.ndarray
        Raw movie (frames, height, width), uint8 (8-bit Miniscope data: fast exact path) or any
        integer/float type. Best chunked by ``block_frames x temporal_downsample`` frames so each
        block decodes its own frames only.
    params : MotionParams
    out_array : callable, optional
        ``out_array(shape, chunks, dtype)`` returning a writable array (a Zarr array) for the
        corrected movie; None to skip writing (shifts and summaries only).
    workers : int, optional
        Blocks processed in parallel (ignored with a scheduler address: its cluster decides; 1 when
        corrupted frames are dropped). Default: :func:`scopeline.executor.settings`.
    scheduler : str, optional
        ``"threads"`` (one process), ``"processes"`` (a local dask.distributed cluster of worker
        processes), or the address of a running dask.distributed scheduler (:mod:`scopeline.executor`).
        Dropping corrupted frames runs on one thread (blocks then share Zarr chunks). Default:
        :func:`scopeline.executor.settings`.
    progress : callable, optional
        Called with the number of raw frames finished, as blocks finish (for progress bars); the
        total is the number of raw frames used, twice that when corrupted frames are dropped.

    Returns
    -------
    MotionResult

    Raises
    ------
    MotionError
        If the movie is shorter than the template window, constant, holds NaN, the crop does not
        fit, every sampled frame is corrupted, too few frames are bright enough for the template or
        they hold no structure (empty template), or too few frames are left after dropping corrupted
        ones.

    Notes
    -----
    The raw movie is decoded once: about ``glow_samples`` frames in evenly spaced blocks, and the
    template's first blocks, are read first for the per-pixel minimum (glow), the mean image (where
    defective pixels and the lens are found) and the median brightness (dropped-to-black frames),
    and kept (up to 256 MiB) for the template and the correction; blocks beyond that budget are
    read twice, and so are the few blocks whose frames were deferred (no clear frame in their block:
    registered again afterwards near the nearest clear frames' shifts). With
    ``corruption.action == "drop"`` a first full pass finds the corrupted frames, since the output
    positions depend on them. OpenCV's own thread pool is set to one thread in the workers: blocks
    already run in parallel.
    """
    t_start = time.perf_counter()
    workers = workers or executor.settings().workers
    scheduler = scheduler or executor.settings().scheduler
    pre, reg = params.preprocess, params.registration
    n_raw, h_raw, w_raw = movie.shape
    t = pre.temporal_downsample
    try:
        n_out, h, w = pp.output_shape(n_raw, h_raw, w_raw, pre)
    except ValueError as err:
        raise MotionError(str(err)) from err
    if n_out < reg.template_frames:
        raise MotionError(
            f"the recording has {n_out} frames (after downsampling), fewer than the template window of "
            f"{reg.template_frames} frames: lower registration.template_frames")
    if pre.corruption.action == "drop":
        # output positions shift with every dropped frame, so two blocks may share a Zarr chunk:
        # one worker writes them in turn
        scheduler, workers = "threads", 1
    job = _Job(movie=movie, params=params, n_used=n_out * t)
    starts = list(range(0, job.n_used, job.block_raw))
    report = progress or (lambda n: None)
    seconds: dict = {}
    previous_threads = cv2.getNumThreads()
    try:
        with executor.client(workers, scheduler) as client:
            seconds["start"] = time.perf_counter() - t_start
            with _timed(seconds, "glow"):
                read, sample = _sample(client, job, starts)
            corrupted: dict[int, str] = {}
            job.keep = np.ones(n_out, bool)
            if pre.corruption.action == "drop":
                with _timed(seconds, "scan"):
                    job.keep = _scan_corrupted(client, job, starts, report, corrupted)
            job.out_pos = np.cumsum(job.keep) - 1
            with _timed(seconds, "template"):
                job.template, job.template_score, job.psr_reference = _template(
                    job, (h, w), workers if scheduler in ("threads", "processes") else os.cpu_count() or 1, read)
            n_keep = int(job.keep.sum())
            chunks = (min(params.chunk_frames, n_keep), min(params.chunk_tile, h), w)
            job.out = out_array((n_keep, h, w), chunks, params.store_dtype) if out_array is not None else None
            stats = SummaryStats(h, w)
            with _timed(seconds, "correct"):
                ordered = _correct_all(client, job, starts, report, read, stats, corrupted)
            read = None
            registered = _Registered.join(ordered, reg.mode == "piecewise")
            with _timed(seconds, "deferred"):
                _redo_deferred(client, job, starts, ordered, registered.shifts, registered.fallback, registered.patch,
                               stats)
    finally:
        cv2.setNumThreads(previous_threads)
        io.close_video_readers()
    seconds["total"] = time.perf_counter() - t_start
    return _result(job, ordered, registered, corrupted, sample, stats, (n_keep, h, w), seconds)


@contextlib.contextmanager
def _timed(seconds: dict, name: str):
    """Record the wall time of a step in ``seconds[name]``, s."""
    t0 = time.perf_counter()
    yield
    seconds[name] = time.perf_counter() - t0


def _scan_corrupted(client, job: _Job, starts: list[int], report, corrupted: dict) -> np.ndarray:
    """First pass when corrupted frames are dropped: find them (into ``corrupted``); return which output
    frames are kept, bool (frames after downsampling,).

    Raises
    ------
    MotionError
        If fewer frames than the template window are left.
    """
    reg, t = job.params.registration, job.params.preprocess.temporal_downsample
    for _, (found, _) in executor.stream(client, _scan_block, executor.ship(client, job), starts, report):
        corrupted.update(found)
    bad = np.zeros(job.n_used, bool)
    bad[list(corrupted)] = True
    keep = ~bad.reshape(job.n_used // t, t).any(axis=1)
    if keep.sum() < reg.template_frames:
        raise MotionError(f"only {int(keep.sum())} frames are left after dropping corrupted ones")
    return keep


def _correct_all(client, job: _Job, starts: list[int], report, read: dict, stats: "SummaryStats",
                 corrupted: dict) -> list[_Block]:
    """The main pass: every block registered, corrected and stored; their statistics merged into
    ``stats`` and their corrupted frames into ``corrupted``. Returns the blocks in frame order."""
    by_start = {}
    for a, block in executor.stream(client, _correct_block, executor.ship(client, job), starts, report, read):
        stats.merge(block.stats)
        block.stats = None  # kept: the shifts and what was found, a few numbers per frame
        corrupted.update(block.loaded.corrupted)
        by_start[a] = block
    return [by_start[a] for a in starts]


@dataclass
class _Registered:
    """Every corrected frame's registration, joined over the blocks."""

    shifts: np.ndarray  # float32 (frames, 2)
    scores: np.ndarray  # float32 (frames,)
    fallback: np.ndarray  # bool (frames,)
    patch: Optional[np.ndarray]  # float32 (frames, patches, 2) in piecewise mode

    @classmethod
    def join(cls, ordered: list[_Block], piecewise: bool) -> "_Registered":
        return cls(np.concatenate([o.shifts for o in ordered]), np.concatenate([o.scores for o in ordered]),
                   np.concatenate([o.fallback for o in ordered]),
                   np.concatenate([o.patch for o in ordered]) if piecewise else None)


def _result(job: _Job, ordered: list[_Block], registered: _Registered, corrupted: dict, sample: dict,
            stats: "SummaryStats", shape: tuple, seconds: dict) -> "MotionResult":
    """The MotionResult of a finished correction."""
    pre, reg = job.params.preprocess, job.params.registration
    loaded = [o.loaded for o in ordered]
    brightness = np.concatenate([ld.brightness for ld in loaded])[job.keep]
    frame_index = (np.flatnonzero(job.keep) * pre.temporal_downsample).astype(np.int64)
    n_dark = pp.dark_start(brightness, pre.dark_fraction)
    _, h, w = shape
    return MotionResult(
        shifts=registered.shifts, confidence=registered.scores, fallback=registered.fallback,
        template_confidence=job.template_score, frame_index=frame_index, corrupted=dict(sorted(corrupted.items())),
        dark_frames=frame_index[:n_dark], brightness=brightness.astype(np.float32),
        row_noise=np.concatenate([ld.row_noise for ld in loaded])[job.keep],
        line_noise={**sample["line"], **_line_summary(loaded)}, lens=sample["lens"],
        fov=fov_.registered_fov(sample["lens"], registered.shifts), fov_info=sample["fov_info"],
        defects=sample["defects"], mean_raw=sample["mean"], template=job.template, glow=job.min_image,
        summary=stats.images(), patch_boxes=patch_boxes(h, w, reg.patch_grid) if reg.mode == "piecewise" else [],
        patch_shifts=registered.patch, shape=shape, seconds=seconds,
    )


def _line_summary(loaded: list) -> dict:
    """Median line noise before / after its removal over the measured pairs of frames (movie units)."""
    before = [v for ld in loaded for v in ld.line_before]
    after = [v for ld in loaded for v in ld.line_after]
    return {"before": float(np.median(before)) if before else 0.0,
            "after": float(np.median(after)) if after else 0.0, "pairs": len(before)}


def _sample(client, job: _Job, starts: list[int]) -> tuple[dict, dict]:
    """The first pass: evenly spaced blocks (and the template's) for the glow minimum, the movie's
    brightness, the mean image; from it the defective pixels, the lens and the line-noise sampler,
    set on ``job``. Returns the raw blocks kept (by start) and ``{"mean", "defects", "lens",
    "fov_info"}``."""
    params = job.params
    pre, reg = params.preprocess, params.registration
    n_blocks = len(starts) if params.glow_samples == 0 else \
        min(len(starts), max(1, math.ceil(params.glow_samples / job.block_raw)))
    chosen = [starts[i] for i in np.unique(np.linspace(0, len(starts) - 1, n_blocks).round().astype(int))]
    # the template's blocks too: the template then reads no frame again
    chosen = sorted(set(chosen) | {a for a in starts if a < reg.template_frames * job.t})
    parts = _kept(executor.stream(client, _glow_block, executor.ship(client, job), chosen, lambda n: None))
    if any(p_.has_nan for p_ in parts.values()):
        raise MotionError("the movie holds NaN values")
    lo, hi = min(p_.lo for p_ in parts.values()), max(p_.hi for p_ in parts.values())
    if hi <= lo:
        raise MotionError(f"constant movie: every pixel of every frame equals {lo:g}")
    job.brightness = float(np.median(np.concatenate([p_.means for p_ in parts.values()])))
    dark = [a for a, p_ in parts.items() if pre.corruption.enabled
            and (p_.means < pre.corruption.black_fraction * job.brightness).any()]
    if dark:  # dropped-to-black frames must not pull the minimum down: redo those blocks
        parts.update(_kept(executor.stream(client, _glow_block, executor.ship(client, job), dark, lambda n: None)))
    mins = [p_.minimum for p_ in parts.values() if p_.minimum is not None]
    if not mins:
        raise MotionError("every sampled frame is corrupted: raise glow_samples or check the recording")
    read = {a: p_.raw for a, p_ in parts.items() if p_.raw is not None}
    mean = (sum(p_.total for p_ in parts.values() if p_.total is not None)
            / max(1, sum(p_.count for p_ in parts.values()))).astype(np.float32)
    defects = pp.find_defects(mean, pre.defects)
    if defects.any():
        job.repair = pp.DefectRepair(defects)
        job.repair(mean)
    minimum = np.min(np.stack(mins), axis=0)
    minimum = minimum if minimum.dtype == np.uint8 else minimum.astype(np.float32)
    if job.repair is not None:
        job.repair(minimum)
    job.min_image = pp.glow_image(minimum, pre.glow_sigma)
    job.mean_raw = mean
    lens, fov_info = fov_.lens_mask(mean, pre.fov)
    job.window = lens_window(lens, reg.filter_high)
    job.black = float(fov_info["dark"]) if fov_info["found"] else 0.0
    line = np.array([v for p_ in parts.values() for v in p_.line]).reshape(-1, 3)
    level, floor, sigma = (float(np.median(line[:, k])) for k in range(3)) if len(line) else (0.0, 0.0, 0.0)
    found = bool(len(line)) and level > pre.line_noise.detect_ratio * floor and level > pre.line_noise.min_level * sigma
    if pre.line_noise.enabled:
        job.sampler = pp.RowSampler(lens, pre.line_noise.samples)
        job.remove_rows = found
        # a striped frame stands out of the movie's line noise, or of what the pixel noise makes of it
        job.line_level = max(level, pre.line_noise.min_level * sigma)
        job.pixel_noise = sigma
    return read, {"mean": mean, "defects": defects, "lens": lens, "fov_info": fov_info,
                  "line": {"sampled": level, "floor": floor, "pixel_noise": sigma, "removed": job.remove_rows}}


def _redo_deferred(client, job: _Job, starts: list[int], ordered: list, shifts: np.ndarray,
                   fallback: np.ndarray, patch: Optional[np.ndarray], stats: "SummaryStats") -> None:
    """Register again the frames deferred by their blocks (no clear frame there), near the shift
    interpolated from the nearest clear frames of the whole movie. Updates ``shifts``, ``fallback``,
    ``patch`` and ``stats`` in place and overwrites those frames in the output; with no clear frame at
    all they keep their own shifts."""
    offsets = np.cumsum([0] + [len(o.shifts) for o in ordered[:-1]])
    deferred = {a: off + o.deferred for a, o, off in zip(starts, ordered, offsets) if len(o.deferred)}
    if not deferred:
        return
    bad = np.concatenate(list(deferred.values()))
    good = np.setdiff1d(np.arange(len(shifts)), bad)
    if len(good) == 0:
        return
    expected = np.stack([np.interp(bad, good, shifts[good, k]) for k in (0, 1)], axis=1)
    at = {f: e for f, e in zip(bad, expected)}
    job.redo = {a: (frames, np.array([at[f] for f in frames])) for a, frames in deferred.items()}
    for _, (frames, s, part, partial, _) in executor.stream(client, _redo_block, executor.ship(client, job), sorted(job.redo),
                                                     lambda n: None):
        shifts[frames] = s
        fallback[frames] = True
        if patch is not None and part is not None:
            patch[frames] = part
        stats.merge(partial)
    job.redo = None
