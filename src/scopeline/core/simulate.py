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

Layouts written: UCLA Miniscope V4 (default; split ``0.avi, 1.avi ...`` in FFV1, ``metaData.json``,
``timeStamps.csv``, and a session-level ``metaData.json``), Miniscope V3 (``msCam1.avi ...`` and
``timestamp.dat`` with a behaviour camera's rows interleaved), or a multi-page TIFF stack.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import tifffile  # noqa: E402
import zarr  # noqa: E402
from scipy.signal import lfilter  # noqa: E402

__all__ = ["SimulationParams", "Cells", "make_cells", "simulate", "simulate_sessions", "load_ground_truth",
           "true_displacement"]

LAYOUTS = ("v4", "v3", "tiff")
DEVICE_FOLDER = "My_V4_Miniscope"
GROUND_TRUTH = "ground_truth.zarr"
_BG_DOWNSAMPLE = 8  # background sources are smooth: rendered on a grid this many times coarser


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
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid simulation parameters: {', '.join(f'{b}={getattr(self, b)!r}' for b in bad)}")

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
             cells: Cells | None = None, fov_offset: tuple[float, float] = (0.0, 0.0),
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
    fov_offset : (float, float)
        World position (y, x) of this field of view's top-left corner, pixels.
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
    fluorescence with vessels at zero shift; attributes ``params`` and ``dropped_after``.
    """
    params = params or SimulationParams()
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out}: output folder is not empty")
    rng = np.random.default_rng(params.seed)
    if cells is None:
        cells = make_cells(params, rng)
    h, w, n = params.height, params.width, params.n_frames
    start_time = start_time or _dt.datetime(2026, 1, 5, 10, 0, 0)

    # cells visible in this field of view, in its own coordinates
    local = cells.centers - np.asarray(fov_offset)[None, :]
    visible = (local[:, 0] > -cells.sigmas) & (local[:, 0] < h + cells.sigmas) & \
              (local[:, 1] > -cells.sigmas) & (local[:, 1] < w + cells.sigmas)
    here = Cells(local[visible], cells.sigmas[visible], cells.ids[visible])
    n_units = len(here.sigmas)

    pad = int(math.ceil(params.max_shift + params.deform)) + 2
    canvas = (h + 2 * pad, w + 2 * pad)
    A_canvas = _footprint_matrix(here, canvas, offset=(pad, pad))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    baseline = params.baseline + params.vignette * np.exp(
        -((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / (2 * (0.4 * max(h, w)) ** 2))
    tissue_rng = np.random.default_rng(params.seed if tissue_seed is None else tissue_seed)
    paths = _vessel_paths(tissue_rng, world or (h, w), params.n_vessels)
    origin = (fov_offset[0] - pad, fov_offset[1] - pad)
    vessels = _render_vessels(paths, origin, canvas, params.vessel_width)
    tissue = (params.tissue_level * (1 - params.vessel_contrast * vessels)).astype(np.float32)
    low = (max(2, canvas[0] // _BG_DOWNSAMPLE), max(2, canvas[1] // _BG_DOWNSAMPLE))
    bg_centers = rng.uniform(0, 1, (params.n_background, 2)) * np.asarray(low)
    bg_sigmas = rng.uniform(0.1, 0.25, params.n_background) * max(low)
    ly, lx = np.mgrid[0:low[0], 0:low[1]]
    B_low = np.stack([np.exp(-((ly - c[0]) ** 2 + (lx - c[1]) ** 2) / (2 * s**2)).ravel()
                      for c, s in zip(bg_centers, bg_sigmas)], axis=1).astype(np.float32) \
        if params.n_background else np.zeros((low[0] * low[1], 0), np.float32)
    B_low *= params.background_amplitude

    # output structure
    if layout == "v4":
        session_folder = out / start_time.strftime("%H_%M_%S")
        folder = session_folder / DEVICE_FOLDER
    else:
        folder = out
    folder.mkdir(parents=True, exist_ok=True)
    ts_ms, dropped_after = _timestamps_ms(params, rng)

    gt = zarr.open_group(str(out / GROUND_TRUTH), mode="w")
    tchunk = max(params.chunk_frames, 1000)
    z_A = _zarr_array(gt, "A", shape=(n_units, h, w), chunks=(1, h, w), dtype="float32")
    z_C = _zarr_array(gt, "C", shape=(n_units, n), chunks=(max(n_units, 1), tchunk), dtype="float32")
    z_S = _zarr_array(gt, "S", shape=(n_units, n), chunks=(max(n_units, 1), tchunk), dtype="float32")
    z_sh = _zarr_array(gt, "shifts", shape=(n, 2), chunks=(tchunk, 2), dtype="float32")
    z_df = _zarr_array(gt, "deform", shape=(n, 2), chunks=(tchunk, 2), dtype="float32")
    b0 = np.full(n_units, params.signal_level * params.cell_amplitude * params.cell_baseline, np.float32)
    _zarr_array(gt, "b0", data=b0)
    _zarr_array(gt, "timestamps", data=ts_ms / 1000.0)
    _zarr_array(gt, "cell_ids", data=here.ids.astype(np.int64))
    _zarr_array(gt, "centers", data=here.centers.astype(np.float64).reshape(-1, 2))
    _zarr_array(gt, "baseline", data=baseline.astype(np.float32))
    _zarr_array(gt, "tissue", data=tissue[pad:pad + h, pad:pad + w])
    gt.attrs["params"] = json.loads(params.to_json())
    gt.attrs["dropped_after"] = dropped_after.tolist()
    gt.attrs["layout"] = layout
    gt.attrs["fov_offset"] = [float(fov_offset[0]), float(fov_offset[1])]
    A_local = _footprint_matrix(here, (h, w))
    for j in range(n_units):
        z_A[j] = A_local[:, j].toarray().reshape(h, w)

    gd, gr, peak = _kernel_filters(params)
    scale = params.signal_level * params.cell_amplitude / peak
    zi_d = np.zeros((n_units, 1))
    zi_r = np.zeros((n_units, 1))
    a_bg = math.exp(-1.0 / (params.background_timescale * params.fps))
    bg_state = rng.standard_normal((2, params.n_background))
    shift = np.zeros(2)
    uv = np.zeros(2)
    cy_, cx_ = np.mgrid[0:canvas[0], 0:canvas[1]].astype(np.float32)
    wave_y = np.sin(2 * np.pi * (cx_ - pad) / w).astype(np.float32)  # dy varies along x
    wave_x = np.sin(2 * np.pi * (cy_ - pad) / h).astype(np.float32)  # dx varies along y
    writer = _Writer(layout, folder, params)
    bar = _progress(n, progress)
    for t0 in range(0, n, params.chunk_frames):
        t1 = min(n, t0 + params.chunk_frames)
        T = t1 - t0
        S = (rng.random((n_units, T)) < params.spike_prob).astype(np.float64)
        cd, zi_d = lfilter([1.0], [1.0, -gd], S, axis=1, zi=zi_d)
        cr, zi_r = lfilter([1.0], [1.0, -gr], S, axis=1, zi=zi_r)
        C = ((cd - cr) * scale).astype(np.float32)
        z_C[:, t0:t1] = C
        z_S[:, t0:t1] = S.astype(np.float32)
        G = np.empty((params.n_background, T), np.float32)
        for i in range(T):  # doubly smoothed AR(1): slow, smooth fluctuations
            bg_state[0] = a_bg * bg_state[0] + math.sqrt(1 - a_bg**2) * rng.standard_normal(params.n_background)
            bg_state[1] = a_bg * bg_state[1] + math.sqrt(1 - a_bg**2) * bg_state[0]
            G[:, i] = 1.0 + params.background_fluctuation * bg_state[1]
        shifts = np.empty((T, 2), np.float32)
        for i in range(T):
            shift = shift + rng.normal(0, params.motion_sd, 2)
            shift = np.where(np.abs(shift) > params.max_shift, np.sign(shift) * (2 * params.max_shift - np.abs(shift)), shift)
            shift = np.clip(shift, -params.max_shift, params.max_shift)  # a step longer than the bound
            shifts[i] = shift
        z_sh[t0:t1] = shifts
        deform = np.zeros((T, 2), np.float32)
        if params.deform > 0:
            for i in range(T):
                uv = uv + rng.normal(0, 0.1, 2)
                uv = np.clip(np.where(np.abs(uv) > 1, np.sign(uv) * (2 - np.abs(uv)), uv), -1, 1)
                deform[i] = params.deform * uv
        z_df[t0:t1] = deform
        cells_px = (A_canvas @ (C + b0[:, None])).T.reshape(T, *canvas) if n_units \
            else np.zeros((T, *canvas), np.float32)
        bg_low = (B_low @ G).T.reshape(T, *low)
        frames = np.empty((T, h, w), np.uint8)
        noise = rng.standard_normal((T, h, w), dtype=np.float32) * params.noise_sd
        for i in range(T):
            bg = cv2.resize(bg_low[i], (canvas[1], canvas[0]), interpolation=cv2.INTER_CUBIC)
            img = tissue + bg + cells_px[i]
            dy, dx = shifts[i]
            if params.deform > 0:  # content at p moves to p + shift + field(p): sample p - ...
                map_y = cy_ - dy - deform[i, 0] * wave_y
                map_x = cx_ - dx - deform[i, 1] * wave_x
                moved = cv2.remap(img.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REFLECT)
            else:
                M = np.float32([[1, 0, dx], [0, 1, dy]])
                moved = cv2.warpAffine(img.astype(np.float32), M, (canvas[1], canvas[0]), flags=cv2.INTER_LINEAR,
                                       borderMode=cv2.BORDER_REFLECT)
            frame = baseline + moved[pad:pad + h, pad:pad + w] + noise[i]
            frames[i] = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
        writer.write(frames)
        bar.update(T)
    writer.close()
    bar.close()

    if layout == "v4":
        _write_v4_metadata(folder, session_folder, params, start_time, ts_ms)
        return folder
    if layout == "v3":
        _write_v3_metadata(folder, params, ts_ms)
        return folder
    return writer.files[0]


def _zarr_array(group, name: str, **kwargs):
    """Create an array in a zarr group (zarr 3 ``create_array``; zarr 2, Python 3.10, ``create_dataset``)."""
    if hasattr(group, "create_array"):
        return group.create_array(name, **kwargs)
    return group.create_dataset(name, **kwargs)


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="frame", desc="simulate", disable=not enabled)


def simulate_sessions(out: str | Path, params: SimulationParams | None = None, n_sessions: int = 3, *,
                      fov_shift: float = 10.0, presence: float = 0.85, progress: bool = False) -> list[Path]:
    """Write several sessions of the same animal: the same cells, a shifted field of view each time.

    Cells live on a world canvas ``2 * fov_shift`` larger than the frame; each session sees a window
    shifted by a random offset (uniform within ``fov_shift`` pixels of the centre) and each cell is
    active in a session with probability ``presence`` (cells appear and disappear). Session ``k`` is
    written to ``out/session_<k+1>`` with ``params.seed + k`` as its seed, in V4 layout, starting one
    day after the previous one.

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
    progress : bool
        Show progress bars.

    Returns
    -------
    list of pathlib.Path
        The V4 device folder of each session. Each session's ground truth has ``cell_ids`` (world ids)
        and its ``fov_offset`` attribute.
    """
    params = params or SimulationParams()
    rng = np.random.default_rng(params.seed)
    world = (params.height + int(2 * fov_shift), params.width + int(2 * fov_shift))
    cells = make_cells(params, rng, extent=world, margin=2 * params.cell_sigma + fov_shift)
    out = Path(out)
    folders = []
    for k in range(n_sessions):
        present = rng.random(len(cells.sigmas)) < presence
        subset = Cells(cells.centers[present], cells.sigmas[present], cells.ids[present])
        offset = (fov_shift + rng.uniform(-fov_shift, fov_shift), fov_shift + rng.uniform(-fov_shift, fov_shift))
        p = SimulationParams(**{**asdict(params), "seed": params.seed + k})
        start = _dt.datetime(2026, 1, 5, 10, 0, 0) + _dt.timedelta(days=k)
        folders.append(simulate(out / f"session_{k + 1}", p, cells=subset, fov_offset=offset,
                                start_time=start, progress=progress, world=world, tissue_seed=params.seed))
    return folders


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
        numpy arrays ``A, C, S, b0, shifts, deform, timestamps, cell_ids, centers, baseline, tissue`` (see
        :func:`simulate`) and ``params`` (SimulationParams), ``dropped_after`` (list of int),
        ``fov_offset``.
    """
    path = Path(path)
    if path.name != GROUND_TRUTH:
        path = path / GROUND_TRUTH
    if not path.exists():
        raise FileNotFoundError(f"{path}: no ground truth here")
    g = zarr.open_group(str(path), mode="r")
    out = {name: np.asarray(g[name][...]) for name in
           ("A", "C", "S", "b0", "shifts", "deform", "timestamps", "cell_ids", "centers", "baseline", "tissue")}
    out["params"] = SimulationParams(**g.attrs["params"])
    out["dropped_after"] = list(g.attrs["dropped_after"])
    out["fov_offset"] = tuple(g.attrs["fov_offset"])
    return out
