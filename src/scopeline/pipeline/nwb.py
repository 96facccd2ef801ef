"""Export of one CNMF result to an NWB file (Neurodata Without Borders 2.x), ready for nwbinspector and DANDI.

One file holds one recording processed by one chain of parameter sets (motion -> initialization ->
CNMF): the raw movie referenced in place (external files), the motion correction, summary images,
the units' footprints and traces, the background, and the provenance of every stage.

Layout of the file
------------------
- ``/general``: subject (:class:`~scopeline.pipeline.subject.Subject`), device (the acquisition system,
  with the device metadata read from the recording), optical channel and imaging plane.
- ``/acquisition/OnePhotonSeries``: the raw recording, ``format="external"``: ``external_file`` lists the
  movie files relative to the NWB file's folder (nwbinspector flags absolute paths), ``starting_frame``
  the first frame of each; times are the acquisition clock's (``RecordingInfo.timestamps``).
- ``/processing/ophys``:
  ``motion_shifts`` (TimeSeries, rigid shifts), ``motion_block_shifts`` (piecewise-rigid mode only),
  ``summary_images`` (Images: mean, max, std, correlation, pnr, template, noise, field_of_view),
  ``background`` (Images: ``b``) and ``background_f`` (TimeSeries), ``ImageSegmentation/PlaneSegmentation``
  (one row per unit: ``image_mask``, the unit's model and its quality metrics), ``Fluorescence`` with the RoiResponseSeries ``C``
  (denoised calcium) and ``S`` (deconvolved activity), ``DfOverF`` with ``dff`` and the ``events`` table
  (:func:`scopeline.pipeline.units.activity`), and with ``embed_movie`` the corrected movie
  ``MotionCorrected`` (OnePhotonSeries).
- ``notes``: JSON provenance (parameter sets with names, hashes and full parameters, each stage's
  scopeline version and compute time); ``source_script`` and ``was_generated_by`` name scopeline.

Image orientation
-----------------
NWB 2.11's schema (pynwb 4.x) defines OnePhotonSeries data as ``[time, width, height]`` ("width: first
spatial axis (columns)"), PlaneSegmentation ``image_mask`` as ``[num_roi, num_x, num_y]`` and
GrayscaleImage as ``[x, y]``; tools that follow the schema (NeuroConv, nwbwidgets) transpose images
on write and read. scopeline keeps images as numpy ``[y, x]`` (rows, columns), so every image, mask
and movie frame is written transposed: ``image_mask[i].T`` (or ``image.data[:].T``) is the
``(height, width)`` array of the movie, ``image_mask[i][x, y] == footprint[y, x]``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

import scopeline
from scopeline import settings
from scopeline.core import formats
from scopeline.core import io as core_io
from scopeline.core.quality import METRICS
from scopeline.pipeline import acquisition, activate, cnmf, initialization, keys, motion, nwb_metadata, stages, units
from scopeline.pipeline._objects import open_zarr
from scopeline.pipeline._util import json_default as _json_default
from scopeline.pipeline._util import load_npy, progress_bar
from scopeline.pipeline.session import Session
from scopeline.pipeline.subject import Subject as SubjectTable

__all__ = ["export_nwb", "inspect_nwb", "provenance", "DEFAULT_SPECIES"]

#: Used only if the Subject table has no species column (it has one, default "Mus musculus").
DEFAULT_SPECIES = "Mus musculus"
#: Subject age when the Subject table has no date of birth: the ISO 8601 open range "0 days or older",
#: which is true of every subject and tells the reader the age is unknown.
UNKNOWN_AGE = "P0D/"
#: Dataset chunks of the embedded movie hold about this many bytes.
CHUNK_BYTES = 1 << 20
#: The embedded movie is read and written this many bytes at a time (bounds the memory).
BUFFER_BYTES = 64 << 20


# ------------------------------------------------------------------------------------ public API


def export_nwb(key: dict, out: str | Path, *, overwrite: bool = False, embed_movie: bool = False,
               progress: bool = False, metadata=None) -> Path:
    """Write one CNMF result, with its recording, motion correction and provenance, as an NWB file.

    Parameters
    ----------
    key : dict
        Restriction selecting exactly one row of :class:`scopeline.pipeline.cnmf.CNMF`: normally its
        primary key (``subject``, ``session``, ``recording_id``, ``motion_paramset``, ``init_paramset``,
        ``cnmf_paramset``). Other attributes of CNMF are allowed and ignored; attributes CNMF does not
        have are refused.
    out : str or pathlib.Path
        The NWB file to write (conventionally ``*.nwb``). Its folder must exist. The raw movie files
        are referenced relative to this folder, so keep the NWB file and the data in place (or move
        them together).
    overwrite : bool
        Replace ``out`` if it exists. The old file stays untouched until the new one is complete.
    embed_movie : bool
        Also store the motion-corrected movie (``processing/ophys/MotionCorrected``, float32 or the
        stored integer type, ``[time, width, height]``, gzip-compressed, written in blocks of about
        ``BUFFER_BYTES`` so memory does not grow with the recording). Without it the file holds the
        raw movie by reference only and stays small.
    progress : bool
        Show a progress bar (frames) while the corrected movie is written.

    Returns
    -------
    pathlib.Path
        The absolute path of the written file.

    Raises
    ------
    FileExistsError
        If ``out`` exists and ``overwrite`` is False (checked before any other work).
    FileNotFoundError
        If the folder of ``out`` does not exist.
    ValueError
        If ``key`` matches no CNMF row, more than one, or names attributes CNMF does not have.
    scopeline.pipeline.nwb_metadata.MetadataError
        If the metadata file cannot be read or does not validate (checked before any other work).

    Notes
    -----
    The file is written to a hidden temporary file beside ``out`` (``.<name>.partial-<uuid>``) and
    moved onto ``out`` with :func:`os.replace` once complete; on any error the temporary file is
    deleted, so ``out`` is either absent, the old file, or the complete new one.

    Metadata scopeline does not record come from the lab's metadata (``metadata``: a YAML/JSON file, a
    dict or :class:`scopeline.pipeline.nwb_metadata.NWBMetadata`; else the file ``SCOPELINE_NWB_METADATA``
    names): experimenter, institution, lab, indicator, location, wavelengths, pixel size. What it leaves
    unset is written with honest defaults, each said so in the file's descriptions: indicator
    ``"GCaMP"``, excitation 470 nm (the Miniscope LED), emission 520 nm, imaging-plane location
    ``"root"`` (Allen CCF: the brain, region not recorded), the experimenter the acquisition software
    recorded (if any), and a subject age
    of ``"P0D/"`` (unknown) when the Subject has no date of birth. Species and sex come from the
    Subject table (its ``species`` column defaults to ``"Mus musculus"``; ``DEFAULT_SPECIES`` would
    only be used if the table had no such column). session_start_time is the recording's start
    (RecordingInfo.recording_start), else the Session's start, else the first movie file's
    modification time, in the local time zone when stored without one. Slashes in subject and
    session ids (forbidden by NWB/DANDI) are written as ``_``.

    Examples
    --------
    >>> key = (cnmf.CNMF & {"subject": "m1"}).keys()[0]            # doctest: +SKIP
    >>> path = export_nwb(key, "m1_d1.nwb")                         # doctest: +SKIP
    >>> [m.message for m in inspect_nwb(path)]                      # doctest: +SKIP
    """
    out = _check_target(out, overwrite)
    lab = nwb_metadata.resolve(metadata)
    activate()
    key = _one_key(key)
    data = _fetch(key)
    nwbfile = _build(data, out, embed_movie, progress, lab)
    _write_atomic(nwbfile, out)
    return out


def inspect_nwb(path: str | Path) -> list:
    """Run nwbinspector with the DANDI configuration on an NWB file.

    Parameters
    ----------
    path : str or pathlib.Path
        The NWB file.

    Returns
    -------
    list of nwbinspector.InspectorMessage
        Every message, most important first; ``message.importance.name`` is one of ``"CRITICAL"``,
        ``"BEST_PRACTICE_VIOLATION"``, ``"BEST_PRACTICE_SUGGESTION"`` (and ``"ERROR"`` when a check
        itself failed), ``message.check_function_name`` the check, ``message.object_name`` the object.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    """
    from nwbinspector import inspect_nwbfile, load_config

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such NWB file")
    messages = [m for m in inspect_nwbfile(nwbfile_path=str(path), config=load_config("dandi")) if m is not None]
    return sorted(messages, key=lambda m: -int(m.importance.value))


# ------------------------------------------------------------------------------------ checks


def _check_target(out: str | Path, overwrite: bool) -> Path:
    """The absolute target path, refusing an existing file (without overwrite) or a missing folder."""
    out = Path(out).expanduser().absolute()
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists; pass overwrite=True (scopeline export-nwb --overwrite) to replace it")
    if out.is_dir():
        raise IsADirectoryError(f"{out}: is a folder, not an NWB file path")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"{out.parent}: the folder for {out.name} does not exist")
    return out


def _one_key(key: Mapping) -> dict:
    """The primary key of the single CNMF row ``key`` selects.

    Raises
    ------
    ValueError
        If ``key`` is not a mapping, names attributes CNMF does not have, or matches 0 or >1 rows.
    """
    if not isinstance(key, Mapping):
        raise ValueError(f"key must be a dict restricting CNMF, got {type(key).__name__}: {key!r}")
    table = cnmf.CNMF()
    unknown = sorted(set(key) - set(table.heading.names))
    if unknown:
        raise ValueError(f"key {dict(key)!r}: CNMF has no attribute(s) {unknown}; its primary key is "
                         f"{list(table.primary_key)}")
    restriction = {k: v for k, v in key.items() if k in table.primary_key}
    rows = (table & restriction).keys()
    if len(rows) != 1:
        what = ("no CNMF row" if not rows
                else f"{len(rows)} CNMF rows (give every attribute of {list(table.primary_key)})")
        raise ValueError(f"key {dict(key)!r} matches {what}; export_nwb needs exactly one")
    return dict(rows[0])


# ------------------------------------------------------------------------------------ fetch


def provenance(key: Mapping) -> dict:
    """The provenance an NWB file of one CNMF result holds (in its ``notes``), as a dict: the key, every
    stage's parameter set (name, description, hash, parameters), scopeline version and timing, the
    recording's files and timing, and what registered stages add (the curation in use and its chain).

    Raises
    ------
    ValueError
        If ``key`` matches no CNMF result or several.
    """
    return _provenance(_fetch_rows(_one_key(key)))


def _fetch(key: dict) -> dict:
    """Everything the file holds, from the database, as plain values (arrays loaded except the movie)."""
    result = units.arrays(key)  # one fetch of the unit rows: arrays and the rows for the table's columns
    return {**_fetch_rows(key), "result": result, "units": result["rows"]}


def _fetch_rows(key: dict) -> dict:
    """The rows of the result's chain (recording to CNMF) and its parameter sets, not its units."""
    rec_key = keys.recording(key)
    info = (acquisition.RecordingInfo & rec_key).fetch1()
    files = (acquisition.RecordingInfo.File & rec_key).to_dicts(order_by="file_index")
    mc = (motion.MotionCorrection & key).fetch1()
    blocks = (motion.MotionCorrection.Block & key).to_dicts(order_by="block_id")
    return {
        "key": key,
        "subject": (SubjectTable & rec_key).fetch1(),
        "session": (Session & rec_key).fetch1(),
        "recording": (acquisition.Recording & rec_key).fetch1(),
        "system": (acquisition.AcquisitionSystem & (acquisition.Recording & rec_key)).fetch1(),
        "info": info,
        "files": files,
        "motion": mc,
        "blocks": blocks,
        "init": (initialization.Initialization & key).fetch1(),
        "cnmf": (cnmf.CNMF & key).fetch1(),
        "paramsets": {s.name: _paramset(s, key) for s in stages.chain("cnmf") if s.paramset is not None},
    }


