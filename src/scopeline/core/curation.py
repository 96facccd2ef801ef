"""Automatic curation: rules over the per-unit quality metrics that accept or reject each unit of a CNMF
result, with the reason for every rejection, and duplicate detection.

Rule semantics (CaImAn's component evaluation, Giovannucci et al. 2019, eLife): a unit is **accepted**
when it passes **all** of the ``require`` bounds (each a ``min`` and/or ``max`` on one metric) and
**any** of the ``accept_any`` thresholds (a metric at or above its value; an empty ``accept_any``
accepts every unit that meets ``require``). A unit whose metric is NaN (not computed) fails a bound
on it. Among accepted units, a pair whose footprints overlap (the smaller one lies at least
``duplicates.overlap`` on the other's support, grown by ``duplicates.dilate`` pixels: a cell CNMF
split in two) *and* whose traces correlate (Pearson r of C at least ``duplicates.correlation``) is a
duplicate: the unit of lower ``event_snr`` is rejected as the duplicate of the other. Metrics are those of :data:`scopeline.core.quality.METRICS`, plus ``snr``
(peak of C over its noise).

Manual curation (:class:`Edit`, :func:`apply_edit`) works on a :data:`State`, every unit's decision
(accepted, labels from :data:`LABELS`, reason, the unit it was merged into); a merge
(:func:`merge`) gives the members one footprint (:func:`scopeline.core.cnmf.combine`) and
re-estimates its trace by a CNMF temporal update (Pnevmatikakis et al. 2016) on the merged
footprint beside the units it touches. :func:`to_spikeinterface` / :func:`from_spikeinterface` write
and read SpikeInterface's curation format (``format_version`` 2: ``label_definitions``,
``manual_labels``, ``merges``, ``removed``; version 1 is read too) so that labels travel between
tools. The database's Curation tables are :mod:`scopeline.pipeline.curation`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from scopeline.core.params import StageParams
from scopeline.errors import ScopelineError
from scopeline.core.quality import METRICS

__all__ = ["Bound", "DuplicateParams", "CurationParams", "CurationResult", "curate", "duplicates", "PRESETS",
           "CURATION_METRICS", "LABELS", "DECISIONS", "UnitState", "State", "Edit", "EditError", "initial_state",
           "apply_edit", "make_edit", "parse_ids", "parse_merges", "parse_labels", "to_spikeinterface", "from_spikeinterface",
           "merge"]

#: metrics a rule may name
CURATION_METRICS = (*METRICS, "snr")


class Bound(BaseModel):
    """Bounds on one metric: ``min`` <= value <= ``max`` (either may be None)."""

    model_config = ConfigDict(extra="forbid")
    min: Optional[float] = None
    max: Optional[float] = None

    @model_validator(mode="after")
    def _ordered(self):
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class DuplicateParams(BaseModel):
    """When two accepted units are one cell: footprints that overlap and traces that correlate."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    overlap: float = Field(0.5, ge=0.0, le=1.0, description="Fraction of the smaller unit's footprint (its sum) on "
                           "the other's support (pixels at 20% of its peak and up, dilated by `dilate`), at least.")
    dilate: int = Field(2, ge=0, le=10, description="Pixels the support is grown by (a cell split in two by CNMF "
                        "gives halves side by side that barely overlap).")
    correlation: float = Field(0.8, ge=-1.0, le=1.0, description="Pearson r of the two traces C, at least.")


def _known(names) -> None:
    unknown = sorted(set(names) - set(CURATION_METRICS))
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}: rules may name {', '.join(CURATION_METRICS)}")


class CurationParams(StageParams):
    """A rule set (see the module's rule semantics)."""

    require: dict[str, Bound] = Field(default_factory=dict, description="Bounds every accepted unit meets.")
    accept_any: dict[str, float] = Field(default_factory=dict, description="A unit is accepted when any of these "
                                         "metrics reaches its threshold (empty: no such test).")
    duplicates: DuplicateParams = Field(default_factory=DuplicateParams)

    @field_validator("require", "accept_any")
    @classmethod
    def _metrics_exist(cls, v: dict) -> dict:
        _known(v)
        return v


