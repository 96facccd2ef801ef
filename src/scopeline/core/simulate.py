"""Synthetic 1-photon miniscope recordings with ground truth.

Follows the generator described in the Minian paper (Dong et al. 2022, eLife 11:e70661, "Generation
of simulated datasets"):

- cells: 2-D Gaussian footprints ``A`` (peak 1) at uniformly random positions, with a per-cell width;
- activity: Bernoulli spikes ``S`` convolved with a double-exponential kernel
  ``h(t) = exp(-t/tau_decay) - exp(-t/tau_rise)`` (normalized to peak 1) gives calcium ``C``;
- background: a static vignetted baseline of the optics ("glow", fixed to the microscope), and in the
  tissue a neuropil fluorescence shadowed by winding blood vessels plus many large Gaussian sources
  whose intensities fluctuate slowly (a doubly smoothed AR(1) process);
- motion: a random-walk translation of the whole field of view, bounded by ``max_shift``;
- noise: additive Gaussian; ``signal_level`` scales the cells' contribution.

The movie, in 8-bit units, is::

    Y(t) = baseline + vignette
           + shift_t[ tissue * (1 - vessel_contrast * vessels) + background(t) + A @ (C(t) + b0) ]
           + noise,    with C and b0 scaled by signal_level * cell_amplitude

Only the tissue moves: the vignette belongs to the optics. Vessels matter for registration as in real
data, where they are the stable texture that every frame shows.

rounded and clipped to uint8. The ground truth stores ``C`` and ``b0`` already multiplied by
``signal_level * cell_amplitude``, so ``A @ (C + b0)`` is the cells' contribution in movie units.
``shifts[t] = (dy, dx)`` is the translation applied to frame ``t`` in pixels: content at ``(y, x)`` of
the reference frame appears at ``(y + dy, x + dx)``; correcting motion means shifting by ``-shifts``.

Everything streams: frames are rendered in chunks and written to disk as they are made, and the
ground truth (``ground_truth.zarr``) is written chunk by chunk, so memory does not grow with the
number of frames.

Artifacts of real recordings (all off by default; :meth:`SimulationParams.realistic` turns every one on
at the strengths measured on the real recordings in ``shared/data`` or, where we have no real data,
at typical values; :data:`ARTIFACTS` lists them, so each can be switched on alone):

- ``line_noise``: horizontal line noise, per-row offsets redrawn every frame (sensor read-out), and
  bursts of strongly striped frames (wireless transmission);
- ``lens``: a circular GRIN-lens field of view fixed to the optics: vignetting inside, dark outside,
  with a soft edge; cells are placed as without a lens, and those outside it are invisible
  (``visible_fraction`` in the ground truth);
- ``defective_pixels``: hot pixels (stuck bright) and dead pixels (stuck at 0);
- ``warmup``: dim and unstable first frames while the LED warms up;
- ``bleaching``: a slow exponential decay of the tissue's and cells' fluorescence;
- ``diffuse``: large out-of-focus sources whose intensity follows the cells around them;
- ``heterogeneous``: cells of different brightness and size.

With artifacts, a frame is::

    Y(t) = baseline + T * (led_t * vignette + gain_t * shift_t[tissue + background(t) + A @ (C(t) + b0)
           + D @ d(t)]) + row_offsets_t + noise,    then hot / dead pixels

with ``T`` the lens transmission, ``gain_t = led_t * bleach_t``, ``D, d`` the diffuse sources. Their
random draws come from a generator of their own, so a recording with every artifact off is the same,
pixel for pixel, as one simulated before artifacts existed.

Layouts written: UCLA Miniscope V4 (default; split ``0.avi, 1.avi ...`` in FFV1, ``metaData.json``,
``timeStamps.csv``, and a session-level ``metaData.json``), Miniscope V3 (``msCam1.avi ...`` and
``timestamp.dat`` with a behaviour camera's rows interleaved), or a multi-page TIFF stack.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import tifffile  # noqa: E402
import zarr  # noqa: E402
from scipy.signal import lfilter  # noqa: E402

__all__ = ["SimulationParams", "ARTIFACTS", "Cells", "View", "make_cells", "simulate", "simulate_sessions",
           "session_alignment", "session_footprints", "load_ground_truth", "true_displacement", "lens_transmission", "add_sensor_artifacts"]

LAYOUTS = ("v4", "v3", "tiff")
DEVICE_FOLDER = "My_V4_Miniscope"
GROUND_TRUTH = "ground_truth.zarr"
_BG_DOWNSAMPLE = 8  # background sources are smooth: rendered on a grid this many times coarser
_OPTIONAL_TRUTH = ("amplitude", "visible_fraction", "row_offsets", "striped", "led", "bleach", "diffuse_C",
                   "diffuse_centers", "diffuse_sigmas", "transmission", "defects")


@dataclass
class SimulationParams:
    """Parameters of a simulated recording (all JSON-serializable; see :meth:`to_json`).

    Attributes
    ----------
    height, width : int
        Frame size in pixels.
    n_frames : int
        Number of frames.
    n_cells : int
        Number of cells.
    signal_level : float
        Scalar on the cells' contribution (Minian paper: 0.2 to 1.8).
    cell_amplitude : float
        Peak of a cell's footprint for calcium 1.0 at ``signal_level`` 1, in 8-bit intensity units.
    cell_baseline : float
        Resting fluorescence of each cell (CNMF's b0) as a fraction of ``cell_amplitude``: cells are
        faintly visible when silent, as GCaMP-expressing neurons are.
    cell_sigma, cell_sigma_sd : float
        Mean and standard deviation of the footprints' Gaussian width (sigma), pixels.
    spike_prob : float
        Probability of a spike per cell per frame (Bernoulli).
    tau_rise, tau_decay : float
        Rise and decay time constants of the calcium kernel, seconds.
    n_background : int
        Number of large fluctuating background sources.
    background_amplitude : float
        Peak of one background source, 8-bit units.
    background_fluctuation : float
        Relative standard deviation of each source's intensity over time.
    background_timescale : float
        Time constant of the background fluctuations, seconds.
    baseline : float
        Static offset of the optics/sensor, 8-bit units.
    vignette : float
        Peak of the static, centred vignetting ("glow") of the optics, 8-bit units; it does not move
        with the tissue.
    tissue_level : float
        Neuropil fluorescence of the tissue, 8-bit units; moves with the tissue.
    n_vessels : int
        Blood vessels: dark, winding lines in the tissue (shadows on the neuropil) that move with it.
    vessel_contrast : float
        Fraction of the tissue fluorescence a vessel's centre removes.
    vessel_width : float
        Vessel width, pixels.
    noise_sd : float
        Standard deviation of the additive Gaussian noise, 8-bit units. The default is the temporal
        noise measured on the real wireless Miniscope recording in ``shared/data`` (5.3 at a
        brightness of 93).
    motion_sd : float
        Standard deviation of the random-walk step of the translation, pixels per frame.
    max_shift : float
        Bound on the translation in each axis, pixels.
    deform : float
        Non-rigid motion: amplitude of a smooth displacement field added to the translation, pixels;
        ``dy = deform * u_t * sin(2 pi x / W)``, ``dx = deform * v_t * sin(2 pi y / H)`` with
        ``u_t, v_t`` bounded random walks in [-1, 1] (0: rigid motion only).
    fps : float
        Frame rate, Hz.
    frames_per_file : int
        Frames per movie file (V4: 1000 by default, like the DAQ software).
    n_dropped : int
        Number of dropped-frame gaps (one missing frame each) put into the timestamps.
    timestamp_jitter : float
        Standard deviation of timestamp jitter, milliseconds.
    seed : int
        Seed of the random generator; the same parameters give the same recording.
    chunk_frames : int
        Frames rendered at once (memory ~ chunk_frames * height * width * 4 bytes * 3).
    line_noise_sd : float
        Horizontal line noise: standard deviation of the per-row offset added to every frame (redrawn
        each frame), 8-bit units (0: off).
    line_noise_rows : float
        Correlation of the row offsets across neighbouring rows: Gaussian smoothing sigma, rows.
    stripe_burst_prob : float
        Probability per frame that a burst of strongly striped frames starts.
    stripe_burst_frames : int
        Frames per burst.
    stripe_burst_sd : float
        Standard deviation of the row offsets in a burst, 8-bit units.
    lens_radius : float
        GRIN lens: radius of the lens disk as a fraction of half the larger frame side (1: inscribed in a
        square frame, corners dark; 0: no lens).
    lens_edge : float
        Width of the lens disk's soft edge, pixels.
    lens_outside : float
        Transmission outside the lens (fraction of the light inside it).
    lens_vignetting : float
        Transmission lost towards the lens edge: ``1 - lens_vignetting * (r / R)^2`` inside.
    hot_pixels, dead_pixels : float
        Fractions of pixels stuck bright (uniform 150-255) or at 0.
    warmup_depth : float
        LED warm-up: the first frames' light is ``1 - warmup_depth * exp(-t / warmup_tau)`` of the
        steady level (0: off).
    warmup_tau : float
        Time constant of the warm-up, seconds.
    warmup_flicker : float
        Relative frame-to-frame flicker of the light during warm-up (decays with the same time constant).
    bleach_tau : float
        Photobleaching: fluorescence decays as ``exp(-t / bleach_tau)``, seconds (0: off).
    diffuse_per_cell : float
        Diffuse out-of-focus sources per cell (0: none).
    diffuse_sigma : float
        Width (Gaussian sigma) of a diffuse source, pixels.
    diffuse_amplitude : float
        Peak of a diffuse source when the cells around it are at a calcium peak, as a fraction of a
        cell's peak.
    cell_brightness_sd : float
        Heterogeneous brightness: standard deviation of the log of each cell's amplitude factor (0: all
        cells equally bright).
    """

    height: int = 256
    width: int = 256
    n_frames: int = 1000
    n_cells: int = 50
    signal_level: float = 1.0
    cell_amplitude: float = 40.0
    cell_baseline: float = 0.2
    cell_sigma: float = 3.0
    cell_sigma_sd: float = 0.4
    spike_prob: float = 0.01
    tau_rise: float = 0.05
    tau_decay: float = 0.3
    n_background: int = 100
    background_amplitude: float = 4.0
    background_fluctuation: float = 0.3
    background_timescale: float = 10.0
    baseline: float = 20.0
    vignette: float = 40.0
    tissue_level: float = 30.0
    n_vessels: int = 8
    vessel_contrast: float = 0.3
    vessel_width: float = 4.0
    noise_sd: float = 5.3
    motion_sd: float = 0.3
    max_shift: float = 8.0
    deform: float = 0.0
    fps: float = 20.0
    frames_per_file: int = 1000
    n_dropped: int = 0
    timestamp_jitter: float = 0.5
    seed: int = 0
    chunk_frames: int = 100
    line_noise_sd: float = 0.0
    line_noise_rows: float = 1.0
    stripe_burst_prob: float = 0.0
    stripe_burst_frames: int = 3
    stripe_burst_sd: float = 15.0
    lens_radius: float = 0.0
    lens_edge: float = 4.0
    lens_outside: float = 0.05
    lens_vignetting: float = 0.3
    hot_pixels: float = 0.0
    dead_pixels: float = 0.0
    warmup_depth: float = 0.0
    warmup_tau: float = 1.0
    warmup_flicker: float = 0.05
    bleach_tau: float = 0.0
    diffuse_per_cell: float = 0.0
    diffuse_sigma: float = 10.0
    diffuse_amplitude: float = 0.5
    cell_brightness_sd: float = 0.0

    def __post_init__(self) -> None:
        checks = {
            "height": self.height >= 16, "width": self.width >= 16, "n_frames": self.n_frames >= 2,
            "n_cells": self.n_cells >= 0, "signal_level": self.signal_level >= 0, "cell_baseline": self.cell_baseline >= 0,
            "cell_sigma": self.cell_sigma > 0, "spike_prob": 0 <= self.spike_prob <= 1,
            "tau_rise": 0 < self.tau_rise < self.tau_decay, "fps": self.fps > 0,
            "frames_per_file": self.frames_per_file >= 1, "noise_sd": self.noise_sd >= 0,
            "motion_sd": self.motion_sd >= 0, "max_shift": self.max_shift >= 0, "deform": self.deform >= 0,
            "n_dropped": 0 <= self.n_dropped <= self.n_frames - 2, "chunk_frames": self.chunk_frames >= 1,
            "n_background": self.n_background >= 0, "n_vessels": self.n_vessels >= 0,
            "vessel_contrast": 0 <= self.vessel_contrast <= 1, "vessel_width": self.vessel_width > 0,
            "line_noise_sd": self.line_noise_sd >= 0, "line_noise_rows": self.line_noise_rows >= 0,
            "stripe_burst_prob": 0 <= self.stripe_burst_prob <= 1, "stripe_burst_frames": self.stripe_burst_frames >= 1,
            "stripe_burst_sd": self.stripe_burst_sd >= 0, "lens_radius": self.lens_radius >= 0,
            "lens_edge": self.lens_edge > 0, "lens_outside": 0 <= self.lens_outside <= 1,
            "lens_vignetting": 0 <= self.lens_vignetting < 1, "hot_pixels": 0 <= self.hot_pixels < 0.1,
            "dead_pixels": 0 <= self.dead_pixels < 0.1, "warmup_depth": 0 <= self.warmup_depth < 1,
            "warmup_tau": self.warmup_tau > 0, "warmup_flicker": self.warmup_flicker >= 0,
            "bleach_tau": self.bleach_tau >= 0, "diffuse_per_cell": self.diffuse_per_cell >= 0,
            "diffuse_sigma": self.diffuse_sigma > 0, "diffuse_amplitude": self.diffuse_amplitude >= 0,
            "cell_brightness_sd": self.cell_brightness_sd >= 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid simulation parameters: {', '.join(f'{b}={getattr(self, b)!r}' for b in bad)}")

    @property
    def has_artifacts(self) -> bool:
        """Whether any artifact of :data:`ARTIFACTS` is on."""
        return any(getattr(self, k) != getattr(_PLAIN, k) for fields in ARTIFACTS.values() for k in fields
                   if k not in _SHARED_FIELDS)

    @classmethod
    def realistic(cls, **overrides) -> "SimulationParams":
        """Parameters with every artifact of :data:`ARTIFACTS` on at its measured strength.

        Parameters
        ----------
        **overrides
            Any field (frame size, cells, signal level, seed ...); they win over the artifacts' values.
        """
        return cls.with_artifacts(list(ARTIFACTS), **overrides)

    @classmethod
    def with_artifacts(cls, names, **overrides) -> "SimulationParams":
        """Parameters with the named artifacts on (keys of :data:`ARTIFACTS`), the others off.

        Raises
        ------
        ValueError
            If a name is not an artifact.
        """
        unknown = [n for n in names if n not in ARTIFACTS]
        if unknown:
            raise ValueError(f"unknown artifact(s) {unknown}: choose from {', '.join(ARTIFACTS)}")
        fields: dict = {}
        for name in names:
            fields.update(ARTIFACTS[name])
        return cls(**{**fields, **overrides})

    def to_json(self) -> str:
        """Return the parameters as a JSON object string."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "SimulationParams":
        """Build parameters from :meth:`to_json` output (unknown keys raise ``TypeError``)."""
        return cls(**json.loads(text))

    @classmethod
    def json_schema(cls) -> dict:
        """JSON Schema of the parameters (the file ``schemas/simulation.schema.json``)."""
        from pydantic import TypeAdapter

        schema = TypeAdapter(cls).json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["additionalProperties"] = False
        schema["description"] = "Parameters of scopeline.core.simulate (units in the class docstring)."
        return schema