def _paramset(stage, key: dict) -> dict:
    """A stage's parameter set of the result as provenance: name, description, hash, parameters."""
    row = (stage.paramset & key).fetch1()
    return {"name": row[stage.key_attr], "description": row["description"], "params_hash": row["params_hash"],
            "params": row["params"]}


# ------------------------------------------------------------------------------------ the file


def _build(data: dict, out: Path, embed_movie: bool, progress: bool, lab: nwb_metadata.NWBMetadata):
    """The in-memory NWBFile (large arrays as iterators, written later by :func:`_write_atomic`)."""
    from pynwb import NWBFile

    key, info = data["key"], data["info"]
    meta = nwb_metadata.NWBMetadata.model_validate(nwb_metadata.get_metadata(info["device_metadata"], lab))
    file_meta = meta.NWBFile
    raw_files = _raw_paths(data["recording"]["recording_path"], data["files"])
    start = _start_time(info["recording_start"], data["session"]["session_start_time"], raw_files)
    nwbfile = NWBFile(
        session_description=_session_description(data),
        identifier=str(uuid.uuid4()),
        session_start_time=start,
        session_id=_no_slash(key["session"]),
        experimenter=file_meta.experimenter,
        institution=file_meta.institution, lab=file_meta.lab, experiment_description=file_meta.experiment_description,
        related_publications=file_meta.related_publications,
        keywords=["calcium imaging", "one-photon", "miniscope", "CNMF", "scopeline", *(file_meta.keywords or [])],
        notes=json.dumps(_provenance(data), indent=1, sort_keys=True, default=_json_default),
        data_collection=_data_collection(data),
        source_script=f"scopeline {scopeline.__version__}: scopeline.pipeline.nwb.export_nwb({_key_text(key)})",
        source_script_file_name="scopeline/pipeline/nwb.py",
        was_generated_by=_generated_by(),
        subject=_subject(data["subject"]),
    )
    plane = _imaging_plane(nwbfile, data, meta.Ophys.ImagingPlane, lab.given())
    raw = _raw_series(plane, info, data["files"], raw_files, out.parent)
    nwbfile.add_acquisition(raw)
    ophys = nwbfile.create_processing_module(
        name="ophys", description=f"scopeline {scopeline.__version__}: motion correction, CNMF units and traces "
        f"({_key_text(key)})")
    times = _corrected_times(info["timestamps"], data["motion"]["frame_index"])
    _motion_series(ophys, data, times)
    _summary_images(ophys, data)
    _background(ophys, data, times)
    movie = _corrected_movie(ophys, plane, data, times, progress) if embed_movie else None
    _segmentation(ophys, plane, data, times, movie)
    for stage in stages.STAGES:  # a registered stage adds its own data (its ``nwb`` hook)
        if stage.nwb is not None:
            stage.nwb(nwbfile, dict(key))
    return nwbfile


