"""Curation: which units of a CNMF result are cells, why, and who said so; versioned, never destructive.

Tables
------
- ``CurationParamSet`` / ``CurationTask``: rule sets (:class:`scopeline.core.curation.CurationParams`)
  and which to run on which CNMF result (:func:`scopeline.pipeline._stage.stage_tables`).
- ``AutoCuration`` (computed, ``populate``): a rule set's decision and reason per unit. Each one also
  becomes a ``Curation`` (kind ``rules``), used by readers when the result has none in use yet.
- ``Curation``: every unit's decision (accepted, labels, reason, merged into), one row per version:
  a manual curation (kind ``manual``, or ``import`` from a SpikeInterface file) is a new row on top of
  a ``parent``, with its curator, time and note (an append-only chain, as spyglass's CurationV1).
  ``Curation.Merged`` holds the units its merges made (footprint from the members, trace re-estimated
  by a temporal update: :func:`scopeline.core.curation.merge`).
- ``CurationUse``: the curation every reader of a result follows (the reader seam,
  :mod:`scopeline.pipeline.units`); a result without one shows every unit.

A curation never changes CNMF rows; deleting one removes its own rows and stored objects only (and is
refused while another curation builds on it). The same in Python and on the command line
(``scopeline curate``).
"""

from __future__ import annotations

import getpass
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

import scopeline
from scopeline._dj import dj
from scopeline.core import curation as core_curation
from scopeline.core.footprints import Footprints
from scopeline.errors import ScopelineError
from scopeline.pipeline import cnmf, keys, units
from scopeline.pipeline._paramsets import parse_params
from scopeline.pipeline._stage import Stage, stage_tables

schema = dj.Schema()

__all__ = ["CurationParamSet", "CurationTask", "AutoCuration", "Curation", "CurationUse", "CurationError",
           "result_key", "curations", "state", "in_use", "use", "apply_rules", "edit", "delete", "export_json",
           "import_json", "chain"]

CurationParamSet, CurationTask = stage_tables(
    globals(), prefix="Curation", attr="curation_paramset", model=core_curation.CurationParams,
    presets=core_curation.PRESETS, label="curation", upstream="cnmf.CNMFTask", upstream_text="a CNMF task")


class CurationError(ScopelineError, ValueError):
    """A curation that does not exist, cannot be made, or cannot be deleted (the message says why)."""


class CurationConflict(CurationError):
    """The curation an edit was made on is no longer the one in use (someone saved another meanwhile)."""


@schema
class Curation(dj.Manual):
    """One version of the decisions on a CNMF result's units (see the module).

    Attributes
    ----------
    curation_id : int
        1, 2, ... per result.
    parent : int or None
        The curation this one edits (None: a first curation).
    kind : str
        ``rules`` (an AutoCuration), ``manual`` or ``import``.
    n_units, n_accepted : int
        Units it knows (CNMF's and those its chain merged) and those it shows.
    """

    definition = """
    # A curation of a CNMF result: every unit's decision; a change is a new curation on top (parent)
    -> cnmf.CNMF
    curation_id                : int32          # 1, 2, ... per result
    ---
    parent = null              : int32          # the curation this one edits (null: a first curation)
    kind                       : varchar(16)    # rules | manual | import
    curation_paramset = null   : varchar(64)    # the rule set of a rules curation
    curator                    : varchar(64)    # who
    created                    : datetime       # when (UTC)
    note = ''                  : varchar(2048)
    n_units                    : int32          # units it knows (CNMF's and merged ones)
    n_accepted                 : int32          # units it shows
    scopeline_version          : varchar(16)
    """

    class Unit(dj.Part):
        """One unit's decision in a curation."""

        definition = """
        -> master
        unit_id                    : int32
        ---
        accepted                   : bool
        labels = ''                : varchar(255)   # descriptive labels, comma-separated (core.curation.LABELS)
        reason = ''                : varchar(1024)  # why not accepted ('' when accepted)
        merged_into = null         : int32          # the unit a merge made from it
        """

    class Merged(dj.Part):
        """A unit this curation's merges made (its id is unique within the result)."""

        definition = """
        -> master
        unit_id                    : int32
        ---
        members                    : json           # the unit ids merged
        """ + cnmf.UNIT_ATTRIBUTES


