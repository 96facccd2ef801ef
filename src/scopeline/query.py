"""Results as pandas tables: sessions, CNMF results, units and traces, restricted by subject,
session and parameter set; and the progress of every stage across the database.

Every function works on the active pipeline (:func:`scopeline.pipeline.activate`) and takes the same
optional restrictions; ``None`` means any.

Example
-------
>>> from scopeline import query
>>> query.units(subject="m1", cnmf_paramset="minian")          # doctest: +SKIP
>>> query.trace_matrix({"subject": "m1", "session": "d1", "recording_id": 0,
...                     "motion_paramset": "default", "init_paramset": "minian",
...                     "cnmf_paramset": "minian"})            # doctest: +SKIP
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from scopeline.pipeline import acquisition, activate, cnmf, initialization, motion
from scopeline.pipeline._util import load_npy

__all__ = ["sessions", "results", "units", "traces", "trace_matrix", "status"]

_KEY = ["subject", "session", "recording_id", "motion_paramset", "init_paramset", "cnmf_paramset"]
_UNIT_METRICS = ["centroid_y", "centroid_x", "area", "snr", "sn", "b0", "c0", "patch_y", "patch_x"]


def _restriction(**fields) -> dict:
    return {k: v for k, v in fields.items() if v is not None}


def sessions(subject: Optional[str] = None, session: Optional[str] = None) -> pd.DataFrame:
    """One row per ingested recording: subject, session, recording_id, acquisition_system, n_frames,
    height, width (pixels), fps (Hz), duration (s), recording_path, and how many motion corrections
    and CNMF results it has."""
    activate()
    r = _restriction(subject=subject, session=session)
    rows = (acquisition.Recording * acquisition.RecordingInfo & r).to_dicts(order_by=["subject", "session",
                                                                                     "recording_id"])
    cols = ["subject", "session", "recording_id", "acquisition_system", "n_frames", "height", "width", "fps",
            "duration", "recording_path"]
    out = pd.DataFrame([{c: row[c] for c in cols} for row in rows], columns=cols)
    key = ["subject", "session", "recording_id"]
    for name, table in (("motion_corrections", motion.MotionCorrection), ("cnmf_results", cnmf.CNMF)):
        counts = pd.DataFrame((table & r).keys(), columns=key + [c for c in table.primary_key if c not in key])
        n = counts.groupby(key).size().rename(name) if len(counts) else pd.Series(dtype=int, name=name)
        out = out.join(n, on=key) if len(out) else out.assign(**{name: []})
        out[name] = out[name].fillna(0).astype(int)
    return out


def results(subject: Optional[str] = None, session: Optional[str] = None, motion_paramset: Optional[str] = None,
            init_paramset: Optional[str] = None, cnmf_paramset: Optional[str] = None) -> pd.DataFrame:
    """One row per CNMF result: its key (subject, session, recording_id and the three parameter-set
    names), n_units, n_frames, and the compute time of each stage (s)."""
    activate()
    r = _restriction(subject=subject, session=session, motion_paramset=motion_paramset,
                     init_paramset=init_paramset, cnmf_paramset=cnmf_paramset)
    q = (cnmf.CNMF.proj("n_units", cnmf_s="compute_time")
         * initialization.Initialization.proj(init_s="compute_time")
         * motion.MotionCorrection.proj("n_frames", motion_s="compute_time") & r)
    cols = _KEY + ["n_units", "n_frames", "motion_s", "init_s", "cnmf_s"]
    return pd.DataFrame([{c: row[c] for c in cols} for row in q.to_dicts(order_by=_KEY)], columns=cols)


def units(subject: Optional[str] = None, session: Optional[str] = None, motion_paramset: Optional[str] = None,
          init_paramset: Optional[str] = None, cnmf_paramset: Optional[str] = None) -> pd.DataFrame:
    """One row per unit: the result's key, unit_id, centroid_y / centroid_x (pixels), area (pixels),
    snr, sn and b0 / c0 (movie units), and the footprint patch's corner (pixels). No traces (see
    :func:`traces`)."""
    activate()
    r = _restriction(subject=subject, session=session, motion_paramset=motion_paramset,
                     init_paramset=init_paramset, cnmf_paramset=cnmf_paramset)
    cols = _KEY + ["unit_id"] + _UNIT_METRICS
    rows = (cnmf.CNMF.Unit & r).proj(*_UNIT_METRICS).to_dicts(order_by=_KEY + ["unit_id"])
    return pd.DataFrame([{c: row[c] for c in cols} for row in rows], columns=cols)


def _frame_times(key: dict) -> np.ndarray:
    """float64 (frames,): times of the corrected frames, s from the recording's first frame."""
    ts = (acquisition.RecordingInfo & key).fetch1("timestamps")
    idx = (motion.MotionCorrection & key).fetch1("frame_index")
    return np.asarray(ts, np.float64)[idx] - float(ts[0])


