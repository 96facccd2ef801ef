"""Motion correction of 1-photon movies: rigid (sub-pixel) and piecewise-rigid, with summary images.

Method
------
Shifts are estimated on a *filtered copy*: the cropped, downsampled, repaired raw movie through a
difference-of-Gaussians band pass (its small Gaussian denoises, its large one removes glow and
background), which keeps the tissue's stable texture (vessel shadows) as well as cells; they are
applied to the preprocessed (glow- and background-removed, denoised) movie. Texture seen in every
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

Streaming: the movie is processed in blocks of frames, in parallel threads (dask), each block read,
preprocessed, registered, written to the output Zarr array and added to the summary statistics, so
memory is bounded by ``block_frames`` x workers and does not grow with the recording. Two passes read
the raw movie: one for corrupted frames and the per-pixel minimum (glow), one for everything else.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Literal, Optional

import cv2
import dask
import numpy as np
import scipy.fft as sfft
from pydantic import BaseModel, ConfigDict, Field, model_validator

from scopeline.core import preprocess as pp

__all__ = [
    "MotionError",
    "RegistrationParams",
    "MotionParams",
    "MotionResult",
    "PRESETS",
    "bandpass",
    "taper",
    "register",
    "shift_frame",
    "build_template",
    "patch_boxes",
    "SummaryStats",
    "correct_motion",
]


class MotionError(ValueError):
    """Motion correction cannot run on this input; the message says why."""


class RegistrationParams(BaseModel):
    """Registration parameters (pixels are after cropping and downsampling)."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["rigid", "piecewise"] = Field("rigid", description="Rigid translation, or piecewise-rigid patches.")
    max_shift: float = Field(20.0, gt=0, le=200, description="Largest translation searched, pixels.")
    upsample: int = Field(20, ge=1, le=100, description="Sub-pixel precision: 1 / upsample pixel.")
    filter_low: float = Field(1.0, ge=0, le=10, description="Band pass of the filtered copy: small Gaussian sigma, pixels.")
    filter_high: float = Field(6.0, gt=0, le=100, description="Band pass: large Gaussian sigma, pixels (about a cell "
                               "diameter); structure larger than this is ignored.")
    template_frames: int = Field(200, ge=10, le=5000, description="Frames from the start used to build the template.")
    template_iterations: int = Field(3, ge=1, le=10, description="Register-and-project iterations for the template.")
    template_stat: Literal["mean", "max"] = Field("mean", description="Projection of registered frames that forms "
                                                  "the template (a max projection loses dark texture such as vessels).")
    patch_grid: tuple[int, int] = Field((4, 4), description="Piecewise: patches per (rows, columns).")
    max_deviation: float = Field(4.0, gt=0, le=50, description="Piecewise: largest patch shift away from the rigid "
                                 "shift, pixels.")
    border: Literal["zero", "nan", "reflect"] = Field("zero", description="Values moved in at the borders.")

    @model_validator(mode="after")
    def _check(self) -> "RegistrationParams":
        if self.filter_low >= self.filter_high:
            raise ValueError(f"filter_low {self.filter_low} must be below filter_high {self.filter_high}")
        if not (1 <= self.patch_grid[0] <= 16 and 1 <= self.patch_grid[1] <= 16):
            raise ValueError(f"patch_grid {self.patch_grid}: 1 to 16 patches per side")
        return self


class MotionParams(BaseModel):
    """One motion-correction parameter set: preprocessing, registration and output storage."""

    model_config = ConfigDict(extra="forbid")

    preprocess: pp.PreprocessParams = Field(default_factory=pp.PreprocessParams)
    registration: RegistrationParams = Field(default_factory=RegistrationParams)
    block_frames: int = Field(100, ge=10, le=2000, description="Output frames processed at once by a worker "
                              "(memory ~ 16 x block_frames x height x width bytes per worker).")
    chunk_frames: int = Field(100, ge=1, le=2000, description="Frames per chunk of the output Zarr array.")
    chunk_tile: int = Field(128, ge=16, le=4096, description="Pixels per side of a chunk of the output Zarr array.")
    store_dtype: Literal["float16", "float32"] = Field(
        "float16", description="Output pixel type. float16 keeps 11 significant bits: an error below 0.05 "
        "intensity units for values under 100, an order of magnitude under 8-bit quantization, at half the size.")

    @model_validator(mode="after")
    def _check(self) -> "MotionParams":
        if self.block_frames % self.chunk_frames:
            raise ValueError(f"block_frames {self.block_frames} must be a multiple of chunk_frames {self.chunk_frames}")
        return self

    def canonical_json(self) -> str:
        """JSON with every default filled and keys sorted: equal parameters give equal text."""
        return _canonical(self.model_dump(mode="json"))