@schema
class CurationUse(dj.Manual):
    """The curation every reader of a CNMF result follows (one per result)."""

    definition = """
    # The curation readers of a CNMF result follow
    -> cnmf.CNMF
    ---
    curation_id                : int32
    chosen_by                  : varchar(64)
    chosen_at                  : datetime       # UTC
    """


@schema
class AutoCuration(dj.Computed):
    """An automatic curation of one CNMF result by a rule set: every unit accepted or rejected, with the
    reason (:func:`scopeline.core.curation.curate`); also stored as a ``Curation`` of kind ``rules``
    (used by readers when none is in use yet).

    Attributes
    ----------
    n_units, n_accepted : int
        Units of the CNMF result, and those the rules accept.
    """

    definition = """
    # Automatic curation of a CNMF result by a rule set
    -> cnmf.CNMF
    -> CurationTask
    ---
    n_units                    : int32
    n_accepted                 : int32
    compute_time               : float64        # s
    scopeline_version          : varchar(16)
    """

    class Unit(dj.Part):
        """One unit's decision."""

        definition = """
        -> master
        unit_id                    : int32
        ---
        accepted                   : bool
        reason = ''                : varchar(1024)  # why not accepted ('' when accepted)
        duplicate_of = null        : int32          # the unit kept in its place
        """

    def make(self, key):
        t0 = time.perf_counter()
        name = key[CurationParamSet.name_attr]
        p = parse_params(core_curation.CurationParams, (CurationParamSet & key).fetch1("params"), "curation", name)
        res = units.arrays(key, selected=False)
        out = core_curation.curate(res["metrics"], p, A=res["A"], C=res["C"], unit_ids=res["unit_id"])
        ids = res["unit_id"]
        self.insert1({**key, "n_units": len(ids), "n_accepted": int(out.accepted.sum()),
                      "compute_time": time.perf_counter() - t0, "scopeline_version": scopeline.__version__})
        self.Unit.insert([{**key, "unit_id": int(u), "accepted": bool(a), "reason": r[:1024],
                           "duplicate_of": int(ids[d]) if d >= 0 else None}
                          for u, a, r, d in zip(ids, out.accepted, out.reasons, out.duplicate_of)])
        _insert(keys.of(key, "cnmf"), core_curation.initial_state(ids, out), kind="rules", parent=None,
                paramset=name, curator="scopeline", note=f"rule set {name!r}", use=None)


# ------------------------------------------------------------------------------------ reading


def result_key(key: Mapping) -> dict:
    """The full key of the one CNMF result ``key`` names.

    Raises
    ------
    CurationError
        If it names none or several (the message says which fields to add).
    """
    q = cnmf.CNMF & keys.of(key, "cnmf")
    n = len(q)
    if n != 1:
        free = [k for k in keys.fields("cnmf") if k not in key]
        raise CurationError(f"{keys.describe(key) or 'the key'} matches {n} CNMF results" +
                            (f": also give {', '.join(free)}" if n > 1 else ": run it first (scopeline run / populate)"))
    return q.fetch1("KEY")


def _one(ckey: dict, curation_id: Optional[int]) -> int:
    """``curation_id`` (checked), or the one in use.

    Raises
    ------
    CurationError
        If there is no such curation, or none is given and none is in use.
    """
    if curation_id is None:
        curation_id = in_use(ckey)
        if curation_id is None:
            raise CurationError(f"{keys.describe(ckey)}: no curation is in use (make one: scopeline curate ... "
                                f"--rules default)")
    if not (Curation & ckey & {"curation_id": int(curation_id)}):
        have = sorted(int(i) for i in (Curation & ckey).to_arrays("curation_id"))
        raise CurationError(f"{keys.describe(ckey)}: no curation {curation_id} (its curations: "
                            f"{', '.join(map(str, have)) or 'none'})")
    return int(curation_id)


def in_use(ckey: Mapping) -> Optional[int]:
    """The id of the curation readers of this result follow (None: none, or its row was deleted by hand;
    they show every unit). ``ckey``: a CNMF result's key."""
    q = CurationUse & dict(ckey)
    if not q:
        return None
    cid = int(q.fetch1("curation_id"))
    return cid if Curation & dict(ckey) & {"curation_id": cid} else None


