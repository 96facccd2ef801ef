"""The reader seam for units: every reader (NWB export, the query layer, reports) gets a result's units
here, never from ``CNMF.Unit`` directly.

Today a result's units are all units of its CNMF row. A stage that chooses units (a curation) declares
``Stage(..., extra={"select_units": fn})`` with ``fn(key) -> restriction or None`` (None: it has no
choice for this result, e.g. none was made); :func:`selection` applies the first such choice, so
NWB files, queries and figures show the curated units with no change of their own.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from scopeline.core.footprints import Footprints
from scopeline.core.quality import METRICS
from scopeline.pipeline import cnmf, motion, stages
from scopeline.pipeline._util import load_npy

__all__ = ["table", "selection", "rows", "arrays"]


def selection(key: Mapping):
    """The restriction on ``CNMF.Unit`` of the units a result shows: the first registered stage's
    choice (``extra["select_units"]``) for ``key``, else every unit (an empty restriction)."""
    for stage in stages.STAGES:
        select = stage.extra.get("select_units")
        if select is not None:
            chosen = select(dict(key))
            if chosen is not None:
                return chosen
    return {}


def table(key: Mapping, selected: bool = True):
    """``CNMF.Unit`` restricted to the units of the results ``key`` matches (a DataJoint expression);
    ``selected=False``: every unit, whatever a curation chose (what a curation itself reads)."""
    return cnmf.CNMF.Unit & dict(key) & (selection(key) if selected else {})


def rows(key: Mapping, *attrs: str, selected: bool = True) -> list[dict]:
    """The units of ``key``'s results as dicts in (result, unit_id) order: ``attrs`` and their keys, or
    every attribute when none is named (``selected``: see :func:`table`)."""
    from scopeline.pipeline import keys

    q = table(key, selected)
    if attrs:
        q = q.proj(*attrs)
    return q.to_dicts(order_by=list(keys.fields("cnmf")) + ["unit_id"])


def arrays(key: Mapping, selected: bool = True, yra: bool = False) -> dict:
    """One result's units as arrays, from one fetch of its unit rows (``selected``: see :func:`table`).

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
    units = rows(full, selected=selected)
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