#: Artifacts of real 1-photon recordings and the parameters that turn each on at the strength used by
#: :meth:`SimulationParams.realistic`. Measured on ``shared/data`` (see PROVENANCE.md there) where we
#: have real data:
#:
#: - ``line_noise`` (``benchmarks/artifacts.py`` measures it): on the real wireless Miniscope recording
#:   (60 frames, 200 x 200; pairs of consecutive frames not labelled corrupted), the row medians of
#:   frame differences (immune to the slow background) give per-row offsets with a standard deviation
#:   of 4.06 8-bit units per frame, independent from frame to frame (lag-1 correlation of the offsets
#:   -0.01) and correlated over neighbouring rows (0.77 / 0.42 / 0.17 at 1 / 2 / 3 rows; Gaussian
#:   smoothing over 1 row gives 0.77 / 0.36 / 0.09 in the simulator); without them 3.42 of the 5.26
#:   units of per-pixel noise are left, so ``noise_sd`` is 3.5 with line noise on. Bursts of strongly
#:   striped frames (offsets of 15 units, 3 frames, one burst per 200 frames) are assumed: the
#:   frame-to-frame strength there ranges 2.3-5.8 units, and its labelled corrupted frames' rows 5-14.
#: - ``heterogeneous``: on the real CA1 recording's 60 best units (by SNR), footprint width 4.4 +- 1.0 px
#:   (coefficient of variation 0.22: ``cell_sigma_sd`` 0.66 for the 3-px default) and event
#:   amplitudes with a log standard deviation of 0.70, an upper bound (it mixes cells' brightness with
#:   the size of their bursts); 0.4 is used.
#: - assumed, no real data here: the lens (inscribed disk, 4-px edge, 5% light outside, 30% vignetting),
#:   hot / dead pixels (2e-4 / 1e-4 of pixels: none beyond 8 robust standard deviations in the wireless
#:   sample of 40,000 pixels), LED warm-up (half the light at the first frame, 1 s, 5% flicker),
#:   bleaching (time constant 3,000 s: a third of the fluorescence lost in 20 minutes) and diffuse
#:   sources (one per 5 cells, sigma 10 px, half a cell's peak).
ARTIFACTS: dict[str, dict] = {
    "line_noise": {"line_noise_sd": 4.0, "line_noise_rows": 1.0, "noise_sd": 3.5, "stripe_burst_prob": 0.005,
                   "stripe_burst_frames": 3, "stripe_burst_sd": 15.0},
    "lens": {"lens_radius": 1.0, "lens_edge": 4.0, "lens_outside": 0.05, "lens_vignetting": 0.3},
    "defective_pixels": {"hot_pixels": 2e-4, "dead_pixels": 1e-4},
    "warmup": {"warmup_depth": 0.5, "warmup_tau": 1.0, "warmup_flicker": 0.05},
    "bleaching": {"bleach_tau": 3000.0},
    "diffuse": {"diffuse_per_cell": 0.2, "diffuse_sigma": 10.0, "diffuse_amplitude": 0.5},
    "heterogeneous": {"cell_brightness_sd": 0.4, "cell_sigma_sd": 0.66},
}
# fields an artifact shares with the plain simulation (changed, they do not make a recording artifacted)
_SHARED_FIELDS = {"noise_sd", "cell_sigma_sd", "line_noise_rows", "stripe_burst_frames", "stripe_burst_sd",
                  "lens_edge", "lens_outside", "lens_vignetting", "warmup_tau", "warmup_flicker", "diffuse_sigma",
                  "diffuse_amplitude"}