def _write_atomic(nwbfile, out: Path) -> None:
    """Write ``nwbfile`` to a temporary file beside ``out``, then move it onto ``out``.

    On any exception (also KeyboardInterrupt) the temporary file is deleted and the exception raised
    again; ``out`` is not touched until the write is complete.
    """
    from pynwb import NWBHDF5IO

    if out.suffix != ".nwb":
        warnings.warn(f"{out}: NWB files conventionally end in '.nwb'", stacklevel=3)
    tmp = out.with_name(f".{out.name}.partial-{uuid.uuid4().hex}")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*does not end in '\.nwb'", category=UserWarning)
            nwbio = NWBHDF5IO(str(tmp), mode="w")
        with nwbio:
            nwbio.write(nwbfile)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------------ general metadata


def _start_time(recording_start, session_start, raw_files: list[Path]) -> _dt.datetime:
    """session_start_time: the recording's start, else the session's, else the first file's mtime.

    A naive datetime (the acquisition computer's local time, as stored) gets the local time zone of
    this machine.

    Raises
    ------
    ValueError
        If none of the three is known (no start time stored and the first movie file is missing).
    """
    for value in (recording_start, session_start):
        if value is not None:
            if isinstance(value, str):
                value = _dt.datetime.fromisoformat(value)
            return value if value.tzinfo is not None else value.astimezone()
    if raw_files and raw_files[0].exists():
        return _dt.datetime.fromtimestamp(raw_files[0].stat().st_mtime).astimezone()
    raise ValueError(f"no session start time: RecordingInfo.recording_start and Session.session_start_time "
                     f"are empty and {raw_files[0] if raw_files else 'the movie file'} is missing")


