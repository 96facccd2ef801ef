"""The reader seam for units: every reader (NWB export, the query layer, reports, figures) gets a
result's units here, never from ``CNMF.Unit`` directly.

A result's units are all units of its CNMF row unless a stage chooses: a stage declares
``Stage(..., extra={"select_units": fn})`` with ``fn(cnmf_key) -> Choice or None`` (None: it has no
choice for this result, e.g. no curation is in use); the first registered stage's choice applies, so
NWB files, queries and figures show the chosen units (and units the choice made, such as merged
ones) with no change of their own. The curation stage is such a stage
(:mod:`scopeline.pipeline.curation`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

import numpy as np

from scopeline.core import traces
from scopeline.core.footprints import Footprints
from scopeline.core.quality import METRICS
from scopeline.pipeline import cnmf, keys, motion, stages
from scopeline.pipeline._util import load_npy

__all__ = ["Choice", "choice", "rows", "count", "arrays", "activity", "every_unit"]


@dataclass
class Choice:
    """The units a stage chose for one CNMF result.

    Attributes
    ----------
    unit_ids : list of int
        The CNMF units shown.
    added : list of dict
        Units the choice made (merged units): ``CNMF.Unit``'s attributes (``unit_id`` and the rest).
    labels : dict
        unit_id -> descriptive labels ('dendrite,unsure'), for every unit shown.
    source : dict
        What made the choice: ``text`` in words for summaries ("curation 2 (manual)"), and the stage's own
        fields.
    """

    unit_ids: list
    added: list = field(default_factory=list)
    labels: dict = field(default_factory=dict)
    source: dict = field(default_factory=dict)


def choice(key: Mapping) -> Optional[Choice]:
    """The first registered stage's choice of units for one CNMF result (None: every unit)."""
    for stage in stages.STAGES:
        select = stage.extra.get("select_units")
        if select is not None:
            chosen = select(dict(key))
            if chosen is not None:
                return chosen
    return None


def _result_rows(ckey: dict, attrs: tuple, selected: bool, hidden: bool = False, chosen: Optional[Choice] = None
                 ) -> list[dict]:
    """One CNMF result's unit rows (see :func:`rows`); ``hidden``: CNMF's units the choice hides too."""
    chosen = chosen if chosen is not None else (choice(ckey) if selected else None)
    q = cnmf.CNMF.Unit & ckey
    if chosen is not None and not hidden:
        q = q & [{"unit_id": int(u)} for u in chosen.unit_ids] if chosen.unit_ids else None
    got = [] if q is None else (q.proj(*attrs) if attrs else q).to_dicts(order_by="unit_id")
    if chosen is None:
        return got
    names = set(attrs) if attrs else set(cnmf.CNMF.Unit.heading.names)
    got += [{**ckey, "unit_id": int(r["unit_id"]), **{k: v for k, v in r.items() if k in names}} for r in chosen.added]
    for r in got:
        r["labels"] = chosen.labels.get(r["unit_id"], "")
    return sorted(got, key=lambda r: r["unit_id"])


def rows(key: Mapping, *attrs: str, selected: bool = True) -> list[dict]:
    """The units of ``key``'s CNMF results as dicts in (result, unit_id) order: ``attrs`` and their keys,
    or every attribute when none is named; with a chosen curation also ``labels`` (comma-separated).

    ``selected=False``: every CNMF unit, whatever a stage chose (what a curation itself reads).
    """
    order = list(keys.fields("cnmf"))
    return [r for ckey in (cnmf.CNMF & dict(key)).keys(order_by=order)
            for r in _result_rows(dict(ckey), attrs, selected)]


def every_unit(key: Mapping, *attrs: str) -> tuple[list[dict], Optional[Choice]]:
    """Every unit a curation of one result can decide on: all of CNMF's units (those the choice in use
    hides too) and the units that choice made (merged ones), in unit_id order, with ``labels`` where the
    choice gives them; and the choice (None: none in use). What a curation tool shows.

    Raises
    ------
    datajoint.DataJointError
        If ``key`` matches no CNMF result or several.
    """
    full = (cnmf.CNMF & dict(key)).fetch1("KEY")
    chosen = choice(full)
    return _result_rows(full, attrs, True, hidden=True, chosen=chosen), chosen


def count(key: Mapping, selected: bool = True) -> int:
    """How many units ``key``'s CNMF results show."""
    return len(rows(key, "unit_id", selected=selected))