_PLAIN = SimulationParams()


@dataclass
class Cells:
    """A population of cells in reference (world) coordinates.

    Attributes
    ----------
    centers : numpy.ndarray
        float64 (n_cells, 2), (y, x) in pixels.
    sigmas : numpy.ndarray
        float64 (n_cells,), footprint width in pixels.
    ids : numpy.ndarray
        int64 (n_cells,), global cell ids (stable across sessions).
    """

    centers: np.ndarray
    sigmas: np.ndarray
    ids: np.ndarray = field(default=None)

    def __post_init__(self) -> None:
        if self.ids is None:
            self.ids = np.arange(len(self.sigmas), dtype=np.int64)


@dataclass(frozen=True)
class View:
    """Where one session's frame lies in the tissue (world coordinates), for multi-session data.

    A frame point p = (y, x) sees the world point ``q = R(rotation) (p - c) + c + offset + d(p)``: c is
    the frame's centre ((height - 1) / 2, (width - 1) / 2), R turns clockwise on screen for a positive
    angle (:func:`scopeline.core.registration.rotation_matrix`), and d is a mild non-rigid field
    ``deformation * (sin(2 pi x / width + phase[0]), sin(2 pi y / height + phase[1]))`` pixels (tissue and
    lens settling between days). A session with view V_s is thus aligned to a reference session with an
    unrotated, undeformed view V_0 by ``p -> R(rotation) (p - c) + c + (offset - offset_0)`` plus d.

    Attributes
    ----------
    offset : (float, float)
        World position of the frame's top-left corner before rotation, pixels.
    rotation : float
        Degrees.
    deformation : float
        Amplitude of the non-rigid field, pixels.
    phase : (float, float)
        Phases of its two sinusoids, radians.
    """

    offset: tuple = (0.0, 0.0)
    rotation: float = 0.0
    deformation: float = 0.0
    phase: tuple = (0.0, 0.0)

    def _field(self, p: np.ndarray, shape: tuple) -> np.ndarray:
        h, w = shape
        return self.deformation * np.column_stack([np.sin(2 * np.pi * p[:, 1] / w + self.phase[0]),
                                                   np.sin(2 * np.pi * p[:, 0] / h + self.phase[1])])

    def to_world(self, points: np.ndarray, shape: tuple) -> np.ndarray:
        """float64 (n, 2): the world points that frame points (n, 2) of a frame ``shape`` see."""
        from scopeline.core.registration import rotation_matrix

        p = np.asarray(points, np.float64).reshape(-1, 2)
        c = (np.asarray(shape, np.float64) - 1) / 2
        return (p - c) @ rotation_matrix(self.rotation).T + c + np.asarray(self.offset) + self._field(p, shape)

    def to_frame(self, points: np.ndarray, shape: tuple) -> np.ndarray:
        """float64 (n, 2): where world points (n, 2) lie in a frame of ``shape`` (the inverse of
        :meth:`to_world`; the non-rigid part by fixed-point iteration, exact to 1e-6 px for fields under
        a tenth of the frame)."""
        from scopeline.core.registration import rotation_matrix

        q = np.asarray(points, np.float64).reshape(-1, 2)
        c = (np.asarray(shape, np.float64) - 1) / 2
        R = rotation_matrix(self.rotation)
        rigid = q - c - np.asarray(self.offset)
        p = rigid @ R + c  # R is orthogonal: R^-1 = R^T, and (v @ R) = (R^T v) row-wise
        for _ in range(50 if self.deformation else 0):
            new = (rigid - self._field(p, shape)) @ R + c
            if np.abs(new - p).max(initial=0) < 1e-9:
                p = new
                break
            p = new
        return p

    def as_dict(self) -> dict:
        return {"offset": [float(v) for v in self.offset], "rotation": float(self.rotation),
                "deformation": float(self.deformation), "phase": [float(v) for v in self.phase]}


def make_cells(params: SimulationParams, rng: np.random.Generator, extent: tuple[int, int] | None = None,
               margin: float | None = None) -> Cells:
    """Draw cell positions (uniform, ``margin`` pixels from the borders) and widths.

    Parameters
    ----------
    params : SimulationParams
    rng : numpy.random.Generator
    extent : (int, int), optional
        (height, width) of the area to place cells in; default the frame size.
    margin : float, optional
        Distance from the borders, pixels; default ``2 * cell_sigma``.
    """
    h, w = extent or (params.height, params.width)
    m = 2 * params.cell_sigma if margin is None else margin
    centers = np.column_stack([rng.uniform(m, h - m, params.n_cells), rng.uniform(m, w - m, params.n_cells)])
    sigmas = np.clip(rng.normal(params.cell_sigma, params.cell_sigma_sd, params.n_cells), 0.5 * params.cell_sigma, None)
    return Cells(centers, sigmas)


