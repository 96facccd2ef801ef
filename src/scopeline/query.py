"""Results as pandas tables: sessions, CNMF results, units and traces, restricted by subject,
session and parameter set; and the progress of every stage across the database.

Every function works on the active pipeline (:func:`scopeline.pipeline.activate`) and takes the same
optional restrictions; ``None`` means any.

Example
-------
>>> from scopeline import query
>>> query.units(subject="m1", cnmf="minian")                   # doctest: +SKIP
>>> from scopeline.pipeline import presets
>>> query.trace_matrix(presets.result_key({"subject": "m1", "session": "d1", "recording_id": 0},
...                                       "default"))         # doctest: +SKIP
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from scopeline.pipeline import acquisition, activate, cnmf, keys, motion, stages, units as unit_reader

__all__ = ["sessions", "results", "units", "traces", "trace_matrix", "cells", "cell_traces", "status"]

_UNIT_METRICS = ["centroid_y", "centroid_x", "area", "snr", "sn", "b0", "c0", "patch_y", "patch_x"]


def sessions(subject: Optional[str] = None, session: Optional[str] = None) -> pd.DataFrame:
    """One row per ingested recording: subject, session, recording_id, acquisition_system, n_frames,
    height, width (pixels), fps (Hz), duration (s), recording_path, and how many results each stage
    with parameters has (``<stage>_results``: ``motion_results``, ``initialization_results``, ...)."""
    activate()
    r = keys.restriction(subject=subject, session=session)
    rec = list(keys.RECORDING)
    rows = (acquisition.Recording * acquisition.RecordingInfo & r).to_dicts(order_by=rec)
    cols = rec + ["acquisition_system", "n_frames", "height", "width", "fps", "duration", "recording_path"]
    out = pd.DataFrame([{c: row[c] for c in cols} for row in rows], columns=cols)
    for stage in stages.per_recording():
        name = f"{stage.name}_results"
        counts = pd.DataFrame((stage.computed & r).keys(), columns=list(keys.fields(stage.name)))
        if len(counts) and len(out):
            out = out.join(counts.groupby(rec).size().rename(name), on=rec)
            out[name] = out[name].fillna(0).astype(int)
        else:  # no result of this stage (or no recording)
            out[name] = np.zeros(len(out), int)
    return out


def _stage_columns(stage) -> tuple[dict, dict]:
    """A stage's columns in :func:`results`: its declared ``extra["columns"]`` and its compute time as
    ``<stage>_s`` (when its table has one)."""
    names = stage.computed.heading.names
    shown = [c for c in stage.extra.get("columns", ()) if c in names]
    timed = {f"{stage.name}_s": "compute_time"} if "compute_time" in names else {}
    return shown, timed


def results(subject: Optional[str] = None, session: Optional[str] = None, *, stage: str = "cnmf",
            **paramsets: Optional[str]) -> pd.DataFrame:
    """One row per result of a stage (default CNMF): its key (subject, session, recording_id and the
    parameter-set names), what each stage of its chain reports (n_frames, n_units), for CNMF results
    ``n_accepted`` (units the curation in use accepts: what every reader shows; n_units without one),
    and each stage's compute time (``motion_s``, ``initialization_s``, ``cnmf_s``; s).

    Parameters
    ----------
    subject, session : str, optional
    stage : str
        Whose results (any registered stage with parameters).
    **paramsets : str, optional
        Parameter sets by stage name or attribute (``cnmf="minian"`` or ``cnmf_paramset="minian"``).
    """
    activate()
    target = stages.get(stage)
    if target.scope != "recording":  # results of groups (registration): their own key, groups of a subject
        cols, timed = _stage_columns(target)
        q = target.computed.proj(*cols, **timed)
        group = target.extra.get("group")
        if subject is not None and group is not None:
            q = q & (group & {"subject": subject}).proj()
        order = list(target.computed.primary_key)
        return pd.DataFrame(q.to_dicts(order_by=order), columns=order + list(cols) + list(timed))
    r = keys.restriction(subject=subject, session=session, **paramsets)
    chain = [s for s in stages.chain(stage) if s.paramset is not None]
    q, shown, times = None, [], []
    for s in reversed(chain):  # downstream first: a column a later stage reports too is the later one's
        cols, timed = _stage_columns(s)
        cols = [c for c in cols if c not in shown]
        part = s.computed.proj(*cols, **timed)
        q = part if q is None else q * part
        shown, times = cols + shown, list(timed) + times
    fields = list(keys.fields(stage))
    cols = fields + shown + times
    rows = [{c: row[c] for c in cols} for row in (q & r).to_dicts(order_by=fields)]
    if stage == "cnmf":  # the units readers show: those the curation in use accepts (n_units without one)
        cols = fields + shown + ["n_accepted"] + times
        for row in rows:
            row["n_accepted"] = unit_reader.count({k: row[k] for k in fields})
    return pd.DataFrame(rows, columns=cols)


def units(subject: Optional[str] = None, session: Optional[str] = None, **paramsets: Optional[str]) -> pd.DataFrame:
    """One row per unit: the result's key, unit_id, centroid_y / centroid_x (pixels), area (pixels),
    snr, sn and b0 / c0 (movie units), and the footprint patch's corner (pixels). No traces (see
    :func:`traces`). The units are those the result shows (:mod:`scopeline.pipeline.units`)."""
    activate()
    r = keys.restriction(subject=subject, session=session, **paramsets)
    cols = list(keys.fields("cnmf")) + ["unit_id"] + _UNIT_METRICS
    return pd.DataFrame([{c: row[c] for c in cols} for row in unit_reader.rows(r, *_UNIT_METRICS)], columns=cols)


def traces(subject: Optional[str] = None, session: Optional[str] = None, *, kind: str = "C",
           baseline: str = "cnmf", **paramsets: Optional[str]) -> pd.DataFrame:
    """One row per unit with its traces: the result's key, unit_id, ``C`` and ``S`` (float32 (frames,)
    arrays, movie units) and ``time`` (float64 (frames,), s from the first frame).

    Parameters
    ----------
    kind : str
        ``"C"`` (C and S) or ``"dff"``: also ``dff`` (float32 (frames,), dimensionless) and ``F0`` (the
        unit's resting fluorescence, movie units), by :func:`scopeline.core.traces.dff`.
    baseline : str
        dF/F baseline, ``"cnmf"`` (constant F0) or ``"percentile"`` (sliding 8th percentile, 30 s).

    Raises
    ------
    ValueError
        For another kind or baseline, or a result whose motion correction predates ``mean_raw``.
    """
    activate()
    if kind not in ("C", "dff"):
        raise ValueError(f"kind must be 'C' or 'dff', not {kind!r}")
    r = keys.restriction(subject=subject, session=session, **paramsets)
    fields = list(keys.fields("cnmf"))
    extra = ["dff", "F0"] if kind == "dff" else []
    times: dict = {}
    out = []
    for ckey in _result_keys(r):
        key = {k: ckey[k] for k in fields}
        motion_key = tuple(keys.of(key, "motion").values())
        if motion_key not in times:
            times[motion_key] = motion.frame_times(key)
        res = unit_reader.arrays(key)
        derived = unit_reader.activity(key, baseline, result=res) if kind == "dff" else None
        for i, unit_id in enumerate(res["unit_id"]):
            row = {**key, "unit_id": int(unit_id), "C": res["C"][i], "S": res["S"][i], "time": times[motion_key]}
            if derived is not None:
                row.update(dff=derived["dff"][i], F0=float(derived["F0"][i]))
            out.append(row)
    return pd.DataFrame(out, columns=fields + ["unit_id", "C", "S", "time"] + extra)


def events(subject: Optional[str] = None, session: Optional[str] = None, *, threshold: float = 3.0,
           **paramsets: Optional[str]) -> pd.DataFrame:
    """Events of every unit the results show: one row per event, from S (:func:`scopeline.core.traces.events`).

    Columns: the result's key, ``unit_id``, ``onset`` (frame of the corrected movie), ``time`` (s from the
    recording's first frame), ``frames`` (the event's length), ``amplitude`` (summed S, movie units) and
    ``amplitude_dff`` (over the unit's F0).

    Parameters
    ----------
    threshold : float
        An event adds at least this many times the unit's noise sn.

    Raises
    ------
    ValueError
        For a negative threshold, or a result whose motion correction predates ``mean_raw``.
    """
    activate()
    r = keys.restriction(subject=subject, session=session, **paramsets)
    fields = list(keys.fields("cnmf"))
    cols = ["unit_id", "onset", "time", "frames", "amplitude", "amplitude_dff"]
    out = []
    for ckey in _result_keys(r):
        key = {k: ckey[k] for k in fields}
        ev = unit_reader.activity(key, threshold=threshold, with_dff=False)["events"]
        out += [{**key, **{c: ev[c][j].item() for c in cols}} for j in range(len(ev["onset"]))]
    return pd.DataFrame(out, columns=fields + cols)


def _result_keys(restriction) -> list:
    """Keys of the CNMF results a restriction matches, in key order."""
    return (cnmf.CNMF & restriction).keys(order_by=list(keys.fields("cnmf")))


def trace_matrix(key: dict, which: str = "C") -> pd.DataFrame:
    """Traces of one CNMF result as a (frames x units) table: index ``time`` (s from the first
    frame), one column per unit_id.

    Parameters
    ----------
    key : dict
        Restricts CNMF to exactly one result.
    which : str
        ``"C"`` (calcium, movie units), ``"S"`` (deconvolved activity) or ``"YrA"`` (before deconvolution).

    Raises
    ------
    ValueError
        If ``key`` matches no result or several, or ``which`` is not C, S or YrA (or YrA is not stored).
    """
    activate()
    if which not in ("C", "S", "YrA"):
        raise ValueError(f"which must be 'C', 'S' or 'YrA', not {which!r}")
    n = len(cnmf.CNMF & key)
    if n != 1:
        raise ValueError(f"{key} matches {n} CNMF results; give a key of exactly one")
    full = (cnmf.CNMF & key).fetch1("KEY")
    res = unit_reader.arrays(full, yra=which == "YrA")
    if res[which] is None:
        raise ValueError(f"{keys.describe(full)}: YrA is not stored for this result (made by an earlier scopeline)")
    return pd.DataFrame(res[which].T, index=pd.Index(motion.frame_times(full), name="time"),
                        columns=pd.Index(res["unit_id"], name="unit_id"))


def cells(subject: Optional[str] = None, group: Optional[str] = None) -> pd.DataFrame:
    """Cells across sessions: one row per registered cell of each registration group (of ``subject``, or
    the one named ``group``): ``group_name``, ``registration_paramset``, ``cell_id``, ``score``,
    ``n_sessions`` and one column per session holding the cell's unit_id there (<NA> where not found;
    :func:`scopeline.pipeline.registration.cells`)."""
    from scopeline.pipeline import registration

    activate()
    restriction = {k: v for k, v in (("subject", subject), ("group_name", group)) if v is not None}
    frames = []
    for reg in (registration.Registration & (registration.RegistrationGroup & restriction).proj()).keys(
            order_by=["group_name"]):
        frame = registration.cells(reg["group_name"], reg[registration.RegistrationParamSet.name_attr])
        frames.append(frame.assign(group_name=reg["group_name"],
                                   registration_paramset=reg[registration.RegistrationParamSet.name_attr]))
    if not frames:
        return pd.DataFrame(columns=["group_name", "registration_paramset", "cell_id", "score", "n_sessions"])
    out = pd.concat(frames, ignore_index=True)
    first = ["group_name", "registration_paramset", "cell_id", "score", "n_sessions"]
    return out[first + [c for c in out.columns if c not in first]]


def cell_traces(group: str, cell_id: int, paramset: str = "default") -> pd.DataFrame:
    """One registered cell's traces across sessions, each on its own session's clock: one row per session
    where the cell is found, with the member's key, ``unit_id``, ``recording_start``, ``time`` (s from that
    recording's first frame), ``C`` and ``S`` (:func:`scopeline.pipeline.registration.traces`).

    Raises
    ------
    scopeline.pipeline.registration.GroupError
        If the group has no registration with that parameter set, or no such cell.
    """
    from scopeline.pipeline import registration

    activate()
    return registration.traces(group, cell_id, paramset)


def status() -> pd.DataFrame:
    """Progress of every stage across the database: one row per stage's table with ``done`` (rows
    present), ``pending`` (queued by a task, or an ingested recording, and not started, whether or
    not its upstream work is done yet), ``reserved`` (being computed now) and ``error`` (failed; see
    ``scopeline populate --retry-errors``); ``stage`` the stage's name."""
    activate()
    out = []
    for stage in stages.STAGES:
        table = stage.computed
        todo = len(stage.queued_by.proj() - table.proj())
        reserved, error = len(table.jobs.reserved), len(table.jobs.errors)
        out.append({"stage": stage.name, "table": table.__name__, "done": len(table()),
                    "pending": max(todo - reserved - error, 0), "reserved": reserved, "error": error})
    return pd.DataFrame(out, columns=["stage", "table", "done", "pending", "reserved", "error"])