def _session_description(data: dict) -> str:
    key = data["key"]
    text = (data["session"].get("session_description") or "").strip()
    auto = (f"1-photon miniscope calcium imaging: recording {key['recording_id']} of subject {key['subject']!r}, "
            f"session {key['session']!r}, processed by scopeline ("
            + ", ".join(f"{s.label} {key[s.key_attr]!r}" for s in stages.chain("cnmf") if s.key_attr) + ")")
    return f"{text} ({auto})" if text else auto


def _subject(row: dict):
    """pynwb Subject from a Subject row (species, sex, date of birth; age unknown when no birth date)."""
    from pynwb.file import Subject

    dob = row.get("date_of_birth")
    if isinstance(dob, str):
        dob = _dt.date.fromisoformat(dob)
    if isinstance(dob, _dt.date) and not isinstance(dob, _dt.datetime):
        dob = _dt.datetime(dob.year, dob.month, dob.day)
    if dob is not None and dob.tzinfo is None:
        dob = dob.astimezone()
    desc = (row.get("subject_description") or "").strip()
    return Subject(
        subject_id=_no_slash(row["subject"]),
        species=row["species"] if "species" in row else DEFAULT_SPECIES,
        sex=row.get("sex") or "U",
        date_of_birth=dob,
        age=None if dob is not None else UNKNOWN_AGE,
        description=desc or (f"subject {row['subject']!r} of the scopeline database"
                             + ("" if dob is not None else f"; age not recorded ({UNKNOWN_AGE}: 0 days or older)")),
    )


def _generated_by() -> list[list[str]]:
    import pynwb

    from scopeline._dj import dj

    return [["scopeline", scopeline.__version__], ["pynwb", pynwb.__version__], ["datajoint", dj.__version__]]


def _provenance(data: dict) -> dict:
    """The JSON provenance: the key, every stage's parameter set, version and timing, the recording."""
    info, mc, init, cn = data["info"], data["motion"], data["init"], data["cnmf"]
    ps = data["paramsets"]
    return {
        "pipeline": "scopeline",
        "exported_by": f"scopeline.pipeline.nwb.export_nwb (scopeline {scopeline.__version__})",
        "key": data["key"],
        "recording": {
            "recording_path": data["recording"]["recording_path"],
            "acquisition_system": data["recording"]["acquisition_system"],
            "files": [f["file_name"] for f in data["files"]],
            "n_frames": info["n_frames"], "height": info["height"], "width": info["width"],
            "pixel_dtype": info["pixel_dtype"], "fps": info["fps"], "nominal_fps": info["nominal_fps"],
            "timing_source": info["timing_source"], "n_dropped_frames": info["n_dropped_frames"],
            "dropped_after": np.asarray(info["dropped_after"]).tolist(),
        },
        "motion": {
            "paramset": ps["motion"],
            "scopeline_version": mc["scopeline_version"], "compute_time_s": mc["compute_time"],
            "seconds": mc["seconds"], "n_frames": mc["n_frames"], "height": mc["height"], "width": mc["width"],
            "movie_dtype": mc["movie_dtype"], "corrupted_frames": mc["corrupted_reasons"],
        },
        "initialization": {
            "paramset": ps["initialization"],
            "scopeline_version": init["scopeline_version"], "compute_time_s": init["compute_time"],
            "seconds": init["seconds"], "n_seeds": init["n_seeds"], "n_units": init["n_units"],
            "noise": init["noise"],
        },
        "cnmf": {
            "paramset": ps["cnmf"],
            "scopeline_version": cn["scopeline_version"], "compute_time_s": cn["compute_time"],
            "seconds": cn["seconds"], "n_units": cn["n_units"],
        },
        # what a registered stage adds (its extra["provenance"]: the curation in use and its chain)
        **{s.name: p for s in stages.STAGES if (p := s.extra.get("provenance", lambda k: None)(dict(data["key"])))},
    }


def _data_collection(data: dict) -> str:
    info = data["info"]
    clock = ("the acquisition clock" if info["timing_source"] == "acquisition_clock"
             else "a nominal frame rate (no acquisition clock)")
    return (f"{data['system']['system_description']}. {info['n_frames']} frames of {info['height']} x "
            f"{info['width']} {info['pixel_dtype']} pixels in {len(data['files'])} file(s); frame times from "
            f"{clock}, measured rate {info['fps']:.4g} Hz, {info['n_dropped_frames']} dropped frame(s). "
            f"Processed by scopeline; parameter sets and versions in notes (JSON).")


# ------------------------------------------------------------------------------------ device, plane, raw


