"""Cross-session registration as tables: groups of curated results of one subject, parameter sets,
tasks, and the Registration with each session's alignment and every cell's unit in each session.

All computation is :func:`scopeline.core.registration.register` on the units each member result shows
(the curation in use: :mod:`scopeline.pipeline.units`). The stage is group-scoped
(``Stage(scope="group")``): its results belong to a ``RegistrationGroup``, not to one recording.

>>> from scopeline.pipeline import registration
>>> registration.create_group("m1_fov1", [{"subject": "m1", "session": "d1"}, {"subject": "m1", "session": "d2"}])  # doctest: +SKIP
>>> # then: scopeline populate; registration.cells("m1_fov1")
"""

from __future__ import annotations

import sys
import time
from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd

import scopeline
from scopeline._dj import dj
from scopeline.core import registration as core_registration
from scopeline.errors import ScopelineError
from scopeline.pipeline import cnmf, keys, subject, units  # noqa: F401  (cnmf, subject: foreign keys)
from scopeline.pipeline._paramsets import parse_params
from scopeline.pipeline._stage import Stage, stage_tables
from scopeline.pipeline._util import load_npy

schema = dj.Schema()

__all__ = ["RegistrationGroup", "RegistrationParamSet", "RegistrationTask", "Registration", "create_group",
           "cells", "traces", "result", "figures", "GroupError"]


class GroupError(ScopelineError, ValueError):
    """A registration group that cannot be made (too few results, several subjects, an unknown result)."""


@schema
class RegistrationGroup(dj.Manual):
    """Results of one subject's sessions (one field of view) registered together, in their order."""

    definition = """
    # CNMF results of one subject registered across sessions
    group_name                 : varchar(64)
    ---
    -> subject.Subject
    description = ''           : varchar(1024)
    """

    class Member(dj.Part):
        """One CNMF result of the group (its units: the curation in use)."""

        definition = """
        -> master
        -> cnmf.CNMF
        ---
        session_order              : int32          # 0, 1, ...: the order sessions are registered in
        """


RegistrationParamSet, RegistrationTask = stage_tables(
    globals(), prefix="Registration", attr="registration_paramset", model=core_registration.RegistrationParams,
    presets=core_registration.PRESETS, label="registration", upstream="RegistrationGroup",
    upstream_text="a registration group")


