"""Recording formats as a registry: one class per acquisition format, owning its discovery (which
folder or file is one of its recordings), its files' validation, its timing and its metadata.

:func:`scopeline.core.io.discover` and :func:`scopeline.core.io.read_metadata` walk :data:`FORMATS` in
order (the first format that claims a folder has it); ingestion stores the format's ``name`` as the
recording's acquisition system, the database lists every format (``AcquisitionSystem``), and the NWB
export names the device model a format declares. A new format (Inscopix ``.isxd``, a NeuroConv-readable
one) is one class here with a line in :data:`FORMATS`, or :func:`register` from a lab's package.

Layouts of the formats shipped are described in :mod:`scopeline.core.io`.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Callable, ClassVar, NamedTuple, Optional

import numpy as np

from scopeline.core import io

__all__ = ["FileInfo", "DeviceInfo", "Timing", "RecordingFormat", "MiniscopeV4", "MiniscopeV3", "TiffStack", "AviFiles", "FORMATS", "get", "register",
           "unregister"]


class FileInfo(NamedTuple):
    """One movie file's header: frames, height and width (pixels), pixel dtype, frame rate (Hz) or None."""

    n_frames: int
    height: int
    width: int
    dtype: str
    fps: Optional[float]


class DeviceInfo(NamedTuple):
    """A recording's device settings (JSON-ready), start time, and the frame rate set on the device (Hz)."""

    settings: dict
    start_time: Optional[_dt.datetime]
    nominal_fps: Optional[float]


class Timing(NamedTuple):
    """Timestamps (s), where they came from (``"acquisition_clock"`` or ``"nominal"``), nominal fps (Hz)."""

    timestamps: np.ndarray
    source: str
    nominal_fps: Optional[float]


class RecordingFormat:
    """One acquisition format. Subclasses set ``name``, ``description`` and override what differs.

    Attributes
    ----------
    name : str
        Stored as the recording's ``acquisition_system`` (at most 32 characters).
    description : str
        One line for the database's AcquisitionSystem table.
    device_model, manufacturer : str or None
        The device model and its maker written to NWB files (None: no model, e.g. a plain TIFF stack).
    suffixes : tuple of str
        Movie-file suffixes a single file of this format may have (empty: folders only).
    read : callable, optional
        ``read(path, start, stop, height, width, dtype) -> frames`` for a format whose movie files are
        neither AVI nor TIFF (registered as a reader of :data:`scopeline.core.io.READERS` under its name).
    """

    name: ClassVar[str]
    description: ClassVar[str]
    device_model: ClassVar[Optional[str]] = None
    manufacturer: ClassVar[Optional[str]] = None
    suffixes: ClassVar[tuple] = ()
    read: ClassVar[Optional[Callable]] = None

    def file_kind(self, path: Path) -> str:
        """The reader of one of its movie files (a key of :data:`scopeline.core.io.READERS`)."""
        return self.name if self.read is not None else io.movie_kind(path)

    def source_in(self, folder: Path) -> Optional[io.RecordingSource]:
        """The recording of this format held directly in ``folder``, or None."""
        return None

    def source_for_file(self, path: Path) -> Optional[io.RecordingSource]:
        """A single movie file of this format as a recording, or None."""
        return io.RecordingSource(self.name, path, [path]) if path.suffix.lower() in self.suffixes else None

    def probe(self, path: Path) -> FileInfo:
        """One movie file's header, checking that the file is complete.

        Raises
        ------
        RecordingError
            Naming the file, if it is corrupt or truncated.
        """
        n, h, w, fps = io.probe_avi(path)
        return FileInfo(n, h, w, "uint8", fps)

    def device(self, source: io.RecordingSource) -> DeviceInfo:
        """Device settings, start time and nominal frame rate from the format's metadata files."""
        return DeviceInfo({}, None, None)

    def timing(self, source: io.RecordingSource, n_frames: int, fps: Optional[float], header_fps: Optional[float],
               device: dict, nominal: Optional[float]) -> Timing:
        """Every frame's time: with no acquisition clock, ``arange / fps`` with the frame rate given, else
        the file header's (a format with a clock reads it; it may add to ``device``).

        Raises
        ------
        RecordingError
            If no frame rate is known.
        """
        rate = fps or header_fps
        if not rate or rate <= 0:
            raise io.RecordingError(
                f"{source.files[0]}: no frame rate in the file; give it (fps=..., or --fps on the command line)")
        return Timing(np.arange(n_frames, dtype=np.float64) / float(rate), "nominal", float(rate))


