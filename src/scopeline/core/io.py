"""Reading miniscope recordings: layout discovery, validation, timing, and a lazy movie reader.

Supported layouts
-----------------
UCLA Miniscope V4 (Miniscope-DAQ-QT-Software)::

    session_folder/                  e.g. 2026_11_21/  (optional)
        13_45_00/                    time folder, one per recording
            metaData.json            session-level: recordingStartTime, miniscopes, cameras
            My_V4_Miniscope/         device folder
                0.avi 1.avi ...      movie files, concatenated in numeric order
                metaData.json        device settings (deviceType, frameRate, gain, led0, ...)
                timeStamps.csv       "Frame Number,Time Stamp (ms),Buffer Index"
            My_WebCam/               behaviour camera: ignored

UCLA Miniscope V3 (Miniscope DAQ 1.x)::

    folder/  msCam1.avi msCam2.avi ...  timestamp.dat  settings_and_notes.dat  (behavCam*.avi)

``timestamp.dat`` is tab-separated with a ``camNum frameNum sysClock buffer`` header; the camera whose
frame count matches the msCam files is the miniscope. The first frame's ``sysClock`` is not
meaningful in V3 files and is replaced when it is inconsistent (see :func:`read_v3_timestamps`).

TIFF stacks (one multi-page file, or a folder of them in numeric order) and plain AVI folders have no
acquisition clock: their timestamps are ``arange(n_frames) / fps`` with ``fps`` given by the user,
the file's own metadata (ImageJ ``finterval``; AVI header), in that order.

Timing
------
Timestamps are seconds on the acquisition's own clock. Intervals longer than 1.5 median intervals
are dropped-frame gaps, and ``round(gap / median) - 1`` frames are counted as dropped for each; the
frame rate is the inverse of the mean of the other (regular) intervals.

Each format is one class of :mod:`scopeline.core.formats` (discovery, file validation, timing, device
metadata); :func:`discover` and :func:`read_metadata` walk its registry. Every function that reads the
disk raises :class:`RecordingError` naming the file and the problem.
No function here loads a whole movie: :func:`load_movie` returns a lazy dask array chunked by frames.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # our own errors say what went wrong
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

import cv2  # noqa: E402
import dask  # noqa: E402
import dask.array as da  # noqa: E402
import numpy as np  # noqa: E402
import tifffile  # noqa: E402
from scopeline.errors import ScopelineError  # noqa: E402

__all__ = [
    "RecordingError",
    "MovieFile",
    "RecordingSource",
    "RecordingMetadata",
    "natural_key",
    "discover",
    "movie_kind",
    "READERS",
    "read_metadata",
    "probe_avi",
    "probe_tiff",
    "read_v4_timestamps",
    "read_v3_timestamps",
    "frame_timing",
    "load_movie",
    "close_video_readers",
]

TIFF_SUFFIXES = (".tif", ".tiff")
AVI_SUFFIXES = (".avi",)
V4_TIMESTAMPS = "timeStamps.csv"
V3_TIMESTAMPS = "timestamp.dat"
METADATA = "metaData.json"
DROP_FACTOR = 1.5  # an interval longer than this many median intervals is a dropped-frame gap
CHUNK_BYTES = 32 * 2**20  # target size of one lazy chunk of frames


class RecordingError(ScopelineError, ValueError):
    """A recording on disk is missing, unreadable or inconsistent; the message names the file."""


@dataclass(frozen=True)
class MovieFile:
    """One movie file of a recording.

    Attributes
    ----------
    path : pathlib.Path
        Absolute path of the file.
    n_frames : int
        Number of frames it holds.
    kind : str
        How to read it: a key of :data:`READERS` (``"avi"``, ``"tiff"``, or a registered format's).
    """

    path: Path
    n_frames: int
    kind: str


@dataclass
class RecordingSource:
    """A recording found on disk, before its files are read.

    Attributes
    ----------
    system : {"miniscope_v4", "miniscope_v3", "tiff", "avi"}
        Acquisition system / layout.
    folder : pathlib.Path
        The recording folder (the V4 device folder; the V3 folder; the TIFF/AVI folder). For a single
        movie file given directly, the file itself.
    files : list of pathlib.Path
        Movie files in numeric order.
    timestamps_file : pathlib.Path or None
        ``timeStamps.csv`` (V4) or ``timestamp.dat`` (V3).
    """

    system: str
    folder: Path
    files: list[Path]
    timestamps_file: Path | None = None


@dataclass
class RecordingMetadata:
    """What ingestion learns of a recording, validated.

    Attributes
    ----------
    source : RecordingSource
        Where it came from.
    files : list of MovieFile
        Movie files in numeric order with their frame counts.
    n_frames, height, width : int
        Movie shape in frames and pixels.
    dtype : str
        Pixel dtype (``"uint8"`` for Miniscope videos).
    timestamps : numpy.ndarray
        float64 (n_frames,), seconds on the acquisition clock.
    fps : float
        Frame rate in Hz, measured from ``timestamps`` (mean regular interval, see frame_timing).
    nominal_fps : float or None
        Frame rate set on the device (or in the file header), Hz.
    timing_source : {"acquisition_clock", "nominal"}
        Whether ``timestamps`` came from the acquisition or from a frame rate.
    dropped_after : numpy.ndarray
        int64, indices of frames followed by a dropped-frame gap.
    n_dropped_frames : int
        Number of frames missing in those gaps.
    start_time : datetime.datetime or None
        Recording start (local time of the acquisition computer) when the metadata has it.
    device : dict
        Device settings as found in the metadata files (JSON-serializable).
    """

    source: RecordingSource
    files: list[MovieFile]
    n_frames: int
    height: int
    width: int
    dtype: str
    timestamps: np.ndarray
    fps: float
    nominal_fps: float | None
    timing_source: str
    dropped_after: np.ndarray
    n_dropped_frames: int
    start_time: _dt.datetime | None = None
    device: dict = field(default_factory=dict)

    @property
    def duration(self) -> float:
        """Seconds from the first to the last frame plus one frame interval."""
        return float(self.timestamps[-1] - self.timestamps[0] + 1.0 / self.fps)

    def movie(self, chunk_frames: int | None = None) -> da.Array:
        """Return the movie as a lazy dask array, see :func:`load_movie`."""
        return load_movie(self.files, (self.height, self.width), self.dtype, chunk_frames)


# ----------------------------------------------------------------------------------------- layout


def natural_key(path: str | Path) -> tuple:
    """Sort key that orders ``2.avi`` before ``10.avi`` and ``msCam2`` before ``msCam10``."""
    name = Path(path).name
    return tuple(int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name))


def listing(folder: Path, suffixes: tuple[str, ...], prefix: str = "") -> list[Path]:
    return sorted(
        (p for p in folder.iterdir()
         if p.is_file() and p.suffix.lower() in suffixes and p.name.startswith(prefix)),
        key=natural_key,
    )


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RecordingError(f"{path}: unreadable {path.name} ({err})") from err
    if not isinstance(data, dict):
        raise RecordingError(f"{path}: unreadable {path.name} (expected a JSON object)")
    return data


def v4_device_avis(folder: Path) -> list[Path]:
    return [p for p in listing(folder, AVI_SUFFIXES) if p.stem.isdigit()]


def _folder_names(names) -> set[str]:
    """Device names as the V4 DAQ writes them in metaData.json, and as folder names (spaces -> '_')."""
    if not isinstance(names, list):
        return set()
    return {str(n) for n in names} | {str(n).replace(" ", "_") for n in names}


def _json_or_empty(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def is_v4_device(folder: Path) -> bool:
    """A V4 DAQ device folder (miniscope or behaviour camera): numbered AVIs plus its metadata."""
    has_meta = (folder / METADATA).is_file() or (folder / V4_TIMESTAMPS).is_file()
    return has_meta and bool(v4_device_avis(folder))


def is_v4_miniscope(folder: Path) -> bool:
    """A V4 device folder holding a miniscope (not a behaviour camera).

    Decided by the session-level ``metaData.json`` (``miniscopes`` / ``cameras`` lists, whose device
    names the DAQ turns into folder names by replacing spaces with underscores), else by the device's
    ``deviceType``, else by the folder name (no ``cam`` in it).
    """
    if not is_v4_device(folder):
        return False
    session = _json_or_empty(folder.parent / METADATA)
    if folder.name in _folder_names(session.get("miniscopes")):
        return True
    if folder.name in _folder_names(session.get("cameras")):
        return False
    device_type = str(_json_or_empty(folder / METADATA).get("deviceType", ""))
    if device_type:
        return "miniscope" in device_type.lower()
    return "cam" not in folder.name.lower()


def _source_in(folder: Path) -> RecordingSource | None:
    """The recording held directly in ``folder``: the first format of :data:`scopeline.core.formats.FORMATS`
    that claims it, if any."""
    from scopeline.core import formats

    return next((src for fmt in formats.FORMATS if (src := fmt.source_in(folder)) is not None), None)


def discover(path: str | Path) -> list[RecordingSource]:
    """Find the recordings at ``path``.

    Parameters
    ----------
    path : str or pathlib.Path
        A movie file (.tif/.tiff/.avi), a recording folder, or a folder above recording folders (a V4
        session or time folder); sub-folders are searched in numeric order.

    Returns
    -------
    list of RecordingSource
        One per recording, in numeric folder order.

    Raises
    ------
    RecordingError
        If ``path`` does not exist, is an unsupported file, or holds no recording.
    """
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise RecordingError(f"{path}: no such file or folder")
    if path.is_file():
        from scopeline.core import formats

        for fmt in formats.FORMATS:
            source = fmt.source_for_file(path)
            if source is not None:
                return [source]
        suffixes = sorted({x for fmt in formats.FORMATS for x in fmt.suffixes})
        raise RecordingError(f"{path}: not a recording (expected {', '.join(suffixes)})")
    found: list[RecordingSource] = []
    here = _source_in(path)
    if here is not None:
        return [here]
    for sub in sorted((p for p in path.iterdir() if p.is_dir() and p.suffix != ".zarr"), key=natural_key):
        try:
            found.extend(discover(sub))
        except RecordingError:
            continue
    if not found:
        raise RecordingError(
            f"{path}: no recording found (looked for a Miniscope V4 device folder with numbered .avi "
            f"files, Miniscope V3 msCam*.avi, .tif/.tiff stacks or .avi files, also in sub-folders)"
        )
    return found


# ------------------------------------------------------------------------------------ movie files


def probe_avi(path: Path) -> tuple[int, int, int, float]:
    """Return ``(n_frames, height, width, fps)`` of an AVI, checking that it is complete.

    The frame count comes from the container; the first and the last frame are decoded, so a
    truncated file (whose header promises more frames than it holds) is detected.

    Raises
    ------
    RecordingError
        If the file cannot be opened, holds no frame, or is truncated/corrupt.
    """
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise RecordingError(f"{path}: cannot be opened as a video (corrupt or not a video file)")
        cap.set(cv2.CAP_PROP_CONVERT_RGB, 0)
        n_frames = int(round(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        ok, frame = cap.read()
        if not ok or frame is None or n_frames < 1:
            raise RecordingError(f"{path}: no decodable frame (corrupt or empty video)")
        height, width = frame.shape[:2]
        if n_frames > 1:
            cap.set(cv2.CAP_PROP_POS_FRAMES, n_frames - 1)
            ok, last = cap.read()
            if not ok or last is None or last.shape[:2] != (height, width):
                raise RecordingError(
                    f"{path}: truncated or corrupt: the header lists {n_frames} frames but frame "
                    f"{n_frames - 1} cannot be decoded"
                )
        return n_frames, int(height), int(width), fps
    finally:
        cap.release()


def probe_tiff(path: Path) -> tuple[int, int, int, str, float | None]:
    """Return ``(n_frames, height, width, dtype, fps_or_None)`` of a TIFF stack.

    The frame rate comes from ImageJ's ``finterval`` or an ``fps`` entry of the description, if any.
    RGB images (a samples axis) and stacks of more than 3 dimensions are refused.

    Raises
    ------
    RecordingError
        If the file is not a readable TIFF or is not a grayscale stack.
    """
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape, dtype, axes = tuple(series.shape), str(series.dtype), series.axes
            meta = dict(tif.imagej_metadata or {})
            if tif.shaped_metadata:  # tifffile's own JSON description (scopeline's simulator writes fps)
                meta.update(tif.shaped_metadata[0])
    except Exception as err:  # tifffile raises many types for broken files
        raise RecordingError(f"{path}: unreadable TIFF ({err})") from err
    if not axes.endswith("YX") or "S" in axes or len(shape) not in (2, 3):
        raise RecordingError(
            f"{path}: expected a grayscale stack (frames, height, width), got shape {shape} with axes {axes!r}"
        )
    if len(shape) == 2:
        shape = (1, *shape)
    fps = None
    finterval = meta.get("finterval")
    if finterval:
        fps = 1.0 / float(finterval)
    elif meta.get("fps"):
        fps = float(meta["fps"])
    return shape[0], shape[1], shape[2], dtype, fps


def _open_video(path: str) -> "cv2.VideoCapture":
    """A video reader decoding on one thread: blocks are read in parallel already, and FFmpeg's own
    threads then cost more CPU than they save (FFV1 at 512 x 512: 4.9 instead of 5.2 ms per frame).
    Falls back to FFmpeg's default where this OpenCV build lacks the property."""
    n_threads = getattr(cv2, "CAP_PROP_N_THREADS", None)
    if n_threads is not None:
        cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG, [n_threads, 1])
        if cap.isOpened():
            return cap
    return cv2.VideoCapture(path)