@schema
class Registration(dj.Computed):
    """Cells across a group's sessions (:func:`scopeline.core.registration.register`).

    Attributes
    ----------
    n_cells : int
        Distinct cells; ``cells_in_n_sessions``: cells found in exactly 1, 2, ... sessions.
    error_rates, model : dict
        The same-cell model's expected false-positive / false-negative rates and its parameters.
    pairs : numpy.ndarray
        Structured (pairs,): session_a, unit_a, session_b, unit_b (indices), distance (px), correlation,
        p_same of every candidate pair.
    """

    definition = """
    # Registration of a group's sessions: alignment, cells, pair probabilities
    -> RegistrationTask
    ---
    n_cells                    : int32
    cells_in_n_sessions        : json           # cells found in exactly 1, 2, ... sessions
    error_rates                : json           # the model's expected false_positive / false_negative
    model                      : json
    pairs                      : <blob>         # structured (pairs,) with p_same
    compute_time               : float64        # s
    scopeline_version          : varchar(16)
    """

    class Session(dj.Part):
        """One member's transform to the reference session and its alignment quality."""

        definition = """
        -> master
        -> RegistrationGroup.Member
        ---
        dy                         : float32        # pixels
        dx                         : float32        # pixels
        rotation                   : float32        # degrees (clockwise on screen)
        quality                    : float32        # peak correlation of the aligned projections
        n_units                    : int32
        field = null               : <blob>         # float32 (gy, gx, 2) non-rigid field (dy, dx) px, or null
        field_step = 0             : float32        # pixels between the field's grid nodes
        """

    class Cell(dj.Part):
        """A cell with its global id in the group."""

        definition = """
        -> master
        cell_id                    : int32
        ---
        score                      : float32
        n_sessions                 : int32
        """

    class CellUnit(dj.Part):
        """The cell's unit in one session where it is found."""

        definition = """
        -> master
        cell_id                    : int32          # Registration.Cell's
        -> RegistrationGroup.Member
        ---
        unit_id                    : int32
        """

    def make(self, key):
        t0 = time.perf_counter()
        p = parse_params(core_registration.RegistrationParams, (RegistrationParamSet & key).fetch1("params"),
                         "registration", key[RegistrationParamSet.name_attr])
        members = (RegistrationGroup.Member & key).to_dicts(order_by="session_order")
        shown = [units.arrays(keys.of(m, "cnmf")) for m in members]
        result = core_registration.register([s["A"] for s in shown], p)
        summary = result.summary()
        self.insert1({**key, "n_cells": summary["n_cells"], "cells_in_n_sessions": summary["cells_in_n_sessions"],
                      "error_rates": summary["error_rates"], "model": summary["model"], "pairs": result.pairs,
                      "compute_time": time.perf_counter() - t0, "scopeline_version": scopeline.__version__})
        member_keys = [{k: m[k] for k in RegistrationGroup.Member.primary_key} for m in members]
        self.Session.insert([{**key, **mk, "dy": a.dy, "dx": a.dx, "rotation": a.rotation, "quality": a.quality,
                              "n_units": len(s["unit_id"]), "field": a.field, "field_step": a.field_step}
                             for mk, a, s in zip(member_keys, result.alignment, shown)])
        self.Cell.insert([{**key, "cell_id": c, "score": float(result.scores[c]),
                           "n_sessions": int((result.cells[c] >= 0).sum())} for c in range(len(result.cells))])
        self.CellUnit.insert([{**key, **member_keys[s], "cell_id": c, "unit_id": int(shown[s]["unit_id"][u])}
                              for c, row in enumerate(result.cells) for s, u in enumerate(row) if u >= 0])


def create_group(name: str, results: Sequence[Mapping], description: str = "", paramset: Optional[str] = "default"
                 ) -> dict:
    """A registration group of CNMF results (in the order given) and, unless ``paramset`` is None, its task.

    Parameters
    ----------
    name : str
        The group's name (a new one).
    results : sequence of dict
        Each restricts CNMF to exactly one result (e.g. subject, session and the parameter sets).
    description : str
    paramset : str or None
        Registration parameter set to queue (a shipped preset is added when missing).

    Returns
    -------
    dict
        The group's key.

    Raises
    ------
    GroupError
        If fewer than two results are given, one names no result or several, the same result is given
        twice, the results belong to different subjects, or the name is taken.
    """
    from scopeline.pipeline import presets

    if len(results) < 2:
        raise GroupError(f"group {name!r}: {len(results)} result(s); registration needs at least two sessions")
    if RegistrationGroup & {"group_name": name}:
        raise GroupError(f"group {name!r} exists already")
    full = []
    for r in results:
        q = cnmf.CNMF & dict(r)
        if len(q) != 1:
            raise GroupError(f"group {name!r}: {keys.describe(r) or r} matches {len(q)} CNMF results (give one)")
        full.append(q.fetch1("KEY"))
    if len({tuple(k.items()) for k in full}) < len(full):
        raise GroupError(f"group {name!r}: a result is given twice")
    subjects = sorted({k["subject"] for k in full})
    if len(subjects) > 1:
        raise GroupError(f"group {name!r}: results of different subjects ({', '.join(subjects)}); a group is one "
                         "subject's field of view")
    group = {"group_name": name}
    with RegistrationGroup.connection.transaction:
        RegistrationGroup.insert1({**group, "subject": subjects[0], "description": description})
        RegistrationGroup.Member.insert([{**group, **k, "session_order": i} for i, k in enumerate(full)])
        if paramset is not None:
            RegistrationTask.insert1({**group, **presets.ensure_paramset("registration", paramset)})
    return group