class MiniscopeV4(RecordingFormat):
    """UCLA Miniscope V4 (Miniscope-DAQ-QT-Software): a device folder of numbered AVIs, timeStamps.csv and
    metaData.json, under a time folder whose metaData.json has the start time."""

    name = "miniscope_v4"
    description = "UCLA Miniscope V4 DAQ: numbered AVIs, timeStamps.csv, metaData.json"
    device_model = "UCLA Miniscope V4"
    manufacturer = "Open Ephys / UCLA Miniscope project"

    def source_in(self, folder):
        if not io.is_v4_miniscope(folder):
            return None
        return io.RecordingSource(self.name, folder, io.v4_device_avis(folder), folder / io.V4_TIMESTAMPS)

    def source_for_file(self, path):
        return None

    def device(self, source):
        device, start = {}, None
        if (source.folder / io.METADATA).is_file():
            device = io.read_json(source.folder / io.METADATA)
        session_meta_path = source.folder.parent / io.METADATA
        if session_meta_path.is_file():
            session_meta = io.read_json(session_meta_path)
            start = io.v4_start_time(session_meta)
            device["session"] = session_meta
        return DeviceInfo(device, start, io.nominal_fps(device.get("frameRate")))

    def timing(self, source, n_frames, fps, header_fps, device, nominal):
        return Timing(io.read_v4_timestamps(source.timestamps_file), "acquisition_clock", nominal)


class MiniscopeV3(RecordingFormat):
    """UCLA Miniscope V3 (Miniscope DAQ 1.x): msCam*.avi, timestamp.dat, settings_and_notes.dat."""

    name = "miniscope_v3"
    description = "UCLA Miniscope V3 DAQ: msCam*.avi, timestamp.dat, settings_and_notes.dat"
    device_model = "UCLA Miniscope V3"
    manufacturer = "Open Ephys / UCLA Miniscope project"

    def source_in(self, folder):
        files = io.listing(folder, io.AVI_SUFFIXES, prefix="msCam")
        return io.RecordingSource(self.name, folder, files, folder / io.V3_TIMESTAMPS) if files else None

    def source_for_file(self, path):
        return None

    def timing(self, source, n_frames, fps, header_fps, device, nominal):
        timestamps, cam = io.read_v3_timestamps(source.timestamps_file, n_frames)
        device.update({**io.v3_settings(source.folder / "settings_and_notes.dat"), "camNum": cam})
        return Timing(timestamps, "acquisition_clock", nominal)


class TiffStack(RecordingFormat):
    """TIFF stack(s): one multi-page file or a folder of them in numeric order; no acquisition clock."""

    name = "tiff"
    description = "TIFF stack(s), no acquisition clock: frame rate given"
    suffixes = io.TIFF_SUFFIXES

    def source_in(self, folder):
        files = io.listing(folder, io.TIFF_SUFFIXES)
        return io.RecordingSource(self.name, folder, files) if files else None

    def probe(self, path):
        return FileInfo(*io.probe_tiff(path))


class AviFiles(RecordingFormat):
    """A folder of AVI files (or one file) that is neither a Miniscope V4 device nor V3; no acquisition clock."""

    name = "avi"
    description = "AVI file(s), no acquisition clock: frame rate from the header or given"
    suffixes = io.AVI_SUFFIXES

    def source_in(self, folder):
        avis = io.listing(folder, io.AVI_SUFFIXES)
        if not avis or io.is_v4_device(folder):  # a V4 behaviour camera is no recording of ours
            return None
        time_folder = (folder / io.METADATA).is_file() and any(io.is_v4_device(d) for d in folder.iterdir() if d.is_dir())
        if time_folder or any(p.name.lower().startswith("behavcam") for p in avis):
            return None
        return io.RecordingSource(self.name, folder, avis)


#: every format, in the order discovery asks them
FORMATS: list[RecordingFormat] = [MiniscopeV4(), MiniscopeV3(), TiffStack(), AviFiles()]


def get(name: str) -> RecordingFormat:
    """The format of this name.

    Raises
    ------
    RecordingError
        If no registered format has it (the message lists them).
    """
    for fmt in FORMATS:
        if fmt.name == name:
            return fmt
    raise io.RecordingError(f"unknown recording format {name!r}: scopeline reads {', '.join(f.name for f in FORMATS)}")


def register(fmt: RecordingFormat, before: Optional[str] = None) -> RecordingFormat:
    """Add a format (asked before the format named ``before``, else last).

    Raises
    ------
    RecordingError
        If its name is taken.
    """
    if any(f.name == fmt.name for f in FORMATS):
        raise io.RecordingError(f"a recording format named {fmt.name!r} is registered already")
    at = next((i for i, f in enumerate(FORMATS) if f.name == before), len(FORMATS))
    FORMATS.insert(at, fmt)
    if fmt.read is not None:
        io.READERS[fmt.name] = type(fmt).read
    return fmt


def unregister(name: str) -> None:
    """Remove a registered format (and its reader)."""
    FORMATS.remove(get(name))
    io.READERS.pop(name, None)