def _imaging_plane(nwbfile, data: dict, plane, given: set):
    """Device (with its model for Miniscopes), optical channel and imaging plane, with the lab's metadata
    (``plane``: :class:`scopeline.pipeline.nwb_metadata.ImagingPlaneMetadata`); each value the lab did not
    give is said to be a default."""
    from pynwb.ophys import OpticalChannel

    system, meta, info = data["recording"]["acquisition_system"], data["info"]["device_metadata"], data["info"]
    model = None
    fmt = next((f for f in formats.FORMATS if f.name == system), None)
    if fmt is not None and fmt.device_model:
        model = nwbfile.create_device_model(
            name=_no_slash(str(meta.get("deviceType") or fmt.device_model)), manufacturer=fmt.manufacturer or "unknown",
            description=f"{fmt.device_model}: head-mounted 1-photon microscope ({fmt.description})")
    device = nwbfile.create_device(
        name=_no_slash(str(meta.get("deviceName") or system)),
        description=(f"{data['system']['system_description']}. Device metadata read from the recording "
                     f"(JSON): {json.dumps(meta, sort_keys=True, default=_json_default)}"),
        model=model,
    )
    why = {"indicator": "", "excitation_lambda": " (the Miniscope's blue LED)",
           "location": " (Allen CCF term for the whole brain: the imaged region is not recorded)",
           "emission_lambda": f" ({plane.indicator}'s emission peak)"}
    defaults = [f"{name} {getattr(plane, name)!r}{text}" for name, text in why.items()
                if f"Ophys.ImagingPlane.{name}" not in given]
    if not defaults:
        source = "Indicator, location and wavelengths given by the lab's metadata file"
    elif len(defaults) == len(why):
        source = f"Not recorded by scopeline, so defaults are written: {'; '.join(defaults)}"
    else:
        source = f"Given by the lab's metadata file, except these defaults: {'; '.join(defaults)}"
    channel = OpticalChannel(
        name="green", emission_lambda=plane.emission_lambda,
        description=f"Green fluorescence, emission {plane.emission_lambda:g} nm"
                    + ("" if "Ophys.ImagingPlane.emission_lambda" in given else
                       f" ({plane.indicator}'s emission peak, assumed: not recorded in the acquisition metadata)."))
    spacing = {} if plane.grid_spacing_um is None else {
        "grid_spacing": [plane.grid_spacing_um, plane.grid_spacing_um], "grid_spacing_unit": "micrometers"}
    return nwbfile.create_imaging_plane(
        name="ImagingPlane", optical_channel=channel, device=device, imaging_rate=float(info["fps"]),
        excitation_lambda=plane.excitation_lambda, indicator=plane.indicator, location=plane.location, **spacing,
        description=(f"Field of view of the {device.name} ({info['height']} x {info['width']} pixels). {source}. "
                     f"imaging_rate is the measured frame rate."))


def _raw_paths(recording_path: str, files: list[dict]) -> list[Path]:
    """Absolute paths of the recording's movie files, in reading order (as acquisition.open_movie)."""
    folder = settings.data_root() / recording_path
    base = folder.parent if folder.suffix.lower() in core_io.TIFF_SUFFIXES + core_io.AVI_SUFFIXES else folder
    return [base / f["file_name"] for f in files]


def _relative(path: Path, folder: Path) -> str:
    """``path`` relative to ``folder`` (POSIX separators), or absolute where no relative path exists."""
    try:
        return Path(os.path.relpath(path.resolve(), folder.resolve())).as_posix()
    except ValueError:  # another drive on Windows
        return path.resolve().as_posix()


def _raw_series(plane, info: dict, files: list[dict], raw_files: list[Path], folder: Path):
    """The raw recording as an external-file OnePhotonSeries (no pixels copied)."""
    from pynwb.ophys import OnePhotonSeries

    missing = [str(p) for p in raw_files if not p.exists()]
    if missing:
        warnings.warn(f"movie files not found (referenced anyway): {missing}", stacklevel=3)
    ts = np.asarray(info["timestamps"], np.float64)
    timing = _timing(ts)
    if "rate" in timing:
        timing["num_samples"] = int(info["n_frames"])
    return OnePhotonSeries(
        name="OnePhotonSeries", imaging_plane=plane, device=plane.device, format="external",
        external_file=[_relative(p, folder) for p in raw_files],
        starting_frame=[int(f["first_frame"]) for f in files],
        dimension=[int(info["width"]), int(info["height"])], unit="a.u.",
        description=(f"Raw recording, {info['n_frames']} frames of {info['height']} x {info['width']} "
                     f"{info['pixel_dtype']} pixels, kept in its original movie files (paths relative to this "
                     f"NWB file). Pixel values are the camera's, in arbitrary units."),
        comments=("Times: seconds on the acquisition clock (scopeline RecordingInfo.timestamps), relative to "
                  "session_start_time." if info["timing_source"] == "acquisition_clock" else
                  "Times: from the nominal frame rate (the recording has no acquisition clock)."),
        **timing,
    )


# ------------------------------------------------------------------------------------ timing


def _timing(ts: np.ndarray) -> dict:
    """Timing arguments of a TimeSeries: ``starting_time`` and ``rate`` when the times are regular (to
    1 ns; nwbinspector asks for this), else ``timestamps`` (float64 seconds)."""
    ts = np.asarray(ts, np.float64)
    if ts.size > 2:
        steps = np.unique(np.diff(ts).round(9))
        if steps.size == 1 and steps[0] > 0:
            return {"starting_time": float(ts[0]), "rate": float(1.0 / steps[0])}
    return {"timestamps": ts}


def _corrected_times(timestamps, frame_index) -> np.ndarray:
    """float64 (n_frames,): seconds of each corrected frame, ``RecordingInfo.timestamps[frame_index]``."""
    return np.asarray(timestamps, np.float64)[np.asarray(frame_index, np.int64)]


def _linked_timing(times: np.ndarray, first) -> dict:
    """Timing for a later series of the corrected frames: a link to ``first``'s timestamps, if it has any."""
    if first is not None and first.timestamps is not None:
        return {"timestamps": first}
    return _timing(times)


# ------------------------------------------------------------------------------------ processing/ophys