def cells(group: str, paramset: str = "default") -> pd.DataFrame:
    """A group's cells x sessions: one row per cell (``cell_id``, ``score``, ``n_sessions``), one column
    per member session (named by its session) holding the cell's unit_id there (<NA> where not found).

    Raises
    ------
    GroupError
        If the group has no registration with that parameter set yet.
    """
    key = _key(group, paramset)
    members = (RegistrationGroup.Member & key).to_dicts(order_by="session_order")
    names = _names(members)
    frame = pd.DataFrame((Registration.Cell & key).to_dicts(order_by="cell_id"), columns=["cell_id", "score",
                                                                                           "n_sessions"])
    for m, col in zip(members, names):
        found = {r["cell_id"]: r["unit_id"] for r in (Registration.CellUnit & key & keys.of(m, "cnmf")).to_dicts()}
        frame[col] = pd.array([found.get(c) for c in frame["cell_id"]], dtype="Int64")
    return frame


def _key(group: str, paramset: str) -> dict:
    key = {"group_name": group, RegistrationParamSet.name_attr: paramset}
    if not (Registration & key):
        raise GroupError(f"group {group!r} has no registration with parameter set {paramset!r} (scopeline populate)")
    return key


def _names(members: list) -> list:
    """Column names of a group's members: the session, with the recording where a session has several."""
    return [m["session"] if sum(x["session"] == m["session"] for x in members) == 1 else
            f"{m['session']}/{m['recording_id']}" for m in members]


def traces(group: str, cell_id: int, paramset: str = "default") -> pd.DataFrame:
    """One registered cell's traces in every session where it is found, each on its own session's clock.

    Parameters
    ----------
    group : str
        The registration group.
    cell_id : int
        The cell's global id (:func:`cells`).
    paramset : str
        Registration parameter set.

    Returns
    -------
    pandas.DataFrame
        One row per session with the cell: ``session_order``, the member's CNMF key, ``unit_id``,
        ``recording_start`` (datetime, when the recording's metadata gives it), ``time`` (float64 (frames,), s
        from that recording's first frame), ``C`` and ``S`` (float32 (frames,), movie units: not dF/F).

    Raises
    ------
    GroupError
        If the group has no such registration, or no cell ``cell_id``.
    """
    from scopeline.pipeline import acquisition, motion

    key = _key(group, paramset)
    if not (Registration.Cell & key & {"cell_id": int(cell_id)}):
        raise GroupError(f"group {group!r}: no cell {cell_id} (cells 0..{len(Registration.Cell & key) - 1})")
    fields = list(keys.fields("cnmf"))
    rows = []
    for r in (Registration.CellUnit * RegistrationGroup.Member & key & {"cell_id": int(cell_id)}).to_dicts(
            order_by="session_order"):
        ckey = keys.of(r, "cnmf")
        trace, activity = (cnmf.CNMF.Unit & ckey & {"unit_id": r["unit_id"]}).fetch1("trace", "activity")
        rows.append({"session_order": r["session_order"], **ckey, "unit_id": int(r["unit_id"]),
                     "recording_start": (acquisition.RecordingInfo & ckey).fetch1("recording_start"),
                     "time": motion.frame_times(ckey), "C": load_npy(trace), "S": load_npy(activity)})
    return pd.DataFrame(rows, columns=["session_order", *fields, "unit_id", "recording_start", "time", "C", "S"])