def traces(subject: Optional[str] = None, session: Optional[str] = None, motion_paramset: Optional[str] = None,
           init_paramset: Optional[str] = None, cnmf_paramset: Optional[str] = None) -> pd.DataFrame:
    """One row per unit with its traces: the result's key, unit_id, ``C`` and ``S`` (float32
    (frames,) arrays, movie units: not dF/F) and ``time`` (float64 (frames,), s from the first frame).
    """
    activate()
    r = _restriction(subject=subject, session=session, motion_paramset=motion_paramset,
                     init_paramset=init_paramset, cnmf_paramset=cnmf_paramset)
    times: dict = {}
    out = []
    for row in (cnmf.CNMF.Unit & r).proj("trace", "activity").to_dicts(order_by=_KEY + ["unit_id"]):
        key = {k: row[k] for k in _KEY}
        rec = tuple(key[k] for k in _KEY[:4])
        if rec not in times:
            times[rec] = _frame_times(key)
        out.append({**key, "unit_id": row["unit_id"], "C": load_npy(row["trace"]), "S": load_npy(row["activity"]),
                    "time": times[rec]})
    return pd.DataFrame(out, columns=_KEY + ["unit_id", "C", "S", "time"])


def trace_matrix(key: dict, which: str = "C") -> pd.DataFrame:
    """Traces of one CNMF result as a (frames x units) table: index ``time`` (s from the first
    frame), one column per unit_id.

    Parameters
    ----------
    key : dict
        Restricts CNMF to exactly one result.
    which : str
        ``"C"`` (calcium, movie units) or ``"S"`` (deconvolved activity).

    Raises
    ------
    ValueError
        If ``key`` matches no result or several, or ``which`` is not C or S.
    """
    activate()
    if which not in ("C", "S"):
        raise ValueError(f"which must be 'C' or 'S', not {which!r}")
    n = len(cnmf.CNMF & key)
    if n != 1:
        raise ValueError(f"{key} matches {n} CNMF results; give a key of exactly one")
    res = (cnmf.CNMF & key).result()
    full = (cnmf.CNMF & key).fetch1("KEY")
    return pd.DataFrame(res[which].T, index=pd.Index(_frame_times(full), name="time"),
                        columns=pd.Index(res["unit_id"], name="unit_id"))


def status() -> pd.DataFrame:
    """Progress of every computed table across the database: one row per table with ``done`` (rows
    present), ``pending`` (queued by a task, or an ingested recording, and not started, whether or
    not its upstream work is done yet), ``reserved`` (being computed now) and ``error`` (failed; see
    ``scopeline populate --retry-errors``)."""
    activate()
    out = []
    for table, queued in ((acquisition.RecordingInfo, acquisition.Recording),
                          (motion.MotionCorrection, motion.MotionTask),
                          (initialization.Initialization, initialization.InitTask),
                          (cnmf.CNMF, cnmf.CNMFTask)):
        todo = len(queued.proj() - table.proj())
        reserved, error = len(table.jobs.reserved), len(table.jobs.errors)
        out.append({"table": table.__name__, "done": len(table()), "pending": max(todo - reserved - error, 0),
                    "reserved": reserved, "error": error})
    return pd.DataFrame(out, columns=["table", "done", "pending", "reserved", "error"])