def _grid_text(data: dict) -> str:
    """How the corrected movie's pixel grid relates to the raw frame."""
    pre = data["paramsets"]["motion"]["params"].get("preprocess", {})
    mc = data["motion"]
    parts = [f"the motion-corrected movie's pixel grid ({mc['height']} x {mc['width']} pixels"]
    if pre.get("crop"):
        parts.append(f", raw frame cropped to rows/columns (y0, y1, x0, x1) = {tuple(pre['crop'])}")
    if int(pre.get("spatial_downsample", 1)) > 1:
        parts.append(f", downsampled {pre['spatial_downsample']}x in space")
    return "".join(parts) + ")"


def _motion_series(ophys, data: dict, times: np.ndarray):
    """Rigid shifts (and piecewise-rigid block shifts) as TimeSeries."""
    from pynwb import TimeSeries

    mc = data["motion"]
    sign = ("shifts[t] = (dy, dx): where frame t's content sits relative to the registration template "
            "(content at p in the template is at p + shift in frame t); the correction moved each frame by "
            "-shift. Column 0 is y (rows, positive down), column 1 is x (columns, positive right).")
    shifts = ophys.add(TimeSeries(
        name="motion_shifts", data=np.asarray(mc["shifts"], np.float32), unit="pixels",
        description=f"Rigid motion of each corrected frame, pixels of {_grid_text(data)}; data (frames, 2) = "
                    "[dy, dx].",
        comments=sign + (f" Frames flagged as corrupted (raw index: reason): {json.dumps(mc['corrupted_reasons'])}"
                         if mc["corrupted_reasons"] else ""),
        **_timing(times)))
    if data["blocks"]:
        boxes = [[b["y0"], b["y1"], b["x0"], b["x1"]] for b in data["blocks"]]
        ophys.add(TimeSeries(
            name="motion_block_shifts", unit="pixels",
            data=np.stack([np.asarray(b["block_shifts"], np.float32) for b in data["blocks"]], axis=1),
            description="Piecewise-rigid motion: total shift of each block, data (frames, blocks, 2) = [dy, dx], "
                        f"pixels. Block boxes (y0, y1, x0, x1), end exclusive: {json.dumps(boxes)}.",
            comments=sign, **_linked_timing(times, shifts)))
    return shifts


def _gray(name: str, image, description: str):
    """A GrayscaleImage stored [x, y] (the transpose of the numpy [y, x] image)."""
    from pynwb.image import GrayscaleImage

    return GrayscaleImage(name=name, data=np.ascontiguousarray(np.asarray(image, np.float32).T),
                          description=description + " Stored [x, y]: transpose for the movie's [row, column].")


def _summary_images(ophys, data: dict):
    """Summary images of the corrected movie and the per-pixel noise, as an Images container."""
    from pynwb.base import Images

    mc, cn = data["motion"], data["cnmf"]
    specs = [("mean", mc["mean_image"], "Mean of the corrected movie, movie units."),
             ("max", mc["max_image"], "Maximum of the corrected movie, movie units."),
             ("std", mc["std_image"], "Standard deviation over time of the corrected movie, movie units."),
             ("correlation", mc["correlation_image"], "Mean correlation of each pixel's trace with its 8 "
              "neighbours' (corrected movie)."),
             ("pnr", mc["pnr_image"], "Peak-to-noise ratio: (max - mean) / noise of each pixel."),
             ("template", mc["template"], "High-passed registration template of the motion correction."),
             ("noise", cn["pixel_sn"], "CNMF per-pixel noise standard deviation, movie units."),
             ("field_of_view", None if mc.get("fov") is None else np.asarray(mc["fov"], np.float32),
              "Field of view of the corrected movie: 1 where every frame showed the inside of the lens (the "
              "lens is fixed to the optics, so its edge moves against every shift), 0 elsewhere.")]
    images = [_gray(name, img, desc) for name, img, desc in specs if img is not None]
    return ophys.add(Images(name="summary_images", images=images,
                            description=f"Summary images in {_grid_text(data)}."))


def _background(ophys, data: dict, times: np.ndarray) -> None:
    """CNMF's rank-1 background: spatial b (image) and temporal f (trace)."""
    from pynwb import TimeSeries
    from pynwb.base import Images

    cn = data["cnmf"]
    b = _gray("b", cn["b"], f"Background footprint b in {_grid_text(data)}.")
    ophys.add(Images(name="background", images=[b],
                     description="CNMF background footprint b; the background of the movie is b f(t)."))
    ophys.add(TimeSeries(name="background_f", data=_h5(np.asarray(load_npy(cn["f"]), np.float32)), unit="a.u.",
                         description="CNMF background trace f (frames,): the background at pixel p and frame t is "
                                     "b[p] f[t], movie units.", **_timing(times)))