def _canonical(obj) -> str:
    import json

    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


#: Shipped parameter sets. "minian" follows Minian's demo preprocessing (median denoising with a
#: 7-pixel window, top-hat background removal with a 15-pixel disk); "fast" trades a little precision
#: for speed (3-pixel median, box background, 1/10 pixel, smaller template).
PRESETS: dict[str, MotionParams] = {
    "minian": MotionParams(
        preprocess=pp.PreprocessParams(denoise="median", denoise_window=7, background="tophat", background_radius=15),
        registration=RegistrationParams(upsample=20),
    ),
    "fast": MotionParams(
        preprocess=pp.PreprocessParams(denoise="median", denoise_window=3, background="uniform", background_radius=10),
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


def bandpass(frame: np.ndarray, low: float, high: float) -> np.ndarray:
    """Difference-of-Gaussians band pass of a float32 frame (sigmas in pixels)."""
    small = cv2.GaussianBlur(frame, (0, 0), low) if low > 0 else frame
    return small - cv2.GaussianBlur(frame, (0, 0), high)


def _upsampled_dft(spectrum: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Inverse DFT of ``spectrum`` sampled at fractional positions (ys x xs), by two matrix products."""
    h, w = spectrum.shape
    ky = sfft.fftfreq(h) * h
    kx = sfft.fftfreq(w) * w
    ey = np.exp(2j * np.pi * np.outer(ys, ky) / h)
    ex = np.exp(2j * np.pi * np.outer(kx, xs) / w)
    return ey @ spectrum @ ex


def register(frame_fft: np.ndarray, template_fft_conj: np.ndarray, max_shift: float, upsample: int,
             center: tuple[float, float] = (0.0, 0.0)) -> tuple[float, float]:
    """Sub-pixel shift of a frame relative to a template, from their spectra.

    Parameters
    ----------
    frame_fft : numpy.ndarray
        complex (height, width), ``fft2`` of the filtered frame.
    template_fft_conj : numpy.ndarray
        complex (height, width), complex conjugate of ``fft2`` of the filtered template.
    max_shift : float
        Search radius around ``center``, pixels.
    upsample : int
        Sub-pixel refinement factor (precision 1 / upsample pixel); 1 for integer shifts.
    center : (float, float)
        Where to search, pixels (dy, dx).

    Returns
    -------
    (float, float)
        (dy, dx) in pixels: the frame's content sits at ``template position + (dy, dx)``.
    """
    spectrum = frame_fft * template_fft_conj
    corr = sfft.ifft2(spectrum).real
    h, w = corr.shape
    cy, cx = int(round(center[0])), int(round(center[1]))
    r = int(math.floor(max_shift))
    dys = np.arange(cy - r, cy + r + 1)
    dxs = np.arange(cx - r, cx + r + 1)
    window = corr[np.ix_(dys % h, dxs % w)]
    iy, ix = np.unravel_index(int(np.argmax(window)), window.shape)
    dy, dx = float(dys[iy]), float(dxs[ix])
    if upsample > 1:
        n = int(math.ceil(1.5 * upsample))
        offs = (np.arange(n) - n // 2) / upsample
        local = _upsampled_dft(spectrum, dy + offs, dx + offs).real
        jy, jx = np.unravel_index(int(np.argmax(local)), local.shape)
        dy, dx = dy + offs[jy], dx + offs[jx]
    return dy, dx


_BORDERS = {"zero": (cv2.BORDER_CONSTANT, 0.0), "nan": (cv2.BORDER_CONSTANT, float("nan")),
            "reflect": (cv2.BORDER_REFLECT, 0.0)}


def shift_frame(frame: np.ndarray, dy: float, dx: float, border: str = "zero") -> np.ndarray:
    """Move a float32 frame by (-dy, -dx) pixels (bilinear), undoing a shift of (dy, dx)."""
    mode, value = _BORDERS[border]
    m = np.float32([[1, 0, -dx], [0, 1, -dy]])
    return cv2.warpAffine(frame, m, (frame.shape[1], frame.shape[0]), flags=cv2.INTER_LINEAR,
                          borderMode=mode, borderValue=value)


def build_template(filtered: np.ndarray, p: RegistrationParams) -> tuple[np.ndarray, np.ndarray]:
    """Template from the first frames of a movie, robust when activity is sparse.

    Parameters
    ----------
    filtered : numpy.ndarray
        float32 (frames, height, width), band-passed frames.
    p : RegistrationParams

    Returns
    -------
    template : numpy.ndarray
        float32 (height, width), band-passed.
    shifts : numpy.ndarray
        float32 (frames, 2), the frames' shifts to the final template.
    """
    win = taper(filtered.shape[1:], _taper_width(p))
    ffts = [sfft.fft2(f * win) for f in filtered]
    template = filtered.mean(axis=0)
    shifts = np.zeros((len(filtered), 2), np.float32)
    for _ in range(p.template_iterations):
        tconj = np.conj(sfft.fft2(template * win))
        shifts = np.array([register(f, tconj, p.max_shift, p.upsample) for f in ffts], np.float32)
        moved = np.stack([shift_frame(f, dy, dx, "reflect") for f, (dy, dx) in zip(filtered, shifts)])
        template = moved.max(axis=0) if p.template_stat == "max" else moved.mean(axis=0)
        template = bandpass(template.astype(np.float32), 0, p.filter_high)
    return template.astype(np.float32), shifts


def _taper_width(p: RegistrationParams) -> int:
    return int(math.ceil(2 * p.filter_high))


def patch_boxes(height: int, width: int, grid: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """Overlapping patches (y0, y1, x0, x1): a ``grid`` of centres, each patch twice the grid spacing."""
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
    """Registers band-passed frames to a fixed template (rigid, then optionally per patch)."""

    def __init__(self, template: np.ndarray, p: RegistrationParams) -> None:
        self.p = p
        self.width = _taper_width(p)
        self.win = taper(template.shape, self.width)
        self.tconj = np.conj(sfft.fft2(template * self.win))
        self.shape = template.shape
        self.boxes = patch_boxes(*template.shape, p.patch_grid) if p.mode == "piecewise" else []
        self.patch_tconj = [np.conj(sfft.fft2(self._patch(template, box))) for box in self.boxes]

    def _patch(self, image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        y0, y1, x0, x1 = box
        return image[y0:y1, x0:x1] * taper((y1 - y0, x1 - x0), self.width)

    def rigid(self, filtered: np.ndarray) -> tuple[float, float]:
        return register(sfft.fft2(filtered * self.win), self.tconj, self.p.max_shift, self.p.upsample)

    def patches(self, filtered: np.ndarray, rigid: tuple[float, float]) -> np.ndarray:
        """float32 (n_patches, 2): total shift of each patch (rigid + residual)."""
        moved = shift_frame(filtered, *rigid, border="reflect")
        out = np.empty((len(self.boxes), 2), np.float32)
        for k, (box, tconj) in enumerate(zip(self.boxes, self.patch_tconj)):
            r = register(sfft.fft2(self._patch(moved, box)), tconj, self.p.max_deviation, self.p.upsample)
            out[k] = (rigid[0] + r[0], rigid[1] + r[1])
        return out

    def apply_field(self, frame: np.ndarray, patch_shifts: np.ndarray) -> np.ndarray:
        """Undo a displacement field interpolated (bilinear) from the patch shifts."""
        gy, gx = self.p.patch_grid
        h, w = self.shape
        field = patch_shifts.reshape(gy, gx, 2)
        dy = cv2.resize(np.ascontiguousarray(field[..., 0]), (w, h), interpolation=cv2.INTER_LINEAR)
        dx = cv2.resize(np.ascontiguousarray(field[..., 1]), (w, h), interpolation=cv2.INTER_LINEAR)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        mode, value = _BORDERS[self.p.border]
        return cv2.remap(frame, xx + dx, yy + dy, cv2.INTER_LINEAR, borderMode=mode, borderValue=value)


# ------------------------------------------------------------------------------ summaries


class SummaryStats:
    """Streaming per-pixel statistics of a movie, added block by block (thread-safe).

    Gives the mean, max and standard-deviation images; the local correlation image (each pixel's mean
    Pearson correlation over time with its 8 neighbours; Smith & Hausser 2010, as used by CNMF-E); and
    the peak-to-noise image ``(max - mean) / noise`` with noise = std of frame-to-frame differences
    / sqrt(2) (pairs within blocks).
    """

    _NEIGHBOURS = ((0, 1), (1, 0), (1, 1), (1, -1))

    def __init__(self, height: int, width: int) -> None:
        z = lambda: np.zeros((height, width), np.float64)  # noqa: E731
        self.n = 0
        self.n_pairs = 0
        self.sum, self.sumsq, self.diffsq = z(), z(), z()
        self.max = np.full((height, width), -np.inf)
        self.cross = {d: z() for d in self._NEIGHBOURS}
        self._lock = threading.Lock()

    @staticmethod
    def _views(a: np.ndarray, d: tuple[int, int]):
        dy, dx = d
        h, w = a.shape[-2:]
        src = a[..., : h - dy, max(0, -dx): w - max(0, dx)]
        dst = a[..., dy:, max(0, dx): w - max(0, -dx) if dx < 0 else w]
        return src, dst

    def add(self, block: np.ndarray) -> None:
        """Add a block (frames, height, width) of consecutive frames (NaN treated as 0)."""
        x = np.nan_to_num(block.astype(np.float64, copy=False))
        s, sq, mx = x.sum(0), (x * x).sum(0), x.max(0)
        dq = (np.diff(x, axis=0) ** 2).sum(0) if len(x) > 1 else 0.0
        cross = {}
        for d in self._NEIGHBOURS:
            a, b = self._views(x, d)
            cross[d] = (a * b).sum(0)
        with self._lock:
            self.n += len(x)
            self.n_pairs += max(0, len(x) - 1)
            self.sum += s
            self.sumsq += sq
            self.diffsq += dq
            np.maximum(self.max, mx, out=self.max)
            for d in self._NEIGHBOURS:
                a, _ = self._views(self.cross[d][None], d)
                a[0] += cross[d]

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
    frame_index : numpy.ndarray
        int64 (frames_out,), raw index of the first raw frame of each output frame.
    corrupted : dict
        raw frame index -> reason, for frames flagged as corrupted.
    template : numpy.ndarray
        float32 (height, width), band-passed template.
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
    frame_index: np.ndarray
    corrupted: dict
    template: np.ndarray
    summary: dict
    patch_boxes: list
    patch_shifts: Optional[np.ndarray]
    shape: tuple
    seconds: dict = field(default_factory=dict)


def _read(movie, a: int, b: int) -> np.ndarray:
    block = movie[a:b]
    return np.asarray(block.compute(scheduler="synchronous") if hasattr(block, "compute") else block)


def _run(tasks: list, workers: int) -> list:
    """Run delayed block tasks on dask's thread pool; the tasks report progress themselves."""
    return list(dask.compute(*tasks, scheduler="threads", num_workers=workers))


def correct_motion(movie, params: MotionParams, out_array=None, *, workers: int = 2,
                   progress: Optional[Callable[[int], None]] = None) -> MotionResult:
    """Preprocess and motion-correct a movie, writing the corrected movie block by block.

    Parameters
    ----------
    movie : dask.array.Array or numpy.ndarray
        Raw movie (frames, height, width). Best chunked by ``block_frames x temporal_downsample``
        frames so each block decodes its own frames only.
    params : MotionParams
    out_array : callable, optional
        ``out_array(shape, chunks, dtype)`` returning a writable array (a Zarr array) for the
        corrected movie; None to skip writing (shifts and summaries only).
    workers : int
        Threads processing blocks in parallel.
    progress : callable, optional
        Called with the number of raw frames finished, as blocks finish (for progress bars); each
        raw frame is reported twice (two passes).

    Returns
    -------
    MotionResult

    Raises
    ------
    MotionError
        If the movie is shorter than the template window, constant, holds NaN, the crop does not
        fit, or every frame is corrupted.
    """
    t_start = time.perf_counter()
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
    block_raw = params.block_frames * t
    starts = list(range(0, n_out * t, block_raw))
    report = progress or (lambda n: None)
    nocrop = pre.model_copy(update={"spatial_downsample": 1, "temporal_downsample": 1})

    # pass 1: corrupted-frame scores, brightness, range, per-pixel minimum of good frames
    def scan(a: int) -> tuple:
        b = min(a + block_raw, n_out * t)
        raw = pp.crop_downsample(_read(movie, a, b), nocrop)
        if np.isnan(raw).any():
            raise MotionError(f"frames {a}-{b - 1} hold NaN values")
        scores, means = pp.frame_scores(raw)
        local = pp.flag_corrupted(scores, means, pre.corruption)
        bad = np.zeros(len(raw), bool)
        bad[list(local)] = True
        good = pp.crop_downsample(pp.repair(raw, bad), pre.model_copy(update={"crop": None}))
        report(b - a)
        return scores, means, good.min(axis=0), float(raw.min()), float(raw.max())

    t0 = time.perf_counter()
    parts = _run([dask.delayed(scan)(a) for a in starts], workers)
    scores = np.concatenate([p_[0] for p_ in parts])
    means = np.concatenate([p_[1] for p_ in parts])
    lo, hi = min(p_[3] for p_ in parts), max(p_[4] for p_ in parts)
    if hi <= lo:
        raise MotionError(f"constant movie: every pixel of every frame equals {lo:g}")
    min_image = np.min(np.stack([p_[2] for p_ in parts]), axis=0).astype(np.float32)
    del parts
    corrupted = pp.flag_corrupted(scores, means, pre.corruption)
    bad_raw = np.zeros(n_raw, bool)
    bad_raw[list(corrupted)] = True
    bad_out = bad_raw[: n_out * t].reshape(n_out, t).any(axis=1)
    if pre.corruption.action == "drop":
        keep = ~bad_out
        if keep.sum() < reg.template_frames:
            raise MotionError(f"only {int(keep.sum())} frames are left after dropping corrupted ones")
    else:
        keep = np.ones(n_out, bool)
    out_pos = np.cumsum(keep) - 1
    seconds = {"scan": time.perf_counter() - t0}

    def load(a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw frames [a, b) cropped, repaired (from up to 3 neighbours outside) and downsampled;
        and the same preprocessed."""
        pad_a, pad_b = max(0, a - 3), min(n_out * t, b + 3)
        need_pad = bad_raw[a: a + 3].any() or bad_raw[max(a, b - 3): b].any()
        ra, rb = (pad_a, pad_b) if need_pad else (a, b)
        raw = pp.crop_downsample(_read(movie, ra, rb), nocrop)
        raw = pp.repair(raw, bad_raw[ra:rb])[a - ra: a - ra + (b - a)]
        small = pp.crop_downsample(raw, pre.model_copy(update={"crop": None}))
        return small, pp.preprocess_block(small, pre, min_image)

    # template from the first frames
    t0 = time.perf_counter()
    first, _ = load(0, reg.template_frames * t)
    template, _ = build_template(np.stack([bandpass(f, reg.filter_low, reg.filter_high) for f in first]), reg)
    if not np.any(template):
        raise MotionError("the template is empty: the first frames hold no structure to register")
    del first
    registrar = _Registrar(template, reg)
    seconds["template"] = time.perf_counter() - t0

    n_keep = int(keep.sum())
    chunks = (min(params.chunk_frames, n_keep), min(params.chunk_tile, h), min(params.chunk_tile, w))
    z = out_array((n_keep, h, w), chunks, params.store_dtype) if out_array is not None else None
    write_lock = threading.Lock()
    stats = SummaryStats(h, w)

    # pass 2: preprocess, register, correct, write, summarize
    def correct(a: int) -> tuple:
        b = min(a + block_raw, n_out * t)
        small, frames = load(a, b)
        j0 = a // t
        k = keep[j0: j0 + len(frames)]
        small, frames = small[k], frames[k]
        shifts = np.empty((len(frames), 2), np.float32)
        patch = np.empty((len(frames), len(registrar.boxes), 2), np.float32) if registrar.boxes else None
        out = np.empty_like(frames)
        for i, f in enumerate(frames):
            filt = bandpass(small[i], reg.filter_low, reg.filter_high)
            shifts[i] = registrar.rigid(filt)
            if patch is not None:
                patch[i] = registrar.patches(filt, tuple(shifts[i]))
        for i, f in enumerate(frames):
            if patch is not None:
                out[i] = registrar.apply_field(f, patch[i])
            else:
                out[i] = shift_frame(f, *shifts[i], border=reg.border)
        if len(out):
            stats.add(out)
            if z is not None:
                p0 = int(out_pos[j0 + np.flatnonzero(k)[0]])
                data = out.astype(params.store_dtype)
                if pre.corruption.action == "drop":
                    with write_lock:
                        z[p0: p0 + len(out)] = data
                else:
                    z[p0: p0 + len(out)] = data
        report(b - a)
        return shifts, patch

    t0 = time.perf_counter()
    parts = _run([dask.delayed(correct)(a) for a in starts], workers)
    seconds["correct"] = time.perf_counter() - t0
    shifts = np.concatenate([p_[0] for p_ in parts])
    patch_shifts = np.concatenate([p_[1] for p_ in parts]) if registrar.boxes else None
    seconds["total"] = time.perf_counter() - t_start
    return MotionResult(
        shifts=shifts, frame_index=(np.flatnonzero(keep) * t).astype(np.int64), corrupted=corrupted,
        template=template, summary=stats.images(), patch_boxes=registrar.boxes, patch_shifts=patch_shifts,
        shape=(n_keep, h, w), seconds=seconds,
    )