def curations(key: Mapping = None) -> list[dict]:
    """Every curation of the CNMF results ``key`` matches (all when None): its key, id, parent, kind,
    rule set, curator, created, note, n_units, n_accepted, and ``in_use``."""
    rows = (Curation & dict(key or {})).to_dicts(order_by=list(keys.fields("cnmf")) + ["curation_id"])
    used = {tuple(keys.of(r, "cnmf").values()): r["curation_id"] for r in (CurationUse & dict(key or {})).to_dicts()}
    return [{**r, "in_use": used.get(tuple(keys.of(r, "cnmf").values())) == r["curation_id"]} for r in rows]


def state(ckey: Mapping, curation_id: Optional[int] = None) -> core_curation.State:
    """A curation's state (unit_id -> :class:`scopeline.core.curation.UnitState`; default the one in use).

    Raises
    ------
    CurationError
        If there is no such curation.
    """
    cid = _one(dict(ckey), curation_id)
    return {int(r["unit_id"]): core_curation.UnitState(bool(r["accepted"]), tuple(filter(None, r["labels"].split(","))),
                                                        r["reason"], r["merged_into"])
            for r in (Curation.Unit & dict(ckey) & {"curation_id": cid}).to_dicts(order_by="unit_id")}


def chain(ckey: Mapping, curation_id: Optional[int] = None) -> list[dict]:
    """A curation and its ancestors, first curation first (provenance): id, parent, kind, rule set (and
    its parameters, ``rules``, while that parameter set exists), curator, created (ISO, UTC), note,
    n_units, n_accepted; an ancestor deleted by hand ends the list as ``{"curation_id": id, "deleted": True}``.

    Raises
    ------
    CurationError
        If the curation does not exist (or none is given and none is in use).
    """
    ckey = dict(ckey)
    cid, out = _one(ckey, curation_id), []
    while cid is not None:
        q = Curation & ckey & {"curation_id": cid}
        if not q:  # deleted by hand (parent is not a foreign key): the chain is cut here, and says so
            out.insert(0, {"curation_id": cid, "deleted": True})
            break
        row = q.fetch1()
        entry = {k: row[k] for k in ("curation_id", "parent", "kind", "curation_paramset", "curator", "note",
                                     "n_units", "n_accepted")}
        entry["created"] = row["created"].isoformat() + "Z"
        rules = CurationParamSet & {CurationParamSet.name_attr: row["curation_paramset"]}
        if row["curation_paramset"] is not None and rules:
            entry["rules"] = rules.fetch1("params")
        out.insert(0, entry)
        cid = row["parent"]
    return out


def _choice(ckey: dict) -> Optional[units.Choice]:
    """The reader seam's choice: the curation in use (its accepted units, merged ones included)."""
    cid = in_use(ckey)
    if cid is None:
        return None
    st = state(ckey, cid)
    shown = [u for u, s in st.items() if s.accepted]
    lineage = [c["curation_id"] for c in chain(ckey, cid) if not c.get("deleted")]
    merged = (Curation.Merged & ckey & [{"curation_id": c} for c in lineage] & [{"unit_id": u} for u in shown]
              ).to_dicts() if shown else []
    made = {r["unit_id"] for r in merged}
    base = [u for u in shown if u not in made]
    kind, rules = (Curation & ckey & {"curation_id": cid}).fetch1("kind", "curation_paramset")
    return units.Choice(base, merged, {u: ",".join(st[u].labels) for u in shown},
                        {"curation_id": cid, "text": f"curation {cid} ({'rules ' + rules if kind == 'rules' else kind})"})


# ------------------------------------------------------------------------------------ writing


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)


def _curator(given: Optional[str]) -> str:
    return (given or os.environ.get("SCOPELINE_CURATOR") or getpass.getuser())[:64]


def _insert(ckey: dict, st: core_curation.State, *, kind: str, parent: Optional[int], paramset: Optional[str],
            curator: str, note: str, use: Optional[bool], merged: list = ()) -> int:
    """Insert one curation (inside the caller's transaction); ``use``: True makes it the one in use,
    None only when none is, False never. Returns its id."""
    ids = (Curation & ckey).to_arrays("curation_id")
    cid = int(max(ids, default=0)) + 1
    Curation.insert1({**ckey, "curation_id": cid, "parent": parent, "kind": kind, "curation_paramset": paramset,
                      "curator": curator, "created": _now(), "note": note[:2048], "n_units": len(st),
                      "n_accepted": sum(s.accepted for s in st.values()), "scopeline_version": scopeline.__version__})
    Curation.Unit.insert([{**ckey, "curation_id": cid, "unit_id": u, "accepted": s.accepted, "labels": ",".join(s.labels),
                           "reason": s.reason[:1024], "merged_into": s.merged_into} for u, s in st.items()])
    if merged:
        Curation.Merged.insert([{**r, "curation_id": cid} for r in merged])
    if use or (use is None and in_use(ckey) is None):
        _set_use(ckey, cid, curator)
    return cid