#: shipped rule sets. ``none`` accepts every unit. The thresholds of ``default`` and ``strict`` are first
#: values from CaImAn's defaults and this project's measured metric ranges; they are to be measured on
#: the realistic simulator and the real recordings with the Curation stage (issue 13).
PRESETS: dict[str, CurationParams] = {
    "none": CurationParams(duplicates=DuplicateParams(enabled=False)),
    "default": CurationParams(
        require={"r_value": Bound(min=0.8), "outside_fov": Bound(max=0.5), "rel_area": Bound(min=0.2, max=5.0)},
        accept_any={"event_snr": 2.0, "r_value": 0.85}),
    "strict": CurationParams(
        require={"r_value": Bound(min=0.85), "outside_fov": Bound(max=0.2), "rel_area": Bound(min=0.3, max=3.0),
                 "compactness": Bound(min=0.4), "elongation": Bound(max=2.5)},
        accept_any={"event_snr": 3.0}),
}


@dataclass
class CurationResult:
    """Outcome of :func:`curate`.

    Attributes
    ----------
    accepted : numpy.ndarray
        bool (units,).
    reasons : list of str
        Per unit: '' when accepted, else why not (e.g. ``"r_value 0.42 < 0.8; outside_fov 0.9 > 0.5"``,
        ``"no accept_any metric reached (event_snr 1.1 < 2)"``, ``"duplicate of unit 7"``).
    duplicate_of : numpy.ndarray
        int (units,): the unit kept in its place, or -1.
    """

    accepted: np.ndarray
    reasons: list
    duplicate_of: np.ndarray


def _value(metrics: dict, name: str, n: int) -> np.ndarray:
    if name not in metrics:
        raise KeyError(f"the rules name metric {name!r}, which the result does not have ({', '.join(metrics)})")
    v = np.asarray(metrics[name], np.float64)
    if v.shape != (n,):
        raise ValueError(f"metric {name!r} has shape {v.shape}, expected ({n},)")
    return v


def curate(metrics: dict, params: Optional[CurationParams] = None, *, A=None, C: Optional[np.ndarray] = None,
           unit_ids: Optional[np.ndarray] = None) -> CurationResult:
    """Accept or reject each unit by a rule set.

    Parameters
    ----------
    metrics : dict
        Metric name -> float (units,) (:func:`scopeline.core.quality.unit_metrics`, and ``snr``).
    params : CurationParams, optional
        Default ``PRESETS["default"]``.
    A : scopeline.core.footprints.Footprints, optional
        Footprints, for duplicates (no duplicate test without ``A`` and ``C``).
    C : numpy.ndarray, optional
        float (units, frames) traces, for duplicates.
    unit_ids : numpy.ndarray, optional
        Ids named in reasons (default 0 .. units - 1).

    Returns
    -------
    CurationResult

    Raises
    ------
    KeyError
        If a rule names a metric ``metrics`` lacks.
    ValueError
        If a metric's length differs from the others'.
    """
    p = params or PRESETS["default"]
    n = len(next(iter(metrics.values()))) if metrics else (len(C) if C is not None else 0)
    ids = np.arange(n) if unit_ids is None else np.asarray(unit_ids)
    why: list[list[str]] = [[] for _ in range(n)]
    for name, bound in p.require.items():
        v = _value(metrics, name, n)
        for i in range(n):
            if not np.isfinite(v[i]):
                why[i].append(f"{name} not computed")
            elif bound.min is not None and v[i] < bound.min:
                why[i].append(f"{name} {v[i]:.3g} < {bound.min:g}")
            elif bound.max is not None and v[i] > bound.max:
                why[i].append(f"{name} {v[i]:.3g} > {bound.max:g}")
    if p.accept_any:
        values = {name: _value(metrics, name, n) for name in p.accept_any}
        for i in range(n):
            if not any(values[m][i] >= t for m, t in p.accept_any.items()):
                shown = ", ".join(f"{m} {values[m][i]:.3g} < {t:g}" if np.isfinite(values[m][i]) else f"{m} not computed"
                                  for m, t in p.accept_any.items())
                why[i].append(f"no accept_any metric reached ({shown})")
    accepted = np.array([not w for w in why], bool)
    duplicate_of = np.full(n, -1, int)
    if p.duplicates.enabled and A is not None and C is not None and accepted.sum() > 1:
        order = metrics.get("event_snr", metrics.get("snr"))
        peak = np.asarray(C, np.float64).max(axis=1)
        strength = peak if order is None else np.where(np.isfinite(order), np.asarray(order, np.float64), peak)
        for loser, winner in duplicates(A, np.asarray(C), accepted, strength, p.duplicates):
            duplicate_of[loser] = winner
            accepted[loser] = False
            why[loser].append(f"duplicate of unit {ids[winner]}")
    return CurationResult(accepted, ["; ".join(w) for w in why], duplicate_of)