def _footprint(center: tuple[float, float], sigma: float, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Flat pixel indices and values (peak 1) of a Gaussian footprint, cut at 3 sigma."""
    h, w = shape
    r = int(math.ceil(3 * sigma))
    cy, cx = center
    y0, y1 = max(0, int(cy) - r), min(h, int(cy) + r + 2)
    x0, x1 = max(0, int(cx) - r), min(w, int(cx) + r + 2)
    if y0 >= y1 or x0 >= x1:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    val = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    keep = val > np.exp(-4.5)  # 3 sigma
    return (yy[keep] * w + xx[keep]).astype(np.int64), val[keep].astype(np.float32)


def _footprint_matrix(cells: Cells, shape: tuple[int, int], offset: tuple[float, float] = (0.0, 0.0)) -> sp.csr_matrix:
    """Sparse (pixels, cells) matrix of footprints on a canvas of ``shape``, centers moved by ``offset``."""
    rows, cols, vals = [], [], []
    for j, (c, s) in enumerate(zip(cells.centers, cells.sigmas)):
        idx, val = _footprint((c[0] + offset[0], c[1] + offset[1]), s, shape)
        rows.append(idx)
        cols.append(np.full(idx.size, j))
        vals.append(val)
    n_px = shape[0] * shape[1]
    if not rows:
        return sp.csr_matrix((n_px, 0), dtype=np.float32)
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(n_px, len(cells.sigmas)), dtype=np.float32)


# ------------------------------------------------------------------------------ artifacts


def _artifact_rng(params: SimulationParams, k: int) -> np.random.Generator:
    """The random generator of artifact ``k``: independent of the cells' and of the other artifacts', so
    switching artifacts on or off changes nothing else in the recording."""
    return np.random.default_rng([params.seed, 1000 + k])


def lens_transmission(params: SimulationParams) -> np.ndarray:
    """float32 (height, width): the lens' transmission of light, 1 at the centre (``lens_radius`` 0: all 1).

    Inside the disk of radius ``R = lens_radius * max(height, width) / 2`` around the frame centre it
    is ``1 - lens_vignetting * (r / R)^2``; across a soft edge of ``lens_edge`` pixels (a tanh ramp)
    it falls to ``lens_outside``.
    """
    h, w = params.height, params.width
    if params.lens_radius <= 0:
        return np.ones((h, w), np.float32)
    R = params.lens_radius * max(h, w) / 2
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    r = np.hypot(yy - (h - 1) / 2, xx - (w - 1) / 2)
    inside = 1 - params.lens_vignetting * np.minimum(r / R, 1) ** 2
    step = 0.5 * (1 + np.tanh((R - r) / (params.lens_edge / 2)))
    return (inside * step + params.lens_outside * (1 - step)).astype(np.float32)


def _defects(params: SimulationParams, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Defective pixels: int8 (height, width) map (1 hot, -1 dead, 0 good), flat indices of the hot
    pixels and their stuck values (uint8)."""
    rng = _artifact_rng(params, 3)
    n_px = shape[0] * shape[1]
    kind = np.zeros(n_px, np.int8)
    n_hot, n_dead = int(round(params.hot_pixels * n_px)), int(round(params.dead_pixels * n_px))
    picked = rng.choice(n_px, n_hot + n_dead, replace=False) if n_hot + n_dead else np.zeros(0, np.int64)
    kind[picked[:n_hot]] = 1
    kind[picked[n_hot:]] = -1
    values = rng.integers(150, 256, n_hot).astype(np.uint8)
    return kind.reshape(shape), picked[:n_hot], values


class _Artifacts:
    """Per-chunk draws of the time-varying artifacts (row offsets, LED light, bleaching, diffuse sources),
    carrying their state from chunk to chunk."""

    def __init__(self, params: SimulationParams, here: "Cells", canvas: tuple[int, int], pad: int,
                 amplitude: np.ndarray) -> None:
        self.p = params
        self.rows_rng, self.light_rng, self.diffuse_rng = (_artifact_rng(params, k) for k in (1, 2, 4))
        self.burst_left = 0
        self.transmission = lens_transmission(params)
        self.defects, self.hot_idx, self.hot_values = _defects(params, (params.height, params.width))
        self.dead_idx = np.flatnonzero(self.defects.ravel() == -1)
        n_diffuse = int(round(params.diffuse_per_cell * len(here.sigmas)))
        self.diffuse_centers = np.zeros((0, 2))
        self.diffuse_sigmas = np.zeros(0)
        self.D = sp.csr_matrix((canvas[0] * canvas[1], 0), dtype=np.float32)
        self.W = np.zeros((0, len(here.sigmas)))
        if n_diffuse and len(here.sigmas):
            rng = self.diffuse_rng
            around = rng.integers(0, len(here.sigmas), n_diffuse)
            sig = params.diffuse_sigma * rng.uniform(0.8, 1.2, n_diffuse)
            centers = here.centers[around] + rng.normal(0, 1, (n_diffuse, 2)) * sig[:, None] / 2
            self.diffuse_centers, self.diffuse_sigmas = centers, sig
            self.D = _footprint_matrix(Cells(centers, sig), canvas, offset=(pad, pad))
            d = np.linalg.norm(here.centers[None, :, :] - centers[:, None, :], axis=2)
            W = np.exp(-(d**2) / (2 * sig[:, None] ** 2)) * (d < 2 * sig[:, None])
            self.W = W / np.maximum(W.sum(axis=1, keepdims=True), 1e-12)
        self.amplitude = amplitude
        self.diffuse_a = math.exp(-1.0 / (0.5 * params.fps))  # out-of-focus light: 0.5-s smoothing
        self.diffuse_state = np.zeros((len(self.diffuse_sigmas), 1))

    def rows(self, T: int) -> tuple[np.ndarray, np.ndarray]:
        """float32 (T, height) row offsets and bool (T,) frames in a striped burst."""
        p, rng = self.p, self.rows_rng
        burst = np.zeros(T, bool)
        for i in range(T):
            if self.burst_left == 0 and p.stripe_burst_prob and rng.random() < p.stripe_burst_prob:
                self.burst_left = p.stripe_burst_frames
            if self.burst_left:
                burst[i] = True
                self.burst_left -= 1
        sd = np.where(burst, p.stripe_burst_sd, p.line_noise_sd)
        raw = rng.standard_normal((T, p.height))
        if p.line_noise_rows > 0:
            from scipy.ndimage import gaussian_filter1d

            raw = gaussian_filter1d(raw, p.line_noise_rows, axis=1, mode="wrap")
            raw /= max(float(np.sqrt(np.sum(_gauss_kernel(p.line_noise_rows) ** 2))), 1e-12)
        return (raw * sd[:, None]).astype(np.float32), burst

    def light(self, t0: int, T: int) -> tuple[np.ndarray, np.ndarray]:
        """float32 (T,) LED light (warm-up) and photobleaching factors of frames ``t0 .. t0 + T``."""
        p = self.p
        t = np.arange(t0, t0 + T) / p.fps
        flicker = self.light_rng.standard_normal(T)
        led = np.ones(T)
        if p.warmup_depth > 0:
            decay = np.exp(-t / p.warmup_tau)
            led = 1 - p.warmup_depth * decay + p.warmup_flicker * decay * flicker
        bleach = np.exp(-t / p.bleach_tau) if p.bleach_tau > 0 else np.ones(T)
        return led.astype(np.float32), bleach.astype(np.float32)

    def diffuse(self, C: np.ndarray) -> np.ndarray:
        """float32 (sources, T): diffuse sources' intensities, following the cells around each (C in
        movie units, divided by each cell's amplitude), smoothed, scaled by ``diffuse_amplitude``."""
        if not len(self.diffuse_sigmas):
            return np.zeros((0, C.shape[1]), np.float32)
        drive = self.W @ (C / self.amplitude[:, None])
        a = self.diffuse_a
        out, self.diffuse_state = lfilter([1 - a], [1, -a], drive, axis=1, zi=self.diffuse_state)
        return (self.p.diffuse_amplitude * out).astype(np.float32)


def _gauss_kernel(sigma: float) -> np.ndarray:
    r = int(math.ceil(4 * sigma))
    k = np.exp(-np.arange(-r, r + 1) ** 2 / (2 * sigma**2))
    return k / k.sum()


def _visible_fraction(transmission: np.ndarray, centers: np.ndarray, shifts: np.ndarray,
                      inside: float = 0.5) -> np.ndarray:
    """float (cells,): fraction of frames in which a cell's centre (moved by the frame's shift) sees a
    lens transmission of at least ``inside``."""
    from scipy.ndimage import map_coordinates

    if len(centers) == 0:
        return np.zeros(0)
    if np.all(transmission >= inside):
        return np.ones(len(centers))
    step = max(1, len(shifts) // 2000)  # a subsample of frames is plenty for a fraction
    pos = centers[:, None, :] + shifts[None, ::step, :]
    vals = map_coordinates(transmission, [pos[..., 0].ravel(), pos[..., 1].ravel()], order=1, mode="constant",
                           cval=0.0).reshape(len(centers), -1)
    return (vals >= inside).mean(axis=1)


def _vessel_paths(rng: np.random.Generator, extent: tuple[int, int], n: int) -> list[np.ndarray]:
    """Winding vessel centre lines in tissue (world) coordinates, (k, 2) arrays of (y, x) pixels."""
    h, w = extent
    margin = 0.25 * max(h, w)
    paths = []
    for _ in range(n):
        pos = rng.uniform((-margin, -margin), (h + margin, w + margin))
        heading = rng.uniform(0, 2 * np.pi)
        pts = [pos.copy()]
        for _ in range(int(4 * (h + w) / 4)):
            heading += rng.normal(0, 0.12)
            pos = pos + 4.0 * np.array([np.sin(heading), np.cos(heading)])
            pts.append(pos.copy())
        paths.append(np.array(pts))
    return paths


def _render_vessels(paths: list[np.ndarray], origin: tuple[float, float], shape: tuple[int, int],
                    width: float) -> np.ndarray:
    """Vessel mask in [0, 1] on a window of ``shape`` whose top-left corner is at ``origin`` (world)."""
    mask = np.zeros(shape, np.float32)
    scale = 16  # sub-pixel vertex precision for cv2.polylines
    for path in paths:
        local = (path - np.asarray(origin)[None, :])[:, ::-1] * scale  # (x, y)
        cv2.polylines(mask, [np.round(local).astype(np.int32)], False, 1.0,
                      thickness=max(1, int(round(width))), lineType=cv2.LINE_AA, shift=4)
    mask = cv2.GaussianBlur(mask, (0, 0), max(width / 3.0, 0.5))
    return np.clip(mask / max(float(mask.max()), 1e-6), 0, 1) if mask.any() else mask


def _kernel_filters(params: SimulationParams) -> tuple[float, float, float]:
    """AR(1) coefficients of the decay and rise exponentials and the kernel's peak."""
    gd = math.exp(-1.0 / (params.tau_decay * params.fps))
    gr = math.exp(-1.0 / (params.tau_rise * params.fps))
    t = np.arange(0, int(10 * params.tau_decay * params.fps) + 2)
    peak = float(np.max(gd**t - gr**t))
    return gd, gr, peak


class _Writer:
    """Writes frames to the movie files of one layout, switching files every ``frames_per_file``."""

    def __init__(self, layout: str, folder: Path, params: SimulationParams) -> None:
        self.layout, self.folder, self.params = layout, folder, params
        self.frame = 0
        self.files: list[Path] = []
        self._video = None
        self._tiff = None

    def _open(self) -> None:
        p = self.params
        index = len(self.files)
        if self.layout == "tiff":
            path = self.folder / "movie.tif"
            self._tiff = tifffile.TiffWriter(path, bigtiff=p.n_frames * p.height * p.width > 3.5e9)
        else:
            name = f"{index}.avi" if self.layout == "v4" else f"msCam{index + 1}.avi"
            path = self.folder / name
            self._video = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), p.fps,
                                          (p.width, p.height), isColor=False)
            if not self._video.isOpened():
                raise RuntimeError(f"{path}: OpenCV cannot write FFV1 video here")
        self.files.append(path)

    def write(self, frames: np.ndarray) -> None:
        for frame in frames:
            if self.layout == "tiff":
                if self._tiff is None:
                    self._open()
                self._tiff.write(frame, contiguous=True, metadata={"fps": self.params.fps})
            else:
                if self._video is None or self.frame % self.params.frames_per_file == 0:
                    self.close()
                    self._open()
                self._video.write(frame)
            self.frame += 1

    def close(self) -> None:
        if self._video is not None:
            self._video.release()
            self._video = None
        if self._tiff is not None and self.frame >= self.params.n_frames:
            self._tiff.close()
            self._tiff = None