def _set_use(ckey: dict, cid: int, who: str) -> None:
    (CurationUse & ckey).delete_quick()
    CurationUse.insert1({**ckey, "curation_id": cid, "chosen_by": who[:64], "chosen_at": _now()})


def use(key: Mapping, curation_id: int, curator: Optional[str] = None) -> dict:
    """Make a curation the one readers of its result follow; returns the result's key.

    Raises
    ------
    CurationError
        If the result or the curation does not exist.
    """
    ckey = result_key(key)
    cid = _one(ckey, curation_id)
    with Curation.connection.transaction:
        _set_use(ckey, cid, _curator(curator))
    return ckey


def apply_rules(key: Mapping, paramset: str = "default", use_it: bool = True, progress: bool = False) -> int:
    """The curation of a rule set (a shipped preset or a stored CurationParamSet) on one result:
    computed when it was not (``AutoCuration``), found again when it was; made the one in use when
    ``use_it``. Returns its curation id.

    Raises
    ------
    CurationError
        If the result does not exist; :class:`scopeline.pipeline.presets.PresetError` if no such rule set.
    """
    from scopeline.pipeline import presets

    ckey = result_key(key)
    names = presets.ensure_paramset("curation", paramset)
    task = {**ckey, **names}
    CurationTask.insert1(task, skip_duplicates=True)
    AutoCuration.populate(task, reserve_jobs=True, suppress_errors=False, display_progress=progress)
    if not (AutoCuration & task):
        raise CurationError(f"{keys.describe(task)}: the automatic curation did not run (see scopeline status)")
    found = (Curation & ckey & {"kind": "rules", "curation_paramset": paramset}).to_arrays("curation_id")
    with Curation.connection.transaction:
        if len(found):
            cid = int(max(found))
        else:  # its Curation row was deleted: made again from the stored decisions
            rows = (AutoCuration.Unit & task).to_dicts(order_by="unit_id")
            stored = core_curation.CurationResult(np.array([r["accepted"] for r in rows], bool), [r["reason"] for r in rows],
                                                  np.array([-1 if r["duplicate_of"] is None else 0 for r in rows]))
            st = core_curation.initial_state([r["unit_id"] for r in rows], stored)
            cid = _insert(ckey, st, kind="rules", parent=None, paramset=paramset, curator="scopeline",
                          note=f"rule set {paramset!r}", use=False)
        if use_it:
            _set_use(ckey, cid, "scopeline")
    return cid


def _unit_ids(ckey: dict) -> list[int]:
    """The CNMF result's own unit ids."""
    return sorted(int(u) for u in (cnmf.CNMF.Unit & ckey).to_arrays("unit_id"))


def _all_units(ckey: dict) -> dict:
    """Every unit the result's curations know, as arrays (:func:`scopeline.pipeline.units.arrays`'s
    ``A``, ``C``, ``unit_id``, ``metrics``): CNMF's units, then every merged unit."""
    from scopeline.pipeline._util import load_npy

    res = units.arrays(ckey, selected=False)
    rows = (Curation.Merged & ckey).to_dicts(order_by="unit_id")
    if not rows:
        return res
    A = res["A"]
    return {"A": Footprints(np.concatenate([A.patches, np.stack([r["footprint"] for r in rows])]),
                            np.concatenate([A.offsets, [(r["patch_y"], r["patch_x"]) for r in rows]]), A.shape),
            "C": np.concatenate([res["C"], np.stack([load_npy(r["trace"]) for r in rows])]),
            "unit_id": np.concatenate([res["unit_id"], [r["unit_id"] for r in rows]]).astype(int),
            "metrics": {name: np.concatenate([v, [np.nan if r.get(name) is None else r[name] for r in rows]])
                        for name, v in res["metrics"].items()}}