def _segmentation(ophys, plane, data: dict, times: np.ndarray, movie) -> None:
    """ImageSegmentation (one PlaneSegmentation row per unit) and Fluorescence with C and S.

    Nothing is written when CNMF found no units (an empty table is a best-practice violation).
    """
    from pynwb.ophys import Fluorescence, ImageSegmentation, PlaneSegmentation

    res, units = data["result"], data["units"]
    if not units:
        return
    grid = _grid_text(data)
    table = PlaneSegmentation(
        name="PlaneSegmentation", imaging_plane=plane,
        description=(f"CNMF units ({len(units)}), image masks in {grid}. image_mask[i] is stored [x, y] as the "
                     "NWB schema defines it (image_mask[i].T is the (height, width) footprint), normalized to "
                     "peak 1. Row ids are scopeline unit ids."),
        reference_images=(movie,) if movie is not None else None,
        id=[int(u) for u in res["unit_id"]],
        columns=(columns := _unit_columns(res, units)), colnames=[c.name for c in columns])
    ophys.add(ImageSegmentation(name="ImageSegmentation", plane_segmentations=[table]))
    fluorescence = ophys.add(Fluorescence(name="Fluorescence"))
    region = list(range(len(units)))
    unit = "a.u."
    c = fluorescence.create_roi_response_series(
        name="C", data=_h5(np.ascontiguousarray(res["C"].T)), unit=unit,
        rois=table.create_roi_table_region(description="every unit", region=region),
        description="CNMF denoised calcium traces C (frames, units), in the corrected movie's units at each "
                    "footprint's peak pixel (footprints have peak 1): background-removed fluorescence, NOT dF/F.",
        **_timing(times))
    fluorescence.create_roi_response_series(
        name="S", data=_h5(np.ascontiguousarray(res["S"].T)), unit=unit,
        rois=table.create_roi_table_region(description="every unit", region=region),
        description="CNMF deconvolved activity S (frames, units): the innovation of each unit's AR model "
                    "(C[t] = sum_k g_k C[t-k] + S[t]), same units as C; not spike counts.",
        **_linked_timing(times, c))
    _dff_and_events(ophys, table, data, times, c)


def _dff_and_events(ophys, table, data: dict, times: np.ndarray, c) -> None:
    """DfOverF (``dff``: C over each unit's resting fluorescence) and the ``events`` table (one row per
    event of S), by :func:`scopeline.pipeline.units.activity`; left out (with the reason in the log) for
    a motion correction that predates ``mean_raw``."""
    from hdmf.common import DynamicTable, VectorData
    from pynwb.ophys import DfOverF

    res = data["result"]
    try:
        act = units.activity(data["key"], result=res)
    except ValueError as err:
        warnings.warn(f"no DfOverF in the NWB file: {err}", stacklevel=2)
        return
    ok = np.isfinite(act["F0"])
    if not ok.any():
        return
    dff = ophys.add(DfOverF(name="DfOverF"))
    dff.create_roi_response_series(
        name="dff", data=_h5(np.ascontiguousarray(act["dff"][ok].T)), unit="n.a.",
        rois=table.create_roi_table_region(description="units with a resting fluorescence",
                                           region=[int(i) for i in np.flatnonzero(ok)]),
        description="dF/F (frames, units): k C / F0 (scopeline.core.traces, baseline 'cnmf'): F0 is the unit's "
                    "resting fluorescence, the footprint-weighted mean of the raw frames above the sensor's black "
                    f"level ({act['black']:g}) less the unit's own mean contribution; k = sum(a^2) / sum(a).",
        **_linked_timing(times, c))
    ev = act["events"]
    if not len(ev["onset"]):
        return
    columns = {"unit_id": ("scopeline unit id of the event's unit.", ev["unit_id"]),
               "onset_frame": ("Frame of the corrected movie where the event starts (its first non-zero S).",
                               ev["onset"]),
               "onset_time": ("Onset, s from the recording's first frame (the Fluorescence series' clock).",
                              ev["time"]),
               "n_frames": ("Frames of consecutive non-zero S in the event.", ev["frames"]),
               "amplitude": ("Summed S of the event, movie units (as C).", ev["amplitude"]),
               "amplitude_dff": ("amplitude over the unit's resting fluorescence F0 (dF/F).", ev["amplitude_dff"])}
    events = DynamicTable(
        name="events", description=f"Calcium events of each unit from S (scopeline.core.traces.events): runs of "
                                   f"non-zero S adding more than {act['threshold']:g} times the unit's noise sn.",
        id=np.arange(len(ev["onset"])),
        columns=[VectorData(name=name, description=text, data=np.asarray(values)) for name, (text, values)
                 in columns.items()])
    ophys.add(events)


#: PlaneSegmentation columns: name -> description
_COLUMNS = [
    ("image_mask", "Footprint of each unit over the whole frame, [x, y] (transpose for [row, column]), peak 1."),
    ("unit_id", "scopeline unit id (CNMF.Unit.unit_id)."),
    ("centroid_y", "Weighted centre of the footprint, row (y), pixels from the top."),
    ("centroid_x", "Weighted centre of the footprint, column (x), pixels from the left."),
    ("area", "Non-zero pixels of the footprint."),
    ("snr", "Signal-to-noise ratio: peak of C over sn."),
    ("sn", "Noise standard deviation of the unit's trace, movie units."),
    ("b0", "Baseline of the trace, movie units."),
    ("c0", "Initial calcium concentration, movie units."),
    ("g", "AR coefficients of the unit's calcium model (g_1 ... g_p), NaN-padded to the longest."),
    *[(name, f"Quality metric: {text} (scopeline.core.quality.METRICS; NaN where not computed).")
      for name, (text, _) in METRICS.items()],
]