def duplicates(A, C: np.ndarray, candidates: np.ndarray, strength: np.ndarray,
               p: DuplicateParams) -> list[tuple[int, int]]:
    """Pairs ``(duplicate, kept)`` of unit indices (not ids) among the ``candidates`` (bool (units,); ``A``
    Footprints, ``C`` float (units, frames), ``strength`` float (units,)): the smaller footprint lies at
    least ``p.overlap`` on the other's support (20% of its peak and up, grown by ``p.dilate`` pixels)
    and the traces' Pearson r is at least ``p.correlation``; the weaker unit (lower ``strength``) of
    each pair is the duplicate, each unit a duplicate at most once, strongest first."""
    from scipy import ndimage

    patches = np.asarray(A.patches, np.float64)
    peak = np.maximum(patches.max(axis=(1, 2), keepdims=True), 1e-12)
    sup = patches >= 0.2 * peak
    if p.dilate:
        disk = np.hypot(*np.mgrid[-p.dilate: p.dilate + 1, -p.dilate: p.dilate + 1]) <= p.dilate
        sup = np.stack([ndimage.binary_dilation(s_, disk) for s_ in sup])
    mass = np.maximum(patches.sum(axis=(1, 2)), 1e-12)
    area = sup.sum(axis=(1, 2))
    Cc = np.asarray(C, np.float64) - np.asarray(C, np.float64).mean(axis=1, keepdims=True)
    sd = np.sqrt((Cc**2).sum(axis=1))
    gone = np.zeros(len(candidates), bool)
    kept = np.zeros(len(candidates), bool)  # a unit another is the duplicate of stays
    overlaps = A.overlaps()
    out = []
    for i in np.argsort(-strength, kind="stable"):
        if not candidates[i] or gone[i]:
            continue
        for j in overlaps[i]:
            if not candidates[j] or gone[j] or kept[j] or strength[j] > strength[i]:
                continue
            si, sj = A.relative(i, j)
            small, big, s_small, s_big = (j, i, sj, si) if area[j] <= area[i] else (i, j, si, sj)
            share = float((patches[small][s_small] * sup[big][s_big]).sum() / mass[small])
            r = float(Cc[i] @ Cc[j] / (sd[i] * sd[j])) if sd[i] > 0 and sd[j] > 0 else 0.0
            if share >= p.overlap and r >= p.correlation:
                gone[j] = kept[i] = True
                out.append((int(j), int(i)))
    return out


# ------------------------------------------------------------------------------ manual curation