def _shown_in(ckey: dict, cid: int) -> tuple[dict, list, dict]:
    """The units a curation knows, as arrays (those of :func:`_all_units` in its state), with their
    decisions, and its state."""
    st = state(ckey, cid)
    every = _all_units(ckey)
    keep = np.isin(every["unit_id"], list(st))
    sub = {"A": every["A"].subset(keep), "C": every["C"][keep], "unit_id": every["unit_id"][keep],
           "metrics": {n: v[keep] for n, v in every["metrics"].items()}}
    return sub, [st[int(u)] for u in sub["unit_id"]], st


def _merge_rows(ckey: dict, parent_state: core_curation.State, merges: list, new_ids: list, progress: bool) -> list:
    """The Merged rows of an edit's merges (one temporal update and one metrics pass over the movie)."""
    from scopeline.pipeline._util import progress_bar

    every = _all_units(ckey)
    index = {int(u): i for i, u in enumerate(every["unit_id"])}
    ctx = cnmf.fit_context(ckey)
    stays = np.array([parent_state.get(int(u), core_curation.UnitState(False)).accepted for u in every["unit_id"]])
    bar = progress_bar(2 * ctx["movie"].shape[0], f"merge {keys.recording_text(ckey)}", progress)
    out = core_curation.merge(ctx["movie"], every["A"], every["C"], ctx["b"], ctx["f"],
                              [[index[u] for u in g] for g in merges], stays, ctx["params"], diameter=ctx["diameter"],
                              fov=ctx["fov"], fps=ctx["fps"], progress=bar.update)
    bar.close()
    rows = cnmf.unit_rows(ckey, new_ids, out["A"], out["C"], out["S"], out["YrA"], out["b0"], out["c0"], out["g"],
                          out["sn"], out["snr"], out["metrics"])
    return [{**r, "members": [int(u) for u in g]} for r, g in zip(rows, merges)]


def edit(key: Mapping, change: core_curation.Edit, *, parent: Optional[int] = None, curator: Optional[str] = None,
         use_it: bool = True, kind: str = "manual", progress: bool = False, parent_in_use: bool = False) -> int:
    """A manual curation: ``change`` on top of ``parent`` (default the curation in use; with none, on top
    of every unit accepted). Merges are fitted here (:func:`scopeline.core.curation.merge`). Returns the
    new curation's id (made the one in use when ``use_it``).

    Raises
    ------
    CurationError
        If the result or the parent does not exist.
    CurationConflict
        With ``parent_in_use``: if ``parent`` (None: no curation) is not the one in use, checked before any
        work and again inside the insert's transaction (someone saved another meanwhile).
    scopeline.core.curation.EditError
        If the change names units the parent does not have, or merges a unit twice.
    """
    ckey = result_key(key)
    if parent_in_use:
        _check_in_use(ckey, parent)  # before fitting merges; again inside the insert's transaction
    elif parent is None:
        parent = in_use(ckey)
    if parent is None:
        base = core_curation.initial_state(_unit_ids(ckey))
    else:
        parent = _one(ckey, parent)
        base = state(ckey, parent)
    return _commit(ckey, base, change, parent=parent, kind=kind, curator=curator, use_it=use_it, progress=progress,
                   parent_in_use=parent_in_use)


def _check_in_use(ckey: dict, parent: Optional[int]) -> None:
    """Raise :class:`CurationConflict` unless ``parent`` (None: no curation) is the curation in use."""
    now = in_use(ckey)
    if now != parent:
        raise CurationConflict(f"{keys.describe(ckey)}: curation {now} is in use now, not {parent} (someone saved "
                               "one meanwhile): reload the result and make the change again")


def _commit(ckey: dict, base: core_curation.State, change: core_curation.Edit, *, parent: Optional[int], kind: str,
            curator: Optional[str], use_it: bool, progress: bool, parent_in_use: bool = False) -> int:
    """Check ``change`` on ``base``, fit its merges (new ids after every id the result's curations
    used), and insert the new curation in one transaction."""
    core_curation.apply_edit(base, change)  # checks the change before any work
    merged = _merge_rows(ckey, base, change.merges, list(range(len(change.merges))), progress) if change.merges else []
    with Curation.connection.transaction:  # the new units' ids: after every id the result's curations used
        if parent_in_use:
            _check_in_use(ckey, parent)
        known = {int(u) for u in (Curation.Unit & ckey).to_arrays("unit_id")} | set(base)
        top = max(known, default=-1)
        new_ids = list(range(top + 1, top + 1 + len(change.merges)))
        after = core_curation.apply_edit(base, change, new_ids)
        merged = [{**r, "unit_id": u} for r, u in zip(merged, new_ids)]
        return _insert(ckey, after, kind=kind, parent=parent, paramset=None, curator=_curator(curator),
                       note=change.note, use=use_it, merged=merged)