class _VideoReaders:
    """Open video readers kept where they stopped, so that the next block of the same file continues
    without seeking.

    OpenCV's frame-accurate seek decodes the 16 frames before the target (measured 70-100 ms per seek
    on a 512 x 512 FFV1 file, 0.7-1 ms per frame of a 100-frame block: a fifth of decoding). Blocks
    processed in order by a few workers mostly start where another block ended, so a reader left at
    frame ``b`` serves the block ``[b, ...)`` with no seek, and one a few frames behind skips forward by
    decoding them. At most ``max_idle`` readers stay open per process; a file changed on disk (size or
    modification time) is not read through a reader opened before the change.
    """

    skip = 16  # frames decoded forward instead of seeking (OpenCV's seek decodes as many)

    def __init__(self, max_idle: int = 8) -> None:
        self.max_idle = max_idle
        self._lock = threading.Lock()
        self._idle: list[tuple[tuple, int, cv2.VideoCapture]] = []  # (file key, next frame, reader)

    @staticmethod
    def _key(path: str) -> tuple:
        st = os.stat(path)
        return path, st.st_size, st.st_mtime_ns

    def take(self, path: str, start: int) -> tuple[tuple, cv2.VideoCapture]:
        """A reader of ``path`` whose next frame is ``start``."""
        try:
            key = self._key(path)
        except OSError as err:
            raise RecordingError(f"{path}: cannot be opened ({err})") from err
        with self._lock:
            near = [i for i, (k, pos, _) in enumerate(self._idle) if k == key and 0 <= start - pos <= self.skip]
            found = self._idle.pop(min(near, key=lambda i: start - self._idle[i][1])) if near else None
        if found is not None:
            _, pos, cap = found
            for _ in range(start - pos):
                if not cap.grab():
                    cap.release()
                    raise RecordingError(f"{path}: frame {pos} cannot be decoded")
                pos += 1
            return key, cap
        cap = _open_video(path)
        if not cap.isOpened():
            raise RecordingError(f"{path}: cannot be opened (missing, moved, or not mounted?)")
        cap.set(cv2.CAP_PROP_CONVERT_RGB, 0)
        if start:
            cap.set(cv2.CAP_PROP_POS_FRAMES, start)
        return key, cap

    def give(self, key: tuple, position: int, cap: cv2.VideoCapture) -> None:
        """Keep a reader whose next frame is ``position`` (the oldest idle one is closed beyond ``max_idle``)."""
        with self._lock:
            self._idle.append((key, position, cap))
            old = self._idle[: -self.max_idle] if len(self._idle) > self.max_idle else []
            del self._idle[: len(old)]
        for _, _, c in old:
            c.release()

    def clear(self) -> None:
        """Close every idle reader."""
        with self._lock:
            idle, self._idle = self._idle, []
        for _, _, c in idle:
            c.release()


