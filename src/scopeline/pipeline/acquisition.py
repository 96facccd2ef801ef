"""Acquisition: raw recordings (referenced on disk, never copied) and their validated metadata."""

from __future__ import annotations

import sys
from pathlib import Path, PurePosixPath

import numpy as np

from scopeline import settings
from scopeline._dj import dj
from scopeline.core import formats, io
from scopeline.pipeline.session import Session  # noqa: F401  (foreign key)
from scopeline.pipeline._stage import Stage
from scopeline.pipeline._util import FetchFingerprint

schema = dj.Schema()


@schema
class AcquisitionSystem(dj.Lookup):
    """Recording formats scopeline reads: one row per :data:`scopeline.core.formats.FORMATS` entry."""

    definition = """
    # A recording layout / acquisition system
    acquisition_system         : varchar(32)
    ---
    system_description         : varchar(255)
    """
    contents = [{"acquisition_system": f.name, "system_description": f.description} for f in formats.FORMATS]


@schema
class Recording(dj.Manual):
    """A raw recording on disk.

    Attributes
    ----------
    recording_id : int
        Recording within the session: 0, 1, ...
    acquisition_system : str
        From :class:`AcquisitionSystem`.
    recording_path : str
        Recording folder (V4 device folder, V3 folder, TIFF/AVI folder) or single movie file, relative
        to the data root (:func:`scopeline.settings.data_root`), POSIX separators. Unique: a
        recording is ingested once.
    fps_given : float or None
        Frame rate given by the user for recordings without an acquisition clock, Hz.
    """

    definition = """
    # A raw recording: files on disk, referenced, not copied
    -> Session
    recording_id               : int16          # 0, 1, ... within the session
    ---
    -> AcquisitionSystem
    recording_path             : varchar(512)   # relative to the data root, POSIX separators
    fps_given = null           : float64        # Hz, for recordings without an acquisition clock
    unique index (recording_path)
    """

    def absolute_path(self) -> Path:
        """Absolute path of this (single) recording under the current data root."""
        return settings.data_root() / self.fetch1("recording_path")


@schema
class RecordingInfo(FetchFingerprint, dj.Imported):
    """Validated metadata of a recording, read from its files.

    Attributes
    ----------
    n_frames, height, width : int
        Movie shape, frames and pixels.
    pixel_dtype : str
        Pixel type of the movie (``uint8`` for Miniscopes).
    fps : float
        Frame rate measured from the timestamps (1 / median frame interval), Hz.
    nominal_fps : float or None
        Device setting / file header / given frame rate, Hz.
    timing_source : {"acquisition_clock", "nominal"}
        Whether timestamps come from the acquisition clock or from a frame rate.
    duration : float
        Seconds.
    n_dropped_frames : int
        Frames missing in gaps longer than 1.5 median frame intervals.
    dropped_after : numpy.ndarray
        int64, indices of frames followed by such a gap.
    timestamps : numpy.ndarray
        float64 (n_frames,), seconds on the acquisition clock.
    recording_start : datetime or None
        Local time of the acquisition computer when the recording started.
    device_metadata : dict
        Device settings from the metadata files.
    """

    definition = """
    # Validated metadata of a recording, read from its files
    -> Recording
    ---
    n_frames                   : int32
    height                     : int16          # pixels
    width                      : int16          # pixels
    pixel_dtype                : varchar(16)
    fps                        : float64        # Hz, measured: 1 / median frame interval
    nominal_fps = null         : float64        # Hz, device setting or file header or given
    timing_source              : varchar(24)    # acquisition_clock | nominal
    duration                   : float64        # s
    n_dropped_frames           : int32          # frames missing in dropped-frame gaps
    dropped_after              : <blob>         # int64 indices of frames followed by a gap
    timestamps                 : <blob>         # float64 (n_frames,), s on the acquisition clock
    recording_start = null     : datetime       # local time of the acquisition computer
    device_metadata            : json           # device settings from the metadata files
    """

    class File(dj.Part):
        """One movie file of the recording, in reading order."""

        definition = """
        -> master
        file_index                 : int16          # reading order: 0, 1, ...
        ---
        file_name                  : varchar(255)   # relative to the recording folder
        file_frames                : int32          # frames in this file
        first_frame                : int32          # index of its first frame in the recording
        file_size                  : int64          # bytes
        """

    def make_fetch(self, key):
        """Read the recording's path, layout and given frame rate."""
        return (Recording & key).fetch1("recording_path", "acquisition_system", "fps_given")

    def make_compute(self, key, recording_path, system, fps_given):
        """Read and validate the files (no database access)."""
        return (read_recording(recording_path, system, fps_given),)

    def make_insert(self, key, meta):
        """Insert the master row and one File row per movie file."""
        master, files = info_rows(key, meta)
        self.insert1(master)
        self.File.insert(files)

    def movie_spec(self) -> dict:
        """Everything needed to read this recording's movie, as plain data (see :func:`open_movie`)."""
        key = self.fetch1("KEY")
        rec_path, system, h, w, dtype = (Recording * self & key).fetch1(
            "recording_path", "acquisition_system", "height", "width", "pixel_dtype")
        names, counts = (self.File & key).to_arrays("file_name", "file_frames", order_by="file_index")
        return {"recording_path": rec_path, "files": [[str(n), int(c)] for n, c in zip(names, counts)],
                "frame_shape": [int(h), int(w)], "dtype": dtype, "acquisition_system": system}

    def movie(self, chunk_frames: int | None = None):
        """The recording's movie as a lazy dask array (frames, height, width); see core.io.load_movie."""
        return open_movie(self.movie_spec(), chunk_frames)