def delete(key: Mapping, curation_id: int) -> dict:
    """Delete one curation: its rows and the stored objects of the units it merged (those paths only,
    after the rows are gone); CNMF rows and other curations stay. When it was in use, its parent
    (if any) is used instead. Returns ``{"deleted": id, "in_use": id or None, "objects_removed": n}``.

    Raises
    ------
    CurationError
        If it does not exist, or another curation builds on it (delete that one first).
    """
    ckey = result_key(key)
    cid = _one(ckey, curation_id)
    children = sorted(int(i) for i in (Curation & ckey & {"parent": cid}).to_arrays("curation_id"))
    if children:
        raise CurationError(f"{keys.describe(ckey)}: curation {cid} is the parent of {children}; delete those first")
    parent = (Curation & ckey & {"curation_id": cid}).fetch1("parent")
    was_used = in_use(ckey) == cid
    refs = [r[a] for r in (Curation.Merged & ckey & {"curation_id": cid}).proj("trace", "activity", "yra").to_dicts()
            for a in ("trace", "activity", "yra") if r[a] is not None]  # this curation's own stored objects
    with Curation.connection.transaction:
        (CurationUse & ckey & {"curation_id": cid}).delete_quick()
        (Curation.Merged & ckey & {"curation_id": cid}).delete_quick()
        (Curation.Unit & ckey & {"curation_id": cid}).delete_quick()
        (Curation & ckey & {"curation_id": cid}).delete_quick()
        if was_used and parent is not None:
            _set_use(ckey, int(parent), _curator(None))
    from datajoint.hash_registry import delete_path

    config = Curation.connection._config
    removed = sum(bool(delete_path(ref.path, ref.store, config=config)) for ref in refs)  # only its own: other
    return {"deleted": cid, "in_use": in_use(ckey), "objects_removed": removed}  # writers' objects are never touched


def export_json(key: Mapping, path: str | Path, curation_id: Optional[int] = None) -> Path:
    """Write a curation (default the one in use) as SpikeInterface's curation JSON
    (:func:`scopeline.core.curation.to_spikeinterface`); written whole or not at all. Returns the path.

    Raises
    ------
    CurationError
        If the result or the curation does not exist (or none is given and none is in use).
    OSError
        If the file cannot be written.
    """
    ckey = result_key(key)
    cid = _one(ckey, curation_id)
    data = core_curation.to_spikeinterface(state(ckey, cid), _unit_ids(ckey))
    data["scopeline"] = {"key": {k: (int(v) if isinstance(v, (int, np.integer)) else v) for k, v in ckey.items()},
                         "curation_id": cid, "version": scopeline.__version__}
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
    return path


def import_json(key: Mapping, path: str | Path, *, curator: Optional[str] = None, note: str = "",
                use_it: bool = True, progress: bool = False) -> int:
    """A first curation (kind ``import``) from a SpikeInterface curation JSON: every unit accepted, then
    the file's removals, labels and merges (:func:`scopeline.core.curation.from_spikeinterface`).

    Raises
    ------
    CurationError
        If the file cannot be read or is not JSON; :class:`scopeline.core.curation.EditError` if it does
        not fit the result.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CurationError(f"{path}: cannot read a curation JSON ({err})") from None
    ckey = result_key(key)
    ids = _unit_ids(ckey)
    change = core_curation.from_spikeinterface(data, ids, str(path))
    said = "; ".join(filter(None, [note or f"imported from {path.name}", change.note]))  # and labels left out
    change = change.model_copy(update={"note": said})
    base = core_curation.initial_state(ids)
    return _commit(ckey, base, change, parent=None, kind="import", curator=curator, use_it=use_it, progress=progress)


# ------------------------------------------------------------------------------------ figures and NWB


def _rules_of(ckey: dict, cid: int):
    """The rule set at the root of a curation's chain (None when it is not a rules curation)."""
    root = chain(ckey, cid)[0]
    return core_curation.CurationParams.model_validate(root["rules"]) if root.get("rules") else None