def _unit_columns(res: dict, units: list[dict]) -> list:
    """The PlaneSegmentation columns; image masks stream one unit at a time."""
    from hdmf.common import VectorData

    desc = dict(_COLUMNS)
    values = {
        "unit_id": np.array([u["unit_id"] for u in units], np.int32),
        "centroid_y": np.array([u["centroid_y"] for u in units], np.float32),
        "centroid_x": np.array([u["centroid_x"] for u in units], np.float32),
        "area": np.array([u["area"] for u in units], np.int32),
        **{name: np.array([u[name] for u in units], np.float32) for name in ("snr", "sn", "b0", "c0")},
        **{name: np.array([np.nan if u.get(name) is None else u[name] for u in units], np.float32) for name in METRICS},
        "g": _padded([u["g"] for u in units]),
    }
    columns = [VectorData(name="image_mask", description=desc["image_mask"], data=mask_data(res["A"]))]
    columns += [VectorData(name=name, description=desc[name], data=values[name]) for name, _ in _COLUMNS[1:]]
    if any("labels" in u for u in units):  # a curation is in use: its descriptive labels
        columns.append(VectorData(name="labels", description="Descriptive labels of the curation in use "
                                  "(scopeline.core.curation.LABELS), comma-separated ('' none).",
                                  data=[u.get("labels", "") for u in units]))
    return columns


def _padded(rows: list) -> np.ndarray:
    """float32 (n, p_max): ragged 1-D arrays, NaN-padded."""
    arrays = [np.atleast_1d(np.asarray(r, np.float32)) for r in rows]
    out = np.full((len(arrays), max(1, max(a.size for a in arrays))), np.nan, np.float32)
    for i, a in enumerate(arrays):
        out[i, : a.size] = a
    return out


def mask_data(A):
    """Full-frame masks (units, width, height), generated one unit at a time, gzip-compressed at level 1:
    a 608 x 608 mask (mostly zeros) compresses in 3.6 ms at level 1 and 10 ms at level 4, to 8 and 3 kB."""
    from hdmf.data_utils import DataChunkIterator

    h, w = A.shape
    masks = (np.ascontiguousarray(A.dense([i])[0].T) for i in range(len(A)))
    return _h5(DataChunkIterator(data=masks, maxshape=(len(A), w, h), dtype=np.dtype(np.float32)), chunks=(1, w, h),
               level=1)


def _h5(data, chunks=None, level: int = 4):
    """Wrap a dataset for gzip compression (nwbinspector suggests compressing every dataset)."""
    from hdmf.backends.hdf5 import H5DataIO

    kwargs = {"chunks": chunks} if chunks is not None else {}
    return H5DataIO(data=data, compression="gzip", compression_opts=level, **kwargs)


# ------------------------------------------------------------------------------------ the corrected movie


def _movie_block(movie, start: int, stop: int, dtype) -> np.ndarray:
    """Frames [start, stop) of the stored corrected movie as ``dtype`` (frames, width, height)."""
    return np.ascontiguousarray(np.asarray(movie[start:stop]).astype(dtype, copy=False).transpose(0, 2, 1))


def _movie_iterator(movie, dtype, bar):
    """An hdmf chunk iterator over the Zarr movie, transposed to [time, x, y], in bounded blocks."""
    from hdmf.data_utils import GenericDataChunkIterator

    n, h, w = movie.shape
    frame_bytes = h * w * np.dtype(dtype).itemsize
    chunk_frames = int(max(1, min(n, CHUNK_BYTES // frame_bytes)))
    buffer_frames = int(max(chunk_frames, min(n, BUFFER_BYTES // frame_bytes) // chunk_frames * chunk_frames))

    class MovieIterator(GenericDataChunkIterator):
        """Frames of the corrected movie, whole frames per chunk."""

        def _get_data(self, selection):
            t = selection[0]
            block = _movie_block(movie, t.start or 0, t.stop if t.stop is not None else n, dtype)
            bar.update(block.shape[0])
            if t.stop is None or t.stop >= n:
                bar.close()
            return block[(slice(None),) + tuple(selection[1:])]

        def _get_maxshape(self):
            return (n, w, h)

        def _get_dtype(self):
            return np.dtype(dtype)

    return MovieIterator(chunk_shape=(chunk_frames, w, h), buffer_shape=(buffer_frames, w, h))


def _corrected_movie(ophys, plane, data: dict, times: np.ndarray, progress: bool):
    """The motion-corrected movie as a OnePhotonSeries in processing/ophys (written in blocks)."""
    from pynwb.ophys import OnePhotonSeries

    mc = data["motion"]
    movie = open_zarr(mc["movie"])
    stored = np.dtype(mc["movie_dtype"])
    dtype = np.float32 if stored.kind == "f" else stored  # float16 is not portable to every NWB reader
    bar = progress_bar(movie.shape[0], "NWB corrected movie", progress)
    series = OnePhotonSeries(
        name="MotionCorrected", imaging_plane=plane, unit="a.u.",
        data=_h5(_movie_iterator(movie, dtype, bar)),
        dimension=[int(mc["width"]), int(mc["height"])],
        description=(f"Preprocessed, motion-corrected movie (scopeline MotionCorrection, stored as {stored.name}, "
                     f"written as {np.dtype(dtype).name}), data [time, x, y] as the NWB schema defines it "
                     f"(transpose each frame for [row, column]), in {_grid_text(data)}. Values in the "
                     "preprocessed movie's units (glow and background removed), arbitrary units."),
        comments="Times of corrected frames: the raw frame each starts from, RecordingInfo.timestamps[frame_index].",
        **_timing(times))
    return ophys.add(series)


# ------------------------------------------------------------------------------------ small helpers


def _no_slash(text: str) -> str:
    """NWB/DANDI forbid '/' in ids and names."""
    return str(text).replace("/", "_")


def _key_text(key: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in key.items())