_VIDEO_READERS = _VideoReaders()


def close_video_readers() -> None:
    """Close the video readers this process keeps open between blocks (see ``_VideoReaders``); the
    motion stage calls it when it ends, so no file stays open after it."""
    _VIDEO_READERS.clear()

if hasattr(os, "register_at_fork"):  # a forked worker must not share its parent's decoders
    os.register_at_fork(after_in_child=lambda: _VIDEO_READERS._idle.clear())


def _read_avi(path: str, start: int, stop: int, height: int, width: int, dtype: str) -> np.ndarray:
    out = np.empty((stop - start, height, width), dtype=dtype)
    key, cap = _VIDEO_READERS.take(path, start)
    try:
        for i in range(stop - start):
            ok, frame = cap.read()
            if not ok or frame is None:
                raise RecordingError(f"{path}: frame {start + i} cannot be decoded")
            if frame.ndim == 3:
                frame = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            out[i] = frame
    except BaseException:
        cap.release()
        raise
    _VIDEO_READERS.give(key, stop, cap)
    return out


def _read_tiff(path: str, start: int, stop: int, height: int, width: int, dtype: str) -> np.ndarray:
    try:
        with tifffile.TiffFile(path) as tif:
            if len(tif.pages) >= stop:  # one page per frame: read just these pages
                arr = tif.asarray(key=range(start, stop))
            else:  # frames stored contiguously in few pages (ImageJ hyperstack): memory-map them
                try:
                    arr = tifffile.memmap(path, mode="r")
                except ValueError:  # compressed: no way around decoding the series
                    arr = tif.series[0].asarray()
                arr = arr.reshape(-1, height, width)[start:stop]
            return np.ascontiguousarray(arr.reshape(stop - start, height, width), dtype=dtype)
    except RecordingError:
        raise
    except Exception as err:  # missing file, broken pages: name the file
        raise RecordingError(f"{path}: frames {start}-{stop - 1} cannot be read ({err})") from err