def figures(key: dict, out_dir) -> dict:
    """The figure of the curation in use of a CNMF result (the report's hook, once per result): contours
    coloured by decision and label, metric scatter plots with the rule thresholds, rejected units' traces."""
    from scopeline.figures import curation_figure
    from scopeline.pipeline import initialization, motion

    ckey = dict((cnmf.CNMF & keys.of(key, "cnmf")).fetch1("KEY"))
    cid = in_use(ckey)
    if cid is None:
        return {}
    sub, decisions, _ = _shown_in(ckey, cid)
    mc = motion.MotionCorrection & ckey
    fps = initialization.corrected_fps(ckey)
    times = np.arange(sub["C"].shape[1]) / fps if fps else None
    row = (Curation & ckey & {"curation_id": cid}).fetch1()
    title = (f"{keys.recording_text(ckey)}: curation {cid} ({row['kind']}"
             f"{' ' + row['curation_paramset'] if row['curation_paramset'] else ''}, {row['curator']}) in use")
    peak, mean = mc.fetch1("max_image", "mean_image")
    path = curation_figure(sub["A"], np.asarray(peak, np.float32) - mean, sub["unit_id"], decisions, sub["metrics"],
                           sub["C"], times,
                           Path(out_dir) / f"{keys.name(ckey)}_curation{cid}.png", rules=_rules_of(ckey, cid),
                           title=title, fov=mc.field_of_view())
    return {"curation": path}


def provenance(ckey: dict) -> Optional[dict]:
    """The curation in use and its chain, for an NWB file's provenance (None: none in use)."""
    cid = in_use(ckey)
    return None if cid is None else {"in_use": cid, "chain": chain(ckey, cid)}


def nwb(nwbfile, key: dict) -> None:
    """The units the curation in use hides, with their labels, reasons and metrics, as a second
    PlaneSegmentation ``RejectedUnits`` (the NWB export's hook; the shown units are the main one's)."""
    from hdmf.common import VectorData
    from pynwb.ophys import ImageSegmentation, PlaneSegmentation

    from scopeline.core.quality import METRICS
    from scopeline.pipeline.nwb import mask_data

    ckey = dict((cnmf.CNMF & keys.of(key, "cnmf")).fetch1("KEY"))
    cid = in_use(ckey)
    if cid is None:
        return
    sub, decisions, _ = _shown_in(ckey, cid)
    hidden = np.array([not d.accepted for d in decisions], bool)
    if not hidden.any():
        return
    ophys = nwbfile.processing["ophys"]
    seg = ophys.data_interfaces.get("ImageSegmentation") or ophys.add(ImageSegmentation(name="ImageSegmentation"))
    rows = [d for d, h in zip(decisions, hidden) if h]
    columns = [VectorData(name="image_mask", description="Footprint over the whole frame, [x, y], peak 1.",
                          data=mask_data(sub["A"].subset(hidden))),
               VectorData(name="labels", description="Descriptive labels (scopeline.core.curation.LABELS), "
                          "comma-separated.", data=[",".join(d.labels) for d in rows]),
               VectorData(name="reason", description="Why the curation hides the unit.", data=[d.reason for d in rows]),
               VectorData(name="merged_into", description="The unit a merge made from it (-1: none).",
                          data=np.array([-1 if d.merged_into is None else d.merged_into for d in rows], np.int32))]
    columns += [VectorData(name=n, description=f"Quality metric: {METRICS[n][0]}.",
                           data=sub["metrics"][n][hidden].astype(np.float32)) for n in METRICS]
    seg.add_plane_segmentation(PlaneSegmentation(
        name="RejectedUnits", imaging_plane=next(iter(nwbfile.imaging_planes.values())),
        description=f"Units curation {cid} hides (kept for re-curation in other tools; their traces are not "
                    "written). Row ids are scopeline unit ids.",
        id=[int(u) for u in sub["unit_id"][hidden]], columns=columns, colnames=[c.name for c in columns]))


STAGE = Stage(
    "curation", module=sys.modules[__name__], computed=AutoCuration, paramset=CurationParamSet, task=CurationTask,
    upstream="cnmf", figures=figures, nwb=nwb,
    extra={"columns": ("n_accepted",), "select_units": _choice, "provenance": provenance, "figures_per": "cnmf"},
    description="Curation rule set of scopeline: bounds every accepted unit meets (require), thresholds of which "
                "any accepts (accept_any), and duplicate detection, over the per-unit quality metrics.")