def open_movie(spec: dict, chunk_frames: int | None = None):
    """Lazy dask movie (frames, height, width) from :meth:`RecordingInfo.movie_spec`, under the data root."""
    folder = settings.data_root() / spec["recording_path"]
    base = folder.parent if folder.is_file() or folder.suffix.lower() in io.TIFF_SUFFIXES + io.AVI_SUFFIXES else folder
    fmt = formats.get(spec["acquisition_system"]) if "acquisition_system" in spec else None
    files = [io.MovieFile(base / n, c, fmt.file_kind(base / n) if fmt else io.movie_kind(n)) for n, c in spec["files"]]
    return io.load_movie(files, tuple(spec["frame_shape"]), spec["dtype"], chunk_frames)


def read_recording(recording_path: str, system: str, fps_given: float | None) -> io.RecordingMetadata:
    """Read a stored recording from disk; raise RecordingError if its layout no longer matches."""
    path = settings.data_root() / recording_path
    sources = io.discover(path)
    if len(sources) != 1 or sources[0].system != system:
        found = ", ".join(f"{s.system} at {s.folder}" for s in sources)
        raise io.RecordingError(f"{path}: expected one {system} recording, found {found}")
    return io.read_metadata(sources[0], fps=fps_given)


def relative_path(path: Path) -> str:
    """Return ``path`` relative to the data root, POSIX style.

    Raises
    ------
    ValueError
        If ``path`` is outside the data root.
    """
    root = settings.data_root()
    try:
        return str(PurePosixPath(Path(path).resolve().relative_to(root)))
    except ValueError as err:
        raise ValueError(f"{path}: outside the data root {root} (set SCOPELINE_DATA_ROOT)") from err


def info_rows(key: dict, meta: io.RecordingMetadata) -> tuple[dict, list[dict]]:
    """Build the RecordingInfo row and its File rows from validated metadata."""
    master = dict(
        key, n_frames=meta.n_frames, height=meta.height, width=meta.width, pixel_dtype=meta.dtype,
        fps=meta.fps, nominal_fps=meta.nominal_fps, timing_source=meta.timing_source,
        duration=meta.duration, n_dropped_frames=meta.n_dropped_frames,
        dropped_after=np.asarray(meta.dropped_after, dtype=np.int64),
        timestamps=np.asarray(meta.timestamps, dtype=np.float64),
        recording_start=meta.start_time, device_metadata=meta.device,
    )
    base = meta.source.folder.parent if meta.source.folder.is_file() else meta.source.folder
    files, first = [], 0
    for i, f in enumerate(meta.files):
        files.append(dict(key, file_index=i, file_name=str(PurePosixPath(f.path.relative_to(base))),
                          file_frames=f.n_frames, first_frame=first, file_size=f.path.stat().st_size))
        first += f.n_frames
    return master, files


STAGE = Stage("acquisition", module=sys.modules[__name__], computed=RecordingInfo, queued_by=Recording,
              label="ingestion")