#: the label vocabulary: label -> meaning. ``accept`` and ``reject`` are decisions (they set whether
#: the unit is shown); the others describe a unit and may be combined.
LABELS: dict[str, str] = {
    "accept": "a cell: shown by every reader and exported",
    "reject": "not a cell: hidden from readers and exports (kept in the database)",
    "cell": "a cell body (soma)",
    "dendrite": "a process (dendrite or axon), not a soma",
    "artifact": "not neural: line noise, the lens edge, the frame border, motion",
    "duplicate": "the same cell as another unit",
    "neuropil": "diffuse out-of-focus signal",
    "noise": "no clear calcium signal",
    "unsure": "needs a second look",
}

#: labels that are decisions
DECISIONS = ("accept", "reject")

#: other tools' labels read as ours (SpikeInterface / phy quality labels)
_SYNONYMS = {"good": "accept", "bad": "reject", "mua": "unsure"}


class EditError(ScopelineError, ValueError):
    """A manual edit that does not fit the curation it edits (unknown unit, label or merge)."""


@dataclass(frozen=True)
class UnitState:
    """One unit's decision in a curation.

    Attributes
    ----------
    accepted : bool
        Shown by readers.
    labels : tuple of str
        Descriptive labels (:data:`LABELS` other than the decisions), sorted.
    reason : str
        Why it is not accepted ('' when it is).
    merged_into : int or None
        The unit made from it by a merge.
    """

    accepted: bool = True
    labels: tuple = ()
    reason: str = ""
    merged_into: Optional[int] = None


#: unit_id -> UnitState
State = dict


def initial_state(unit_ids, result: Optional[CurationResult] = None) -> State:
    """The state of a first curation: every unit accepted, or the decisions of an automatic curation
    (duplicates labelled ``duplicate``)."""
    ids = [int(u) for u in unit_ids]
    if result is None:
        return {u: UnitState() for u in ids}
    return {u: UnitState(bool(a), ("duplicate",) if d >= 0 else (), r)
            for u, a, r, d in zip(ids, result.accepted, result.reasons, result.duplicate_of)}


class Edit(BaseModel):
    """A manual curation: what a person changes on top of a parent curation.

    Attributes
    ----------
    accept, reject : list of int
        Units to show / hide (a unit in both is an error).
    labels : dict
        unit_id -> labels (:data:`LABELS`) added to the unit; ``accept`` / ``reject`` among them decide.
    merges : list of list of int
        Groups of units that are one cell (each at least two, a unit in one group at most); each
        becomes a new unit (:func:`merge`), its members hidden.
    note : str
        Why (free text).
    """

    model_config = ConfigDict(extra="forbid")
    accept: list[int] = Field(default_factory=list)
    reject: list[int] = Field(default_factory=list)
    labels: dict[int, list[str]] = Field(default_factory=dict)
    merges: list[list[int]] = Field(default_factory=list)
    note: str = ""

    @field_validator("labels")
    @classmethod
    def _vocabulary(cls, v: dict) -> dict:
        out = {}
        for unit, names in v.items():
            read = [_SYNONYMS.get(n.strip().lower(), n.strip().lower()) for n in names]
            unknown = sorted({n for n in read if n not in LABELS})
            if unknown:
                raise ValueError(f"unit {unit}: unknown label(s) {unknown}; the labels are {', '.join(LABELS)}")
            out[int(unit)] = read
        return out

    @field_validator("merges")
    @classmethod
    def _groups(cls, v: list) -> list:
        seen: set = set()
        for group in v:
            if len(set(group)) < 2:
                raise ValueError(f"merge {'+'.join(map(str, group))}: a merge needs at least two different units")
            again = seen & set(group)
            if again:
                raise ValueError(f"unit(s) {sorted(again)} in more than one merge")
            seen |= set(group)
        return [sorted(set(g)) for g in v]

    @model_validator(mode="after")
    def _decided_once(self):
        accept = set(self.accept) | {u for u, names in self.labels.items() if "accept" in names}
        reject = set(self.reject) | {u for u, names in self.labels.items() if "reject" in names}
        both = accept & reject
        if both:
            raise ValueError(f"unit(s) {sorted(both)} both accepted and rejected")
        return self

    def is_empty(self) -> bool:
        return not (self.accept or self.reject or self.labels or self.merges)