def arrays(key: Mapping, selected: bool = True, yra: bool = False) -> dict:
    """One result's units as arrays, from one fetch of its unit rows (``selected``: see :func:`rows`).

    Returns
    -------
    dict
        ``A`` (:class:`scopeline.core.footprints.Footprints`, frame (height, width) pixels), ``C``, ``S``
        float32 (units, frames) movie units, ``YrA`` likewise when ``yra`` (else None; None too when the
        row predates its storage: it is read from the store only when asked for), ``unit_id`` int (units,),
        ``metrics``: name -> float64 (units,) for :data:`scopeline.core.quality.METRICS` and ``snr``
        (NaN where a result made before scopeline stored them), ``rows``: the unit rows as fetched (dicts).

    Raises
    ------
    datajoint.DataJointError
        If ``key`` matches no CNMF result or several.
    """
    full = (cnmf.CNMF & dict(key)).fetch1("KEY")
    units = _result_rows(full, (), selected)
    shape = (motion.MotionCorrection & full).fetch1("height", "width")
    names = (*METRICS, "snr")
    if not units:
        n = int((motion.MotionCorrection & full).fetch1("n_frames"))
        empty = np.zeros((0, n), np.float32)
        return {"A": Footprints.empty(shape), "C": empty, "S": empty.copy(), "YrA": empty.copy() if yra else None,
                "unit_id": np.zeros(0, int), "metrics": {name: np.zeros(0) for name in names}, "rows": []}
    A = Footprints(np.stack([u["footprint"] for u in units]), [(u["patch_y"], u["patch_x"]) for u in units], shape)
    stored = [u.get("yra") for u in units]
    return {"A": A, "C": np.stack([load_npy(u["trace"]) for u in units]),
            "S": np.stack([load_npy(u["activity"]) for u in units]),
            "YrA": np.stack([load_npy(y) for y in stored]) if yra and all(y is not None for y in stored) else None,
            "unit_id": np.array([u["unit_id"] for u in units]),
            "metrics": {name: np.array([np.nan if u.get(name) is None else u[name] for u in units], np.float64)
                        for name in names},
            "rows": units}


def activity(key: Mapping, baseline: str = "cnmf", threshold: float = 3.0, *, result: Optional[dict] = None,
             window_s: float = 30.0, quantile: float = 8.0, with_dff: bool = True) -> dict:
    """dF/F and events of one result's units (those :func:`arrays` gives), by :mod:`scopeline.core.traces`.

    Parameters
    ----------
    key : Mapping
        Restricts CNMF to exactly one result.
    baseline : str
        dF/F baseline: ``"cnmf"`` or ``"percentile"`` (:func:`scopeline.core.traces.dff`).
    threshold : float
        Events' threshold, noise units (:func:`scopeline.core.traces.events`).
    result : dict, optional
        :func:`arrays` of this key, when the caller has it already.
    window_s, quantile : float
        The percentile baseline's window (s) and percentile.
    with_dff : bool
        False: events and F0 only (``dff`` None).

    Returns
    -------
    dict
        ``unit_id`` int (units,), ``dff`` float32 (units, frames) (None without ``with_dff``), ``F0`` float64 (units,) movie units,
        ``time`` float64 (frames,) s from the recording's first frame, ``events`` (the dict of
        :func:`scopeline.core.traces.events` with ``unit_id`` added and ``time`` of each onset, s),
        ``black`` (the black level used), ``baseline``, ``threshold``.

    Raises
    ------
    ValueError
        If the motion correction predates the stored raw mean (``mean_raw``: run it again), or for
        parameters :mod:`scopeline.core.traces` refuses.
    """
    full = (cnmf.CNMF & dict(key)).fetch1("KEY")
    res = result if result is not None else arrays(full)
    mean_raw, fov_info = (motion.MotionCorrection & full).fetch1("mean_raw", "fov_info")
    if mean_raw is None:
        raise ValueError(f"{keys.describe(full)}: its motion correction has no mean_raw (made by an earlier "
                         "scopeline): dF/F needs it; run the motion correction again")
    black = float(fov_info["dark"]) if fov_info and fov_info.get("found") else 0.0
    times = motion.frame_times(full)
    f0 = traces.resting_fluorescence(res["A"], res["C"], mean_raw, black)
    dff = None
    if with_dff:
        b, f = (cnmf.CNMF & full).fetch1("b", "f") if baseline == "percentile" else (None, None)
        fps = 1.0 / float(np.median(np.diff(times))) if len(times) > 1 else 20.0
        dff = traces.dff(res["A"], res["C"], f0, baseline, b=b, f=None if f is None else load_npy(f), fps=fps,
                         window_s=window_s, quantile=quantile)
    sn = np.array([u["sn"] for u in res["rows"]], np.float64)
    ev = traces.events(res["S"], sn, threshold, f0)
    ev["unit_id"] = np.asarray(res["unit_id"], int)[ev["unit"]]
    ev["time"] = times[ev["onset"]] if len(times) else np.zeros(0)
    return {"unit_id": np.asarray(res["unit_id"], int), "dff": dff, "F0": f0, "time": times, "events": ev,
            "black": black, "baseline": baseline, "threshold": threshold}