def result(group: str, paramset: str = "default") -> core_registration.RegistrationResult:
    """A stored registration as a :class:`scopeline.core.registration.RegistrationResult` (the units of each
    member as the registration saw them, moved by the stored alignment: for figures and further analysis).

    Raises
    ------
    GroupError
        If the group has no such registration, or a member's units are no longer those it registered (a
        curation changed since: populate again after deleting the registration).
    """
    key = _key(group, paramset)
    row = (Registration & key).fetch1()
    members = (RegistrationGroup.Member & key).to_dicts(order_by="session_order")
    p = parse_params(core_registration.RegistrationParams, (RegistrationParamSet & key).fetch1("params"),
                     "registration", paramset)
    shown, alignment = [], []
    for m in members:
        mk = {k: m[k] for k in RegistrationGroup.Member.primary_key}
        a = (Registration.Session & key & mk).fetch1()
        sub = units.arrays(keys.of(m, "cnmf"))
        registered = set((Registration.CellUnit & key & mk).to_arrays("unit_id").tolist())
        if len(sub["unit_id"]) != a["n_units"] or not registered <= set(sub["unit_id"].tolist()):
            raise GroupError(f"group {group!r}: {keys.describe(keys.of(m, 'cnmf'))} shows other units than the "
                             f"{a['n_units']} the registration saw (its curation changed since)")
        shown.append(sub)
        alignment.append(core_registration.Alignment(float(a["dy"]), float(a["dx"]), float(a["rotation"]),
                                                     float(a["quality"]), a["field"], float(a["field_step"])))
    n_cells = int(row["n_cells"])
    cells = np.full((n_cells, len(members)), -1, int)
    index = [{int(u): i for i, u in enumerate(sub["unit_id"])} for sub in shown]
    order = {tuple(keys.of(m, "cnmf").values()): i for i, m in enumerate(members)}
    for r in (Registration.CellUnit & key).to_dicts():
        s = order[tuple(keys.of(r, "cnmf").values())]
        cells[r["cell_id"], s] = index[s][int(r["unit_id"])]
    scores = np.array([c["score"] for c in (Registration.Cell & key).to_dicts(order_by="cell_id")], np.float64)
    moved, cents = core_registration.place([sub["A"] for sub in shown], alignment, p.reference)
    model = {k: (tuple(v) if isinstance(v, list) else v) for k, v in row["model"].items()}
    return core_registration.RegistrationResult(alignment, cells, scores, row["pairs"], model, row["error_rates"],
                                                cents, moved, tuple(shown[p.reference]["A"].shape))


def figures(key: dict, out_dir) -> dict:
    """The figure of one stored registration (the report's hook): aligned footprints, cells coloured by id,
    the fitted same-cell model with its threshold, cells found in 1..N sessions."""
    from pathlib import Path

    from scopeline.figures import registration_figure

    group, paramset = key["group_name"], key[RegistrationParamSet.name_attr]
    members = (RegistrationGroup.Member & key).to_dicts(order_by="session_order")
    subject_name = (RegistrationGroup & key).fetch1("subject")
    path = registration_figure(result(group, paramset), Path(out_dir) / f"registration_{keys.file_part(group)}_{keys.file_part(paramset)}.png",
                               _names(members), title=f"{subject_name}: registration group {group!r} ({paramset})")
    return {f"registration_{group}": path}


def nwb(nwbfile, key: dict) -> None:
    """Each registration's global cell ids as a PlaneSegmentation column ``cell_id_<group>`` of a member
    result's NWB file (the NWB export's hook; -1 for a unit the registration did not see)."""
    import re

    ophys = nwbfile.processing.get("ophys")
    seg = ophys.data_interfaces.get("ImageSegmentation") if ophys is not None else None
    if seg is None or "PlaneSegmentation" not in seg.plane_segmentations:
        return
    table = seg.plane_segmentations["PlaneSegmentation"]
    member = keys.of(key, "cnmf")
    for reg in (Registration & (RegistrationGroup.Member & member).proj()).keys(order_by=["group_name"]):
        found = {r["unit_id"]: r["cell_id"] for r in (Registration.CellUnit & reg & member).to_dicts()}
        name = "cell_id_" + re.sub(r"\W", "_", reg["group_name"])
        if name not in table.colnames:
            table.add_column(name=name, description=f"Global cell id in registration group {reg['group_name']!r} "
                             f"(parameter set {reg[RegistrationParamSet.name_attr]!r}); -1: not registered.",
                             data=np.array([found.get(int(u), -1) for u in table.id[:]], np.int32))


STAGE = Stage(
    "registration", module=sys.modules[__name__], computed=Registration, paramset=RegistrationParamSet,
    task=RegistrationTask, scope="group", label="registration", nwb=nwb, figures=figures,
    extra={"columns": ("n_cells",), "group": RegistrationGroup},
    description="Cross-session registration parameter set of scopeline (alignment search, candidate-pair distance, "
                "same-cell probability); pixels of the reference session.")