def make_edit(**fields) -> Edit:
    """An :class:`Edit` from its fields, with a validation failure as one :class:`EditError` line.

    Raises
    ------
    EditError
        If the fields do not make a valid edit (the message says which).
    """
    try:
        return Edit(**fields)
    except ValidationError as err:
        raise EditError("; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())) from None


def parse_ids(text: str) -> list[int]:
    """``"3,7, 12"`` -> [3, 7, 12].

    Raises
    ------
    EditError
        If an item is not an integer.
    """
    out = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        if not re.fullmatch(r"-?\d+", item):
            raise EditError(f"{item!r} is not a unit id (give integers separated by commas, e.g. 3,7)")
        out.append(int(item))
    return out


def parse_merges(texts) -> list[list[int]]:
    """``["4+9", "11+12+30"]`` -> [[4, 9], [11, 12, 30]].

    Raises
    ------
    EditError
        If a group is not unit ids joined by ``+``.
    """
    out = []
    for text in texts:
        if not re.fullmatch(r"\s*\d+(\s*\+\s*\d+)+\s*", text):
            raise EditError(f"merge {text!r}: give unit ids joined by '+', e.g. 4+9")
        out.append([int(t) for t in text.split("+")])
    return out


def parse_labels(texts) -> dict[int, list[str]]:
    """``["12=dendrite", "3=artifact,reject"]`` -> {12: ["dendrite"], 3: ["artifact", "reject"]}.

    Raises
    ------
    EditError
        If an item is not ``UNIT=LABEL[,LABEL...]``.
    """
    out: dict[int, list[str]] = {}
    for text in texts:
        m = re.fullmatch(r"\s*(\d+)\s*=\s*([A-Za-z_][\w,\s-]*)", text)
        if not m:
            raise EditError(f"label {text!r}: give UNIT=LABEL, e.g. 12=dendrite (labels: {', '.join(LABELS)})")
        out.setdefault(int(m.group(1)), []).extend(t.strip() for t in m.group(2).split(",") if t.strip())
    return out


def apply_edit(state: State, edit: Edit, new_ids: Optional[list] = None) -> State:
    """The state after a manual edit (``state`` itself is not changed).

    Merges come first (members hidden, ``merged_into`` the new unit, which is accepted and carries
    the members' descriptive labels), then accept / reject, then labels.

    Parameters
    ----------
    state : State
        The parent curation's state.
    edit : Edit
    new_ids : list of int, optional
        Ids of the units the merges make, one per merge (default: after the largest id in ``state``).

    Raises
    ------
    EditError
        If the edit names a unit the state lacks, merges a unit merged before, or ``new_ids`` has
        the wrong length or ids already in use.
    """
    named = set(edit.accept) | set(edit.reject) | set(edit.labels) | {u for g in edit.merges for u in g}
    unknown = sorted(named - set(state))
    if unknown:
        raise EditError(f"unit(s) {unknown} are not units of this curation (its units: {_ranges(sorted(state))})")
    again = sorted(u for g in edit.merges for u in g if state[u].merged_into is not None)
    if again:
        raise EditError(f"unit(s) {again} were merged before (into {sorted({state[u].merged_into for u in again})}); "
                        "merge those units instead")
    members = {u for g in edit.merges for u in g} | {u for u, s in state.items() if s.merged_into is not None}
    accepting = set(edit.accept) | {u for u, names in edit.labels.items() if "accept" in names}
    if accepting & members:
        raise EditError(f"unit(s) {sorted(accepting & members)} are merged into another unit: accept the merged "
                        "unit instead")
    top = max(state, default=-1)
    new_ids = list(range(top + 1, top + 1 + len(edit.merges))) if new_ids is None else [int(i) for i in new_ids]
    if len(new_ids) != len(edit.merges) or set(new_ids) & set(state):
        raise EditError(f"new unit ids {new_ids} for {len(edit.merges)} merge(s) are wrong or in use")
    out = dict(state)
    for new, group in zip(new_ids, edit.merges):
        labels = tuple(sorted({lab for u in group for lab in state[u].labels if lab != "duplicate"}))
        for u in group:
            out[u] = replace(out[u], accepted=False, reason=f"merged into unit {new}", merged_into=new)
        out[new] = UnitState(True, labels, "")
    decided = {u: "accept" for u in edit.accept} | {u: "reject" for u in edit.reject}
    for u, names in edit.labels.items():
        decided.update({u: n for n in names if n in DECISIONS})
        extra = tuple(n for n in names if n not in DECISIONS)
        if extra:
            out[u] = replace(out[u], labels=tuple(sorted(set(out[u].labels) | set(extra))))
    for u, what in decided.items():
        if what == "accept":
            out[u] = replace(out[u], accepted=True, reason="")
        else:
            shown = f" ({', '.join(out[u].labels)})" if out[u].labels else ""
            out[u] = replace(out[u], accepted=False, reason=f"rejected by hand{shown}")
    return out


def _ranges(ids: list) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    out, start = [], None
    for i, u in enumerate(ids):
        if start is None:
            start = u
        if i + 1 == len(ids) or ids[i + 1] != u + 1:
            out.append(f"{start}" if start == u else f"{start}-{u}")
            start = None
    return ", ".join(out) or "none"


# ------------------------------------------------------------------------------ SpikeInterface format


def _members(state: State, unit: int, base: set) -> list[int]:
    """The original units a (possibly merged) unit is made of."""
    if unit in base:
        return [unit]
    return sorted(m for u, s in state.items() if s.merged_into == unit for m in _members(state, u, base))


def to_spikeinterface(state: State, unit_ids) -> dict:
    """A curation as SpikeInterface's curation format (``format_version`` "2").

    Parameters
    ----------
    state : State
        The curation's state.
    unit_ids : sequence of int
        The result's own units (CNMF's): the format's ``unit_ids``; units made by merges appear as
        ``merges`` (members flattened to these ids, ``new_unit_id`` scopeline's id).

    Returns
    -------
    dict
        ``format_version``, ``unit_ids``, ``label_definitions`` (``quality``: accept / reject,
        exclusive; ``type``: the descriptive labels), ``manual_labels`` (one entry per unit, ``labels``:
        category -> list), ``merges`` (the merged units that are still units), ``splits`` (empty),
        ``removed`` (units hidden that are not merge members).
    """
    base = {int(u) for u in unit_ids}
    kinds = [name for name in LABELS if name not in DECISIONS]
    labels, merges, removed = [], [], []
    for u in sorted(state):
        s = state[u]
        if s.merged_into is not None:
            continue  # a merge's members are described by their merge
        if u in base:
            entry = {"quality": ["accept" if s.accepted else "reject"]}
            if s.labels:
                entry["type"] = list(s.labels)
            labels.append({"unit_id": u, "labels": entry})
            if not s.accepted:
                removed.append(u)
        elif s.accepted:  # a merged unit (SpikeInterface labels only the units of unit_ids)
            merges.append({"unit_ids": _members(state, u, base), "new_unit_id": u})
        else:  # a merge hidden again: its members removed
            removed.extend(_members(state, u, base))
    return {"format_version": "2", "unit_ids": sorted(base),
            "label_definitions": {"quality": {"label_options": list(DECISIONS), "exclusive": True},
                                  "type": {"label_options": kinds, "exclusive": False}},
            "manual_labels": labels, "merges": merges, "splits": [], "removed": removed}


def from_spikeinterface(data: dict, unit_ids, source: str = "the curation") -> Edit:
    """An :class:`Edit` of a first curation (every unit accepted) from SpikeInterface's curation format
    (version 1 or 2): removed units rejected, quality labels deciding (``good`` reads as accept), other
    labels kept, merges merged (their ``new_unit_id`` is not kept: scopeline numbers its own units).

    Parameters
    ----------
    data : dict
        The parsed JSON.
    unit_ids : sequence of int
        The result's units (the file's ``unit_ids`` must be among them).
    source : str
        The file, for messages.

    Raises
    ------
    EditError
        If the file is not in that format, names units the result lacks, or labels outside
        :data:`LABELS`.
    """
    if not isinstance(data, dict) or "unit_ids" not in data:
        raise EditError(f"{source}: not a SpikeInterface curation (no 'unit_ids')")
    version = str(data.get("format_version", "1"))
    if version not in ("1", "2"):
        raise EditError(f"{source}: format_version {version!r} is not 1 or 2")
    try:
        ids = [int(u) for u in data["unit_ids"]]
    except (TypeError, ValueError):
        raise EditError(f"{source}: unit_ids must be integers (scopeline unit ids)") from None
    unknown = sorted(set(ids) - {int(u) for u in unit_ids})
    if unknown:
        raise EditError(f"{source}: unit(s) {unknown} are not units of this result")
    try:
        labels, dropped = _read_labels(data.get("manual_labels", []), version)
        if version == "2":
            given = data.get("merges", [])
            given = list(given.values()) if isinstance(given, dict) else given
            groups = [m["unit_ids"] if isinstance(m, dict) else m for m in given]
            removed = data.get("removed", [])
        else:
            groups = data.get("merge_unit_groups", data.get("merged_unit_groups", []))
            removed = data.get("removed_units", [])
        merges = [[int(u) for u in g] for g in groups]
        removed = {int(u) for u in removed}
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise EditError(f"{source}: not a readable SpikeInterface curation ({type(err).__name__}: {err})") from None
    merged = {u for g in merges for u in g}
    own = set(ids)
    out: dict[int, list[str]] = {}
    for u, names in labels.items():
        if u not in own:
            continue  # labels of units the file's own merges made: scopeline numbers its own
        if u in merged or u in removed:
            names = [n for n in names if n not in DECISIONS]  # a member or a removed unit is not shown
        if names:
            out[u] = names
    note = f"labels not in scopeline's vocabulary left out: {', '.join(sorted(dropped))}" if dropped else ""
    try:
        return make_edit(labels=out, merges=merges, reject=sorted(u for u in removed if u in own and u not in merged),
                         note=note)
    except EditError as err:
        raise EditError(f"{source}: {err}") from None


def _read_labels(entries, version: str) -> tuple[dict, set]:
    """unit_id -> labels of scopeline's vocabulary from ``manual_labels`` (a quality of noise or artifact
    also rejects), and the labels left out."""
    labels: dict[int, list[str]] = {}
    dropped: set = set()
    for entry in entries:
        if version == "2":
            given = entry.get("labels", {k: v for k, v in entry.items() if k != "unit_id"})
        else:
            given = {k: v for k, v in entry.items() if k not in ("unit_id", "label_category", "labels")} or \
                {entry.get("label_category", "quality"): entry.get("labels", [])}
        unit = int(entry["unit_id"])
        for category, values in given.items():
            for v in [values] if isinstance(values, str) else list(values):
                name = _SYNONYMS.get(str(v).strip().lower(), str(v).strip().lower())
                if category == "quality" and name in ("noise", "artifact"):
                    labels.setdefault(unit, []).extend([name, "reject"])  # a quality of noise: not a cell
                elif name in LABELS:
                    labels.setdefault(unit, []).append(name)
                else:
                    dropped.add(str(v))
    return labels, dropped


# ------------------------------------------------------------------------------ merges


def merge(movie, A, C: np.ndarray, b: np.ndarray, f: np.ndarray, groups: list, neighbours: np.ndarray, params=None,
          *, diameter: float, fov: Optional[np.ndarray] = None, fps: Optional[float] = None,
          progress=None) -> dict:
    """Merged units: one footprint per group, its trace re-estimated by a temporal update.

    Each group's footprint is :func:`scopeline.core.cnmf.combine` of its members (their pixel-wise
    maximum: members may overlap); the traces of every
    merged footprint and of the ``neighbours`` that touch one are then updated together by
    :func:`scopeline.core.cnmf.update_temporal` (one pass over the movie, then deconvolution), so that
    the merged trace is fitted beside the cells around it; the neighbours' own traces are not
    returned (a curation never changes CNMF's units). Quality metrics come from
    :func:`scopeline.core.quality.unit_metrics` (a second pass).

    Parameters
    ----------
    movie : array-like
        (frames, height, width): the motion-corrected movie of the result.
    A : scopeline.core.footprints.Footprints
        Every unit that may take part (members and neighbours), peak 1.
    C : numpy.ndarray
        float (units, frames): their traces (movie units).
    b, f : numpy.ndarray
        float32 (height, width) background footprint and (frames,) trace of the result.
    groups : list of list of int
        Indices into ``A`` of each merge's members.
    neighbours : numpy.ndarray
        bool (units,): units that stay (accepted and not merged), fitted beside the merged ones.
    params : scopeline.core.cnmf.CNMFParams, optional
        The result's CNMF parameters (AR order, sparsity, solver).
    diameter : float
        Expected cell diameter, pixels (for ``rel_area``).
    fov : numpy.ndarray, optional
        bool (height, width) field of view; fps : float, optional, Hz.
    progress : callable, optional
        Called with frames read (two passes).

    Returns
    -------
    dict
        ``A`` (Footprints, one per group), ``C``, ``S``, ``YrA`` float32 (groups, frames), ``b0``, ``c0``,
        ``sn``, ``snr`` float32 (groups,), ``g`` float32 (groups, p), ``metrics`` (name -> float32 (groups,)).
    """
    from scopeline.core import cnmf as core_cnmf
    from scopeline.core import deconvolve as core_dc
    from scopeline.core import quality
    from scopeline.core.footprints import Footprints

    p = params or core_cnmf.CNMFParams()
    C = np.asarray(C, np.float32)
    parts = [core_cnmf.combine(A, C, list(g), how="max") for g in groups]
    k = len(parts)
    merged = Footprints(np.stack([q[0] for q in parts]), np.stack([q[1] for q in parts]), A.shape)
    members = {m for g in groups for m in g}
    others = [i for i in np.flatnonzero(neighbours) if i not in members]
    both = Footprints(np.concatenate([merged.patches, A.patches[others]]),
                      np.concatenate([merged.offsets, A.offsets[others]]), A.shape) if others else merged
    G = both.gram()
    touching = [j for j in range(k, len(both)) if G[:k, j].any()]
    fitted = both.subset(np.isin(np.arange(len(both)), list(range(k)) + touching))
    C0 = np.concatenate([np.stack([q[2] for q in parts]), C[[others[j - k] for j in touching]]]).astype(np.float32)
    t = core_cnmf.update_temporal(movie, fitted, C0, b, f, p, progress)
    out = {name: t[name][:k] for name in ("C", "YrA", "b0", "c0", "sn", "g")}
    out["S"] = core_dc.spikes(out["C"], out["g"], out["sn"])
    with np.errstate(invalid="ignore", divide="ignore"):
        out["snr"] = np.where(out["sn"] > 0, out["C"].max(axis=1) / np.where(out["sn"] > 0, out["sn"], 1), 0
                              ).astype(np.float32)
    out["A"] = merged
    out["metrics"] = quality.unit_metrics(movie, merged, out["YrA"], out["sn"], diameter=diameter, fov=fov, fps=fps,
                                          block_frames=p.block_frames, progress=progress)
    return out