def _timestamps_ms(params: SimulationParams, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Frame times in ms with jitter and ``n_dropped`` one-frame gaps; and the gaps' frame indices."""
    period = 1000.0 / params.fps
    slots = np.arange(params.n_frames, dtype=np.float64)
    dropped_after = np.sort(rng.choice(np.arange(1, params.n_frames - 1), params.n_dropped, replace=False)) \
        if params.n_dropped else np.empty(0, np.int64)
    for i in dropped_after:
        slots[i + 1:] += 1
    jitter = rng.normal(0, params.timestamp_jitter, params.n_frames) if params.timestamp_jitter else 0.0
    jitter = np.clip(jitter, -0.2 * period, 0.2 * period)
    return np.round(slots * period + jitter).astype(np.int64), dropped_after.astype(np.int64)


def _write_v4_metadata(folder: Path, session_folder: Path, params: SimulationParams, start: _dt.datetime,
                       ts_ms: np.ndarray) -> None:
    device = {
        "deviceName": DEVICE_FOLDER, "deviceType": "Miniscope_V4_BNO", "deviceID": 0,
        "deviceDirectory": str(folder), "compression": "FFV1", "frameRate": f"{params.fps:g}FPS",
        "framesPerFile": params.frames_per_file, "gain": "Low", "led0": 12, "ewl": 0,
        "ROI": {"height": params.height, "width": params.width, "leftEdge": 0, "topEdge": 0},
        "simulated": True,
    }
    (folder / "metaData.json").write_text(json.dumps(device, indent=4))
    epoch_ms = int(start.replace(tzinfo=_dt.timezone.utc).timestamp() * 1000)
    session = {
        "animalName": "sim", "researcherName": "scopeline", "experimentName": "simulation",
        "baseDirectory": str(session_folder), "miniscopes": [DEVICE_FOLDER], "cameras": [],
        "recordingStartTime": {"year": start.year, "month": start.month, "day": start.day,
                               "hour": start.hour, "minute": start.minute, "second": start.second,
                               "msec": start.microsecond // 1000, "msecSinceEpoch": epoch_ms},
    }
    (session_folder / "metaData.json").write_text(json.dumps(session, indent=4))
    with open(folder / "timeStamps.csv", "w") as fh:
        fh.write("Frame Number,Time Stamp (ms),Buffer Index\n")
        for i, t in enumerate(ts_ms):
            fh.write(f"{i},{t},{i % 8}\n")


def _write_v3_metadata(folder: Path, params: SimulationParams, ts_ms: np.ndarray) -> None:
    """V3 ``timestamp.dat``: the miniscope (camNum 1) interleaved with a behaviour camera (camNum 0)."""
    with open(folder / "timestamp.dat", "w") as fh:
        fh.write("camNum\tframeNum\tsysClock\tbuffer\n")
        for i, t in enumerate(ts_ms):
            fh.write(f"1\t{i + 1}\t{int(t) if i else 4294967}\t1\n")  # V3 writes junk in the first row
            if i % 2 == 0:
                fh.write(f"0\t{i // 2 + 1}\t{int(t) + 3}\t1\n")
    (folder / "settings_and_notes.dat").write_text(
        "animal\texcitation\tmsCamExposure\trecordLength\nsim\t20\t255\t0\n\n\nelapsedTime\tNote\n"
    )


def simulate(out: str | Path, params: SimulationParams | None = None, *, layout: str = "v4",
             cells: Cells | None = None, view: Optional[View] = None,
             start_time: _dt.datetime | None = None, progress: bool = False,
             world: tuple[int, int] | None = None, tissue_seed: int | None = None) -> Path:
    """Write a simulated recording and its ground truth under ``out``.

    Parameters
    ----------
    out : str or pathlib.Path
        Output folder (created; must be empty or absent).
    params : SimulationParams, optional
        Default ``SimulationParams()``.
    layout : {"v4", "v3", "tiff"}
        File layout to write.
    cells : Cells, optional
        Cells in world coordinates (for multi-session data); drawn from ``params`` when None.
    view : View, optional
        Where this field of view lies in the world (multi-session data); default: the frame is the world.
    start_time : datetime.datetime, optional
        Recording start written to the V4 metadata; default 2026-01-05 10:00:00.
    progress : bool
        Show a progress bar.
    world : (int, int), optional
        Extent of the tissue (multi-session data): vessels are drawn over it. Default: the frame.
    tissue_seed : int, optional
        Seed of the vessels (the same in every session of an animal); default ``params.seed``.

    Returns
    -------
    pathlib.Path
        The folder to ingest: the V4 device folder, the V3 folder, or the TIFF file.

    Raises
    ------
    ValueError
        If ``layout`` is unknown or ``out`` is not empty.

    Notes
    -----
    Ground truth goes to ``out/ground_truth.zarr`` (see :func:`load_ground_truth`): ``A`` (units,
    height, width) float32 peak 1; ``C`` and ``S`` (units, frames) float32 (``C`` in movie units,
    ``S`` in spikes); ``b0`` (units,) float32 resting fluorescence in movie units; ``shifts``
    (frames, 2) float32 (dy, dx) pixels; ``deform`` (frames, 2) float32 amplitudes of the non-rigid
    field (see ``SimulationParams.deform``); ``timestamps`` (frames,) float64
    seconds; ``cell_ids`` (units,) int64; ``centers`` (units, 2) (y, x) pixels; ``baseline`` (height,
    width) float32 static background of the optics; ``tissue`` (height, width) float32 tissue
    fluorescence with vessels at zero shift; ``amplitude`` (units,) float32 each cell's brightness
    factor (in C and b0 already); ``visible_fraction`` (units,) float32 fraction of frames whose lens
    transmission at the cell's (moved) centre is at least 0.5 (1 without a lens); attributes
    ``params`` and ``dropped_after``. With any artifact on, also: ``row_offsets`` (frames, height)
    float32 line noise added, 8-bit units; ``striped`` (frames,) bool frames in a striped burst;
    ``led`` and ``bleach`` (frames,) float32 light and bleaching factors; ``transmission`` (height,
    width) float32 lens transmission; ``defects`` (height, width) int8 (1 hot, -1 dead);
    ``diffuse_C`` (sources, frames), ``diffuse_centers`` (sources, 2), ``diffuse_sigmas`` (sources,).
    """
    params = params or SimulationParams()
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out}: output folder is not empty")
    rng = np.random.default_rng(params.seed)  # one stream, drawn in this order: cells, scene, timing, dynamics
    if cells is None:
        cells = make_cells(params, rng)
    start_time = start_time or _dt.datetime(2026, 1, 5, 10, 0, 0)
    view = view or View()
    here = _cells_in_view(cells, view, params.height, params.width)
    scene = _Scene.make(params, here, rng, view, world, tissue_seed)
    folder, session_folder = _output_folders(out, layout, start_time)
    ts_ms, dropped_after = _timestamps_ms(params, rng)
    truth = _GroundTruth(out, params, here, scene, ts_ms, dropped_after, layout, view)
    dynamics = _Dynamics(params, len(here.sigmas), scene, rng)
    writer = _Writer(layout, folder, params)
    bar = _progress(params.n_frames, progress)
    for t0 in range(0, params.n_frames, params.chunk_frames):
        T = min(params.n_frames, t0 + params.chunk_frames) - t0
        writer.write(_render_chunk(params, scene, truth, dynamics, t0, T, rng))
        bar.update(T)
    writer.close()
    bar.close()
    truth.finish(here)
    if layout == "v4":
        _write_v4_metadata(folder, session_folder, params, start_time, ts_ms)
        return folder
    if layout == "v3":
        _write_v3_metadata(folder, params, ts_ms)
        return folder
    return writer.files[0]


def _cells_in_view(cells: Cells, view: View, h: int, w: int) -> Cells:
    """The cells visible in a field of view (frame h x w seen through ``view``), in its coordinates."""
    local = view.to_frame(cells.centers, (h, w))
    visible = (local[:, 0] > -cells.sigmas) & (local[:, 0] < h + cells.sigmas) & \
              (local[:, 1] > -cells.sigmas) & (local[:, 1] < w + cells.sigmas)
    return Cells(local[visible], cells.sigmas[visible], cells.ids[visible])


@dataclass
class _Scene:
    """What stays put during a recording: the padded canvas the brain moves in, the cells' footprints on
    it, the optics' baseline, the tissue with its vessels, the background sources (at low resolution),
    the cells' brightness and the artifacts' fixed parts."""

    pad: int
    canvas: tuple
    A_canvas: object  # scipy.sparse (canvas pixels, units)
    baseline: np.ndarray  # float (h, w)
    tissue: np.ndarray  # float32 canvas
    low: tuple
    B_low: np.ndarray  # float32 (low pixels, background sources)
    amplitude: np.ndarray  # (units,)
    b0: np.ndarray  # float32 (units,)
    art: Optional["_Artifacts"]

    @classmethod
    def make(cls, params: SimulationParams, here: Cells, rng, view: View, world, tissue_seed) -> "_Scene":
        h, w = params.height, params.width
        pad = int(math.ceil(params.max_shift + params.deform)) + 2
        canvas = (h + 2 * pad, w + 2 * pad)
        A_canvas = _footprint_matrix(here, canvas, offset=(pad, pad))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        baseline = params.baseline + params.vignette * np.exp(
            -((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / (2 * (0.4 * max(h, w)) ** 2))
        tissue_rng = np.random.default_rng(params.seed if tissue_seed is None else tissue_seed)
        paths = _vessel_paths(tissue_rng, world or (h, w), params.n_vessels)
        local = [view.to_frame(path, (h, w)) for path in paths]  # the frame's coordinates, canvas at -pad
        vessels = _render_vessels(local, (-pad, -pad), canvas, params.vessel_width)
        tissue = (params.tissue_level * (1 - params.vessel_contrast * vessels)).astype(np.float32)
        low = (max(2, canvas[0] // _BG_DOWNSAMPLE), max(2, canvas[1] // _BG_DOWNSAMPLE))
        bg_centers = rng.uniform(0, 1, (params.n_background, 2)) * np.asarray(low)
        bg_sigmas = rng.uniform(0.1, 0.25, params.n_background) * max(low)
        ly, lx = np.mgrid[0:low[0], 0:low[1]]
        B_low = np.stack([np.exp(-((ly - c[0]) ** 2 + (lx - c[1]) ** 2) / (2 * s**2)).ravel()
                          for c, s in zip(bg_centers, bg_sigmas)], axis=1).astype(np.float32) \
            if params.n_background else np.zeros((low[0] * low[1], 0), np.float32)
        B_low *= params.background_amplitude
        n_units = len(here.sigmas)
        amplitude = np.exp(_artifact_rng(params, 5).normal(0, params.cell_brightness_sd, n_units)) \
            if params.cell_brightness_sd > 0 else np.ones(n_units)
        art = _Artifacts(params, here, canvas, pad, amplitude) if params.has_artifacts else None
        b0 = (np.full(n_units, params.signal_level * params.cell_amplitude * params.cell_baseline)
              * amplitude).astype(np.float32)
        return cls(pad, canvas, A_canvas, baseline, tissue, low, B_low, amplitude, b0, art)


def _output_folders(out: Path, layout: str, start_time: _dt.datetime) -> tuple[Path, Optional[Path]]:
    """(folder the movie files go to, V4 time folder or None), created."""
    session_folder = out / start_time.strftime("%H_%M_%S") if layout == "v4" else None
    folder = session_folder / DEVICE_FOLDER if layout == "v4" else out
    folder.mkdir(parents=True, exist_ok=True)
    return folder, session_folder


class _GroundTruth:
    """The ground-truth Zarr group (see :func:`simulate`'s Notes), written as the chunks are rendered."""

    def __init__(self, out: Path, params: SimulationParams, here: Cells, scene: _Scene, ts_ms, dropped_after,
                 layout: str, view: View) -> None:
        h, w, n = params.height, params.width, params.n_frames
        n_units, pad = len(here.sigmas), scene.pad
        gt = self.group = zarr.open_group(str(out / GROUND_TRUTH), mode="w")
        tchunk = max(params.chunk_frames, 1000)
        self.A = _zarr_array(gt, "A", shape=(n_units, h, w), chunks=(1, h, w), dtype="float32")
        self.C = _zarr_array(gt, "C", shape=(n_units, n), chunks=(max(n_units, 1), tchunk), dtype="float32")
        self.S = _zarr_array(gt, "S", shape=(n_units, n), chunks=(max(n_units, 1), tchunk), dtype="float32")
        self.shifts = _zarr_array(gt, "shifts", shape=(n, 2), chunks=(tchunk, 2), dtype="float32")
        self.deform = _zarr_array(gt, "deform", shape=(n, 2), chunks=(tchunk, 2), dtype="float32")
        _zarr_array(gt, "b0", data=scene.b0)
        _zarr_array(gt, "amplitude", data=scene.amplitude.astype(np.float32))
        _zarr_array(gt, "timestamps", data=ts_ms / 1000.0)
        _zarr_array(gt, "cell_ids", data=here.ids.astype(np.int64))
        _zarr_array(gt, "centers", data=here.centers.astype(np.float64).reshape(-1, 2))
        _zarr_array(gt, "baseline", data=scene.baseline.astype(np.float32))
        _zarr_array(gt, "tissue", data=scene.tissue[pad:pad + h, pad:pad + w])
        art = scene.art
        if art is not None:
            self.rows = _zarr_array(gt, "row_offsets", shape=(n, h), chunks=(tchunk, h), dtype="float32")
            self.striped = _zarr_array(gt, "striped", shape=(n,), chunks=(tchunk,), dtype="bool")
            self.led = _zarr_array(gt, "led", shape=(n,), chunks=(tchunk,), dtype="float32")
            self.bleach = _zarr_array(gt, "bleach", shape=(n,), chunks=(tchunk,), dtype="float32")
            n_diff = len(art.diffuse_sigmas)
            self.diffuse_C = _zarr_array(gt, "diffuse_C", shape=(n_diff, n), chunks=(max(n_diff, 1), tchunk),
                                         dtype="float32")
            _zarr_array(gt, "diffuse_centers", data=art.diffuse_centers.astype(np.float64).reshape(-1, 2))
            _zarr_array(gt, "diffuse_sigmas", data=art.diffuse_sigmas.astype(np.float64))
            _zarr_array(gt, "transmission", data=art.transmission)
            _zarr_array(gt, "defects", data=art.defects)
        gt.attrs["params"] = json.loads(params.to_json())
        gt.attrs["dropped_after"] = dropped_after.tolist()
        gt.attrs["layout"] = layout
        gt.attrs["fov_offset"] = [float(view.offset[0]), float(view.offset[1])]
        gt.attrs["view"] = view.as_dict()
        A_local = _footprint_matrix(here, (h, w))
        for j in range(n_units):
            self.A[j] = A_local[:, j].toarray().reshape(h, w)
        self.transmission = art.transmission if art is not None else np.ones((h, w), np.float32)

    def finish(self, here: Cells) -> None:
        """The visible fraction of each cell, once every shift is known."""
        _zarr_array(self.group, "visible_fraction", data=_visible_fraction(
            self.transmission, here.centers, np.asarray(self.shifts[...], np.float64)).astype(np.float32))


class _Dynamics:
    """What changes from frame to frame, drawn chunk by chunk from the recording's random stream in a fixed
    order: spikes and calcium, background fluctuations, the brain's translation, the non-rigid field."""

    def __init__(self, params: SimulationParams, n_units: int, scene: _Scene, rng) -> None:
        self.p, self.rng, self.scene = params, rng, scene
        self.gd, self.gr, peak = _kernel_filters(params)
        self.scale = params.signal_level * params.cell_amplitude / peak
        self.zi_d = np.zeros((n_units, 1))
        self.zi_r = np.zeros((n_units, 1))
        self.a_bg = math.exp(-1.0 / (params.background_timescale * params.fps))
        self.bg_state = rng.standard_normal((2, params.n_background))
        self.shift = np.zeros(2)
        self.uv = np.zeros(2)

    def calcium(self, T: int) -> tuple[np.ndarray, np.ndarray]:
        """(C float32, S float64) (units, T): spikes and the double-exponential calcium they give."""
        S = (self.rng.random((len(self.zi_d), T)) < self.p.spike_prob).astype(np.float64)
        cd, self.zi_d = lfilter([1.0], [1.0, -self.gd], S, axis=1, zi=self.zi_d)
        cr, self.zi_r = lfilter([1.0], [1.0, -self.gr], S, axis=1, zi=self.zi_r)
        return ((cd - cr) * self.scale * self.scene.amplitude[:, None]).astype(np.float32), S

    def background(self, T: int) -> np.ndarray:
        """float32 (sources, T): doubly smoothed AR(1) fluctuations of the background sources."""
        p, a = self.p, self.a_bg
        G = np.empty((p.n_background, T), np.float32)
        for i in range(T):
            self.bg_state[0] = a * self.bg_state[0] + math.sqrt(1 - a**2) * self.rng.standard_normal(p.n_background)
            self.bg_state[1] = a * self.bg_state[1] + math.sqrt(1 - a**2) * self.bg_state[0]
            G[:, i] = 1.0 + p.background_fluctuation * self.bg_state[1]
        return G

    def translation(self, T: int) -> np.ndarray:
        """float32 (T, 2): a random walk reflected at ``max_shift``, pixels."""
        p = self.p
        shifts = np.empty((T, 2), np.float32)
        for i in range(T):
            shift = self.shift + self.rng.normal(0, p.motion_sd, 2)
            shift = np.where(np.abs(shift) > p.max_shift, np.sign(shift) * (2 * p.max_shift - np.abs(shift)), shift)
            self.shift = np.clip(shift, -p.max_shift, p.max_shift)  # a step longer than the bound
            shifts[i] = self.shift
        return shifts

    def field(self, T: int) -> np.ndarray:
        """float32 (T, 2): amplitudes of the non-rigid field (zero without ``deform``)."""
        deform = np.zeros((T, 2), np.float32)
        if self.p.deform > 0:
            for i in range(T):
                uv = self.uv + self.rng.normal(0, 0.1, 2)
                self.uv = np.clip(np.where(np.abs(uv) > 1, np.sign(uv) * (2 - np.abs(uv)), uv), -1, 1)
                deform[i] = self.p.deform * self.uv
        return deform


def _render_chunk(params: SimulationParams, scene: _Scene, truth: _GroundTruth, dyn: _Dynamics, t0: int, T: int,
                  rng) -> np.ndarray:
    """uint8 (T, h, w): frames t0 .. t0 + T rendered (their ground truth written)."""
    h, w, pad, canvas, art = params.height, params.width, scene.pad, scene.canvas, scene.art
    t1 = t0 + T
    C, S = dyn.calcium(T)
    truth.C[:, t0:t1] = C
    truth.S[:, t0:t1] = S.astype(np.float32)
    G = dyn.background(T)
    shifts = dyn.translation(T)
    truth.shifts[t0:t1] = shifts
    deform = dyn.field(T)
    truth.deform[t0:t1] = deform
    n_units = len(scene.b0)
    cells_px = (scene.A_canvas @ (C + scene.b0[:, None])).T.reshape(T, *canvas) if n_units \
        else np.zeros((T, *canvas), np.float32)
    if art is not None:
        rows, burst = art.rows(T) if params.line_noise_sd or params.stripe_burst_prob else \
            (np.zeros((T, h), np.float32), np.zeros(T, bool))
        led, bleach = art.light(t0, T)
        dC = art.diffuse(C)
        if len(dC):
            cells_px = cells_px + (art.D @ dC).T.reshape(T, *canvas)
            truth.diffuse_C[:, t0:t1] = dC
        truth.rows[t0:t1], truth.striped[t0:t1], truth.led[t0:t1], truth.bleach[t0:t1] = rows, burst, led, bleach
        glow = (scene.baseline - params.baseline).astype(np.float32)
    bg_low = (scene.B_low @ G).T.reshape(T, *scene.low)
    frames = np.empty((T, h, w), np.uint8)
    noise = rng.standard_normal((T, h, w), dtype=np.float32) * params.noise_sd
    for i in range(T):
        bg = cv2.resize(bg_low[i], (canvas[1], canvas[0]), interpolation=cv2.INTER_CUBIC)
        moved = _move(scene.tissue + bg + cells_px[i], shifts[i], deform[i], params, scene)[pad:pad + h, pad:pad + w]
        if art is None:
            frame = scene.baseline + moved + noise[i]
        else:
            light = led[i] * glow + (led[i] * bleach[i]) * moved
            frame = params.baseline + art.transmission * light + noise[i] + rows[i][:, None]
        frames[i] = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
        if art is not None and (len(art.hot_idx) or len(art.dead_idx)):
            flat = frames[i].reshape(-1)
            flat[art.hot_idx] = art.hot_values
            flat[art.dead_idx] = 0
    return frames


def _move(img: np.ndarray, shift, deform, params: SimulationParams, scene: _Scene) -> np.ndarray:
    """The canvas image moved by the frame's translation (and non-rigid field): content at p goes to
    p + shift + field(p), so the output samples p - shift - field(p); borders reflected."""
    dy, dx = shift
    canvas = scene.canvas
    if params.deform > 0:
        cy_, cx_, wave_y, wave_x = _deform_grids(canvas, scene.pad, params.height, params.width)
        return cv2.remap(img.astype(np.float32), cx_ - dx - deform[1] * wave_x, cy_ - dy - deform[0] * wave_y,
                         cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    M = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(img.astype(np.float32), M, (canvas[1], canvas[0]), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT)


@functools.lru_cache(maxsize=4)
def _deform_grids(canvas: tuple, pad: int, h: int, w: int) -> tuple:
    """Pixel grids of the canvas and the non-rigid field's waves (dy varies along x, dx along y)."""
    cy_, cx_ = np.mgrid[0:canvas[0], 0:canvas[1]].astype(np.float32)
    wave_y = np.sin(2 * np.pi * (cx_ - pad) / w).astype(np.float32)
    wave_x = np.sin(2 * np.pi * (cy_ - pad) / h).astype(np.float32)
    return cy_, cx_, wave_y, wave_x


def _zarr_array(group, name: str, **kwargs):
    """Create an array in a zarr group (zarr 3 ``create_array``; zarr 2, Python 3.10, ``create_dataset``)."""
    if hasattr(group, "create_array"):
        return group.create_array(name, **kwargs)
    return group.create_dataset(name, **kwargs)


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="frame", desc="simulate", disable=not enabled)


def add_sensor_artifacts(movie: np.ndarray, params: SimulationParams) -> tuple[np.ndarray, dict]:
    """The sensor's artifacts of ``params`` (line noise with its striped bursts, hot and dead pixels)
    added to an existing 8-bit movie, such as a real recording, to test that they change nothing.

    Parameters
    ----------
    movie : numpy.ndarray
        uint8 (frames, height, width); not changed.
    params : SimulationParams
        Its ``line_noise_*``, ``stripe_burst_*``, ``hot_pixels``, ``dead_pixels`` and ``seed`` are used
        (the frame size and length are the movie's).

    Returns
    -------
    movie : numpy.ndarray
        uint8 (frames, height, width): with the artifacts, rounded and clipped.
    truth : dict
        ``row_offsets`` float32 (frames, height), ``striped`` bool (frames,), ``defects`` int8 (height,
        width) (1 hot, -1 dead).
    """
    n, h, w = movie.shape
    p = SimulationParams(**{**asdict(params), "n_frames": max(n, 2), "height": max(h, 16), "width": max(w, 16),
                            "n_cells": 0})
    art = _Artifacts(p, Cells(np.zeros((0, 2)), np.zeros(0)), (h, w), 0, np.zeros(0))
    art.defects, art.hot_idx, art.hot_values = _defects(p, (h, w))
    art.dead_idx = np.flatnonzero(art.defects.ravel() == -1)
    out = np.empty_like(movie, dtype=np.uint8)
    offsets = np.zeros((n, h), np.float32)
    striped = np.zeros(n, bool)
    for a in range(0, n, p.chunk_frames):
        b = min(n, a + p.chunk_frames)
        if p.line_noise_sd or p.stripe_burst_prob:
            rows, burst = art.rows(b - a)
            offsets[a:b], striped[a:b] = rows[:, :h], burst
        block = np.clip(np.rint(movie[a:b].astype(np.float32) + offsets[a:b, :, None]), 0, 255).astype(np.uint8)
        flat = block.reshape(len(block), -1)
        flat[:, art.hot_idx] = art.hot_values
        flat[:, art.dead_idx] = 0
        out[a:b] = block
    return out, {"row_offsets": offsets, "striped": striped, "defects": art.defects}


def simulate_sessions(out: str | Path, params: SimulationParams | None = None, n_sessions: int = 3, *,
                      fov_shift: float = 10.0, presence: float = 0.85, max_rotation: float = 0.0,
                      deformation: float = 0.0, progress: bool = False) -> list[Path]:
    """Write several sessions of the same animal: the same cells, the field of view moved each time.

    Cells live on a world canvas larger than the frame; each session sees it through a :class:`View`:
    shifted by a random offset (uniform within ``fov_shift`` pixels of the centre), turned by up to
    ``max_rotation`` degrees about the frame's centre and bent by a non-rigid field of ``deformation``
    pixels (random phases). The first session's view is unrotated and undeformed (the reference of a
    registration). Each cell is present in a session with probability ``presence`` (cells appear and
    disappear). Session ``k`` is written to ``out/session_<k+1>`` with ``params.seed + k`` as its seed,
    in V4 layout, starting one day after the previous one.

    Parameters
    ----------
    out : str or pathlib.Path
        Output folder.
    params : SimulationParams, optional
        Parameters of every session (``n_cells`` counts the world's cells).
    n_sessions : int
        Number of sessions.
    fov_shift : float
        Largest field-of-view offset from the centre, pixels.
    presence : float
        Probability that a cell is present in a given session.
    max_rotation : float
        Largest rotation of a session's field of view, degrees.
    deformation : float
        Amplitude of each later session's non-rigid field, pixels.
    progress : bool
        Show progress bars.

    Returns
    -------
    list of pathlib.Path
        The V4 device folder of each session. Each session's ground truth has ``cell_ids`` (world ids)
        and its ``view`` (and ``fov_offset``); :func:`session_alignment` gives the true transform of a
        session onto the first.
    """
    params = params or SimulationParams()
    rng = np.random.default_rng(params.seed)
    h, w = params.height, params.width
    # room for the largest shift, the corners of the turned frame and the non-rigid field
    margin = fov_shift + 0.5 * math.hypot(h, w) * math.sin(math.radians(max_rotation)) + deformation + 1
    world = (h + int(math.ceil(2 * margin)), w + int(math.ceil(2 * margin)))
    cells = make_cells(params, rng, extent=world, margin=2 * params.cell_sigma)
    out = Path(out)
    folders = []
    for k in range(n_sessions):
        present = rng.random(len(cells.sigmas)) < presence
        subset = Cells(cells.centers[present], cells.sigmas[present], cells.ids[present])
        offset = (margin + rng.uniform(-fov_shift, fov_shift), margin + rng.uniform(-fov_shift, fov_shift))
        turn = float(rng.uniform(-max_rotation, max_rotation))
        phase = tuple(float(v) for v in rng.uniform(0, 2 * np.pi, 2))
        view = View(offset, turn, deformation, phase) if k else View(offset)
        p = SimulationParams(**{**asdict(params), "seed": params.seed + k})
        start = _dt.datetime(2026, 1, 5, 10, 0, 0) + _dt.timedelta(days=k)
        folders.append(simulate(out / f"session_{k + 1}", p, cells=subset, view=view,
                                start_time=start, progress=progress, world=world, tissue_seed=params.seed))
    return folders


def session_alignment(reference: View, view: View) -> tuple[float, tuple[float, float]]:
    """The true rigid transform of a session (seen through ``view``) onto a reference session (an
    unrotated ``reference`` view, as :func:`simulate_sessions`' first): (rotation in degrees, (dy, dx)
    pixels) in :class:`scopeline.core.registration.Alignment`'s convention, leaving out the non-rigid
    part.

    Raises
    ------
    ValueError
        If the reference view is rotated.
    """
    if reference.rotation:
        raise ValueError("the reference view must be unrotated")
    return float(view.rotation), (float(view.offset[0] - reference.offset[0]),
                                  float(view.offset[1] - reference.offset[1]))


def session_footprints(n_cells: int = 300, n_sessions: int = 5, shape: tuple = (256, 320), *,
                       max_rotation: float = 5.0, max_shift: float = 20.0, deformation: float = 0.0,
                       presence: float = 0.85, jitter: float = 0.3, seed: int = 0) -> tuple[list, list, list]:
    """Footprints of the same cells in several sessions of one field of view, with known identities: the
    input of cross-session registration (:mod:`scopeline.core.registration`) without simulating movies.

    Session 0 is the reference; session s sees cell k at T_s^-1(q_k), T_s a rotation of up to
    ``max_rotation`` degrees about the frame's centre and a shift of up to ``max_shift`` pixels, plus a
    mild non-rigid field (``deformation`` pixels of a sinusoid across the frame: tissue and lens
    settling between days), a per-session position jitter (``jitter`` px) and a +-10% change of width;
    each cell is present with probability ``presence``. Footprints are Gaussian (sigma 1.8-2.6 px),
    cells at least 6 px apart.

    Returns
    -------
    (list of Footprints, list of numpy.ndarray, list of tuple)
        Each session's footprints (peak 1), each session's cell ids (int, one per footprint), and each
        session's true (rotation in degrees, (dy, dx) shift in pixels): a session point p maps to the
        reference's R (p - centre) + centre + shift (up to the non-rigid part).
    """
    from scopeline.core.footprints import Footprints
    from scopeline.core.registration import rotation_matrix

    rng = np.random.default_rng(seed)
    h, w = shape
    centre = (np.array(shape, float) - 1) / 2
    pts: list = []
    while len(pts) < n_cells:
        q = rng.uniform([8, 8], [h - 8, w - 8])
        if all(np.hypot(*(q - o)) > 6 for o in pts):
            pts.append(q)
    pts, sigma = np.array(pts), rng.uniform(1.8, 2.6, n_cells)
    yy, xx = np.mgrid[0:h, 0:w]
    sessions, ids, truth = [], [], []
    for s in range(n_sessions):
        theta = 0.0 if s == 0 else float(rng.uniform(-max_rotation, max_rotation))
        shift = np.zeros(2) if s == 0 else rng.uniform(-max_shift, max_shift, 2)
        R = rotation_matrix(theta)
        present = np.flatnonzero(rng.random(n_cells) < presence)
        P = (pts[present] - centre - shift) @ R + centre + rng.normal(0, jitter, (len(present), 2))
        if s and deformation:
            phase = rng.uniform(0, 2 * np.pi, 2)
            P[:, 0] += deformation * np.sin(2 * np.pi * P[:, 1] / w + phase[0])
            P[:, 1] += deformation * np.sin(2 * np.pi * P[:, 0] / h + phase[1])
        inside = (P[:, 0] > 3) & (P[:, 0] < h - 4) & (P[:, 1] > 3) & (P[:, 1] < w - 4)
        present, P = present[inside], P[inside]
        dense = np.zeros((len(present), h, w), np.float32)
        for k, (py, px) in enumerate(P):
            sg = sigma[present[k]] * rng.uniform(0.9, 1.1)
            ys, xs = slice(int(max(0, py - 10)), int(min(h, py + 11))), slice(int(max(0, px - 10)), int(min(w, px + 11)))
            g = np.exp(-((yy[ys, xs] - py) ** 2 + (xx[ys, xs] - px) ** 2) / (2 * sg**2))
            dense[k, ys, xs] = np.where(g >= 0.05, g, 0)
        sessions.append(Footprints.from_dense(dense, pad=1))
        ids.append(present)
        truth.append((theta, shift))
    return sessions, ids, truth


def true_displacement(gt: dict, points: np.ndarray) -> np.ndarray:
    """True displacement (dy, dx) of every frame at given points, rigid plus non-rigid part.

    Parameters
    ----------
    gt : dict
        From :func:`load_ground_truth`.
    points : numpy.ndarray
        float (n_points, 2), (y, x) pixels in the frame.

    Returns
    -------
    numpy.ndarray
        float64 (frames, n_points, 2), pixels.
    """
    p = gt["params"]
    pts = np.asarray(points, np.float64)
    wave_y = np.sin(2 * np.pi * pts[:, 1] / p.width)
    wave_x = np.sin(2 * np.pi * pts[:, 0] / p.height)
    out = np.repeat(gt["shifts"][:, None, :].astype(np.float64), len(pts), axis=1)
    out[..., 0] += gt["deform"][:, 0:1] * wave_y[None]
    out[..., 1] += gt["deform"][:, 1:2] * wave_x[None]
    return out


def load_ground_truth(path: str | Path) -> dict:
    """Read a simulation's ground truth.

    Parameters
    ----------
    path : str or pathlib.Path
        The simulation's output folder, or its ``ground_truth.zarr``.

    Returns
    -------
    dict
        numpy arrays ``A, C, S, b0, shifts, deform, timestamps, cell_ids, centers, baseline, tissue,
        amplitude, visible_fraction, transmission, defects, row_offsets, striped`` and, for recordings with
        artifacts, ``led, bleach, diffuse_C, diffuse_centers, diffuse_sigmas`` (see :func:`simulate`) and ``params`` (SimulationParams), ``dropped_after`` (list of int),
        ``fov_offset``, ``view`` (:class:`View`).
    """
    path = Path(path)
    if path.name != GROUND_TRUTH:
        path = path / GROUND_TRUTH
    if not path.exists():
        raise FileNotFoundError(f"{path}: no ground truth here")
    g = zarr.open_group(str(path), mode="r")
    out = {name: np.asarray(g[name][...]) for name in
           ("A", "C", "S", "b0", "shifts", "deform", "timestamps", "cell_ids", "centers", "baseline", "tissue")}
    for name in _OPTIONAL_TRUTH:
        if name in g:
            out[name] = np.asarray(g[name][...])
    n_units, (n, h, w) = len(out["b0"]), (len(out["timestamps"]), *out["baseline"].shape)
    out.setdefault("amplitude", np.ones(n_units, np.float32))
    out.setdefault("visible_fraction", np.ones(n_units, np.float32))
    out.setdefault("transmission", np.ones((h, w), np.float32))
    out.setdefault("defects", np.zeros((h, w), np.int8))
    out.setdefault("row_offsets", np.zeros((n, h), np.float32))
    out.setdefault("striped", np.zeros(n, bool))
    out["params"] = SimulationParams(**g.attrs["params"])
    out["dropped_after"] = list(g.attrs["dropped_after"])
    out["fov_offset"] = tuple(g.attrs["fov_offset"])
    v = g.attrs.get("view", {"offset": list(out["fov_offset"])})
    out["view"] = View(tuple(v["offset"]), v.get("rotation", 0.0), v.get("deformation", 0.0), tuple(v.get("phase", (0, 0))))
    return out