#: movie-file kind -> reader ``(path, start, stop, height, width, dtype) -> frames``; a format with its own
#: files adds its reader (:func:`scopeline.core.formats.register`)
READERS = {"avi": _read_avi, "tiff": _read_tiff}


def load_movie(
    files: Sequence[MovieFile],
    frame_shape: tuple[int, int],
    dtype: str,
    chunk_frames: int | None = None,
) -> da.Array:
    """Return the concatenated movie of ``files`` as a lazy dask array.

    Parameters
    ----------
    files : sequence of MovieFile
        Movie files in order, with their frame counts.
    frame_shape : (int, int)
        (height, width) in pixels.
    dtype : str
        Pixel dtype.
    chunk_frames : int, optional
        Frames per chunk. Default: about 32 MiB per chunk. Chunks never span two files.

    Returns
    -------
    dask.array.Array
        Shape (frames, height, width), ``dtype``; nothing is read until computed, and each chunk
        reads only its own frames.
    """
    height, width = frame_shape
    if chunk_frames is None:
        chunk_frames = max(1, CHUNK_BYTES // (height * width * np.dtype(dtype).itemsize))
    blocks = []
    for f in files:
        reader = READERS[f.kind]
        for start in range(0, f.n_frames, chunk_frames):
            stop = min(start + chunk_frames, f.n_frames)
            block = dask.delayed(reader, pure=True)(str(f.path), start, stop, height, width, dtype)
            blocks.append(da.from_delayed(block, shape=(stop - start, height, width), dtype=dtype))
    if not blocks:
        raise RecordingError("no frames to load")
    return da.concatenate(blocks, axis=0)


# ------------------------------------------------------------------------------------------ timing


def read_v4_timestamps(path: Path) -> np.ndarray:
    """Read a V4 ``timeStamps.csv`` and return float64 seconds (one per frame, in file order).

    Raises
    ------
    RecordingError
        If the file is missing, lacks the ``Time Stamp (ms)`` column, or has unparsable rows.
    """
    if not path.is_file():
        raise RecordingError(f"{path}: missing {path.name} (needed for frame timing)")
    try:
        with open(path, newline="") as fh:
            header = [h.strip() for h in fh.readline().split(",")]
            if "Time Stamp (ms)" not in header:
                raise RecordingError(f"{path}: no 'Time Stamp (ms)' column in header {header}")
            col = header.index("Time Stamp (ms)")
            values = []
            for lineno, line in enumerate(fh, start=2):
                if not line.strip():
                    continue
                try:
                    values.append(float(line.split(",")[col]))
                except (IndexError, ValueError) as err:
                    raise RecordingError(f"{path}: line {lineno} unparsable: {line.strip()!r}") from err
    except (OSError, UnicodeDecodeError) as err:
        raise RecordingError(f"{path}: unreadable ({err})") from err
    return np.asarray(values, dtype=np.float64) / 1000.0


def read_v3_timestamps(path: Path, n_frames: int) -> tuple[np.ndarray, int]:
    """Read a V3 ``timestamp.dat``; return (seconds of the miniscope camera, its camNum).

    The miniscope is the camera whose frame count equals ``n_frames`` (the msCam files'); the first
    frame's ``sysClock`` is replaced by ``max(0, t[1] - median interval)`` when it is negative or
    later than the second frame's (the V3 DAQ writes an undefined value there).

    Raises
    ------
    RecordingError
        If the file is missing or unparsable, or no camera has ``n_frames`` frames.
    """
    if not path.is_file():
        raise RecordingError(f"{path}: missing {path.name} (needed for frame timing)")
    try:
        table = np.genfromtxt(path, delimiter="\t", names=True, dtype=np.float64)
    except (OSError, ValueError) as err:
        raise RecordingError(f"{path}: unparsable ({err})") from err
    table = np.atleast_1d(table)
    if table.dtype.names is None or not {"camNum", "sysClock"} <= set(table.dtype.names):
        raise RecordingError(f"{path}: expected columns camNum and sysClock")
    cams, counts = np.unique(table["camNum"], return_counts=True)
    matches = cams[counts == n_frames]
    if matches.size == 0:
        listing = ", ".join(f"camera {int(c)}: {n}" for c, n in zip(cams, counts))
        raise RecordingError(
            f"{path}: no camera has {n_frames} timestamps to match the msCam files ({listing})"
        )
    if matches.size > 1:
        raise RecordingError(
            f"{path}: cameras {[int(c) for c in matches]} all have {n_frames} timestamps; "
            "cannot tell which one is the miniscope"
        )
    cam = int(matches[0])
    ts = table["sysClock"][table["camNum"] == cam] / 1000.0
    if ts.size > 2 and (ts[0] < 0 or ts[0] > ts[1]):
        ts[0] = max(0.0, ts[1] - float(np.median(np.diff(ts[1:]))))
    return ts, cam


def frame_timing(timestamps: np.ndarray, where: str) -> tuple[float, np.ndarray, int]:
    """Measure frame rate and dropped frames from timestamps.

    Parameters
    ----------
    timestamps : numpy.ndarray
        float64 (n_frames,), seconds.
    where : str
        File named in errors.

    Returns
    -------
    fps : float
        1 / mean of the regular frame intervals (those not longer than 1.5 median intervals), Hz.
        The mean, not the median, because acquisition clocks often tick in whole milliseconds
        (a 30 Hz V4 recording has intervals of 33 and 34 ms).
    dropped_after : numpy.ndarray
        int64 indices of frames followed by a gap longer than 1.5 median intervals.
    n_dropped : int
        Frames missing in those gaps (``round(gap / median) - 1`` each).

    Raises
    ------
    RecordingError
        If timestamps are non-finite, decrease, or are too few to measure an interval.
    """
    if timestamps.size < 2:
        raise RecordingError(f"{where}: at least 2 frames are needed to measure the frame rate")
    if not np.all(np.isfinite(timestamps)):
        raise RecordingError(f"{where}: non-finite timestamps at frames {np.flatnonzero(~np.isfinite(timestamps))[:10].tolist()}")
    dt = np.diff(timestamps)
    if np.any(dt <= 0):
        bad = np.flatnonzero(dt <= 0)[:10].tolist()
        raise RecordingError(f"{where}: timestamps do not increase after frames {bad}")
    median = float(np.median(dt))
    regular = dt <= DROP_FACTOR * median
    gaps = np.flatnonzero(~regular)
    n_dropped = int(np.sum(np.maximum(np.round(dt[gaps] / median) - 1, 1))) if gaps.size else 0
    return 1.0 / float(np.mean(dt[regular])), gaps.astype(np.int64), n_dropped


# -------------------------------------------------------------------------------- whole recordings


def movie_kind(path: str | Path) -> str:
    """How a movie file is read: ``"tiff"`` for .tif/.tiff, else ``"avi"``."""
    return "tiff" if str(path).lower().endswith(TIFF_SUFFIXES) else "avi"


def _probe_files(source: RecordingSource, fmt) -> tuple[list[MovieFile], int, int, str, float | None]:
    files: list[MovieFile] = []
    size = None
    dtype = "uint8"
    header_fps = None
    for path in source.files:
        n, h, w, dtype_i, fps = fmt.probe(path)
        if size is None:
            size, dtype, header_fps = (h, w), dtype_i, fps or None
        elif (h, w) != size:
            raise RecordingError(
                f"{path}: frame size {h}x{w} differs from {size[0]}x{size[1]} of {source.files[0].name}"
            )
        elif dtype_i != dtype:
            raise RecordingError(f"{path}: pixel type {dtype_i} differs from {dtype} of {source.files[0].name}")
        files.append(MovieFile(path, n, fmt.file_kind(path)))
    return files, size[0], size[1], dtype, header_fps


def nominal_fps(value) -> float | None:
    match = re.search(r"[\d.]+", str(value)) if value is not None else None
    return float(match.group()) if match else None


def v4_start_time(session_meta: dict) -> _dt.datetime | None:
    rst = session_meta.get("recordingStartTime")
    if not isinstance(rst, dict):
        rst = session_meta  # older DAQ builds write year, month, ... at the top level
    try:
        return _dt.datetime(int(rst["year"]), int(rst["month"]), int(rst["day"]), int(rst["hour"]),
                            int(rst["minute"]), int(rst["second"]), int(rst.get("msec", 0)) * 1000)
    except (KeyError, TypeError, ValueError):
        return None


def v3_settings(path: Path) -> dict:
    """Parse ``settings_and_notes.dat`` (a tab-separated header line and a value line)."""
    if not path.is_file():
        return {}
    try:
        lines = [ln.rstrip("\n") for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError as err:
        raise RecordingError(f"{path}: unreadable ({err})") from err
    if len(lines) >= 2:
        return dict(zip(lines[0].split("\t"), lines[1].split("\t")))
    return {}


def read_metadata(source: RecordingSource, fps: float | None = None) -> RecordingMetadata:
    """Read and validate a recording's files, timestamps and device metadata.

    Only file headers and the first and last frame of each movie file are decoded.

    Parameters
    ----------
    source : RecordingSource
        From :func:`discover`.
    fps : float, optional
        Frame rate in Hz for recordings without an acquisition clock (TIFF, plain AVI). Ignored with
        a clock (Miniscope V3/V4), whose frame rate is measured.

    Returns
    -------
    RecordingMetadata

    Raises
    ------
    RecordingError
        Naming the file, for: a corrupt or truncated movie; differing frame sizes; a missing,
        unreadable or inconsistent timestamps or metaData.json file; timestamps whose count differs
        from the frames; an unknown frame rate.
    """
    from scopeline.core import formats

    fmt = formats.get(source.system)
    device, start_time, nominal = fmt.device(source)
    files, height, width, dtype, header_fps = _probe_files(source, fmt)
    n_frames = sum(f.n_frames for f in files)
    timestamps, timing, nominal = fmt.timing(source, n_frames, fps, header_fps, device, nominal)
    where = str(source.timestamps_file or source.files[0])
    if timestamps.size != n_frames:
        raise RecordingError(
            f"{where}: {timestamps.size} timestamps but the movie files hold {n_frames} frames"
        )
    measured, dropped_after, n_dropped = frame_timing(timestamps, where)
    return RecordingMetadata(
        source=source, files=files, n_frames=n_frames, height=height, width=width, dtype=dtype,
        timestamps=timestamps, fps=measured, nominal_fps=nominal, timing_source=timing,
        dropped_after=dropped_after, n_dropped_frames=n_dropped, start_time=start_time, device=device,
    )
