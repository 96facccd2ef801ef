"""Automatic curation: rules over the per-unit quality metrics that accept or reject each unit of a CNMF
result, with the reason for every rejection, and duplicate detection.

Rule semantics (CaImAn's component evaluation, Giovannucci et al. 2019, eLife): a unit is **accepted**
when it passes **all** of the ``require`` bounds (each a ``min`` and/or ``max`` on one metric) and
**any** of the ``accept_any`` thresholds (a metric at or above its value; an empty ``accept_any``
accepts every unit that meets ``require``). A unit whose metric is NaN (not computed) fails a bound
on it. Among accepted units, a pair whose footprints overlap (cosine similarity of the footprints at
least ``duplicates.overlap``) *and* whose traces correlate (Pearson r of C at least
``duplicates.correlation``) is a duplicate: the unit of lower ``event_snr`` is rejected as the
duplicate of the other. Metrics are those of :data:`scopeline.core.quality.METRICS`, plus ``snr``
(peak of C over its noise).

This module is the algorithm only; the database's Curation tables, manual curations and exports come
with the Curation stage (issue 13).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from scopeline.core.params import StageParams
from scopeline.core.quality import METRICS

__all__ = ["Bound", "DuplicateParams", "CurationParams", "CurationResult", "curate", "duplicates", "PRESETS",
           "CURATION_METRICS"]

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
    overlap: float = Field(0.7, ge=0.0, le=1.0, description="Cosine similarity of the two footprints, at least.")
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
                shown = ", ".join(f"{m} {values[m][i]:.3g} < {t:g}" for m, t in p.accept_any.items())
                why[i].append(f"no accept_any metric reached ({shown})")
    accepted = np.array([not w for w in why], bool)
    duplicate_of = np.full(n, -1, int)
    if p.duplicates.enabled and A is not None and C is not None and accepted.sum() > 1:
        order = metrics.get("event_snr", metrics.get("snr"))
        strength = np.asarray(order, np.float64) if order is not None else np.asarray(C).max(axis=1)
        for loser, winner in duplicates(A, np.asarray(C), accepted, strength, p.duplicates):
            duplicate_of[loser] = winner
            accepted[loser] = False
            why[loser].append(f"duplicate of unit {ids[winner]}")
    return CurationResult(accepted, ["; ".join(w) for w in why], duplicate_of)


def duplicates(A, C: np.ndarray, candidates: np.ndarray, strength: np.ndarray,
               p: DuplicateParams) -> list[tuple[int, int]]:
    """Pairs ``(duplicate, kept)`` among the ``candidates`` (bool (units,)): footprints' cosine similarity
    at least ``p.overlap`` and traces' Pearson r at least ``p.correlation``; the weaker unit (lower
    ``strength``) of each pair is the duplicate, each unit a duplicate at most once, strongest first."""
    G = A.gram()
    norm = np.sqrt(np.clip(np.diag(G), 1e-12, None))
    cos = G / norm[:, None] / norm[None, :]
    Cc = np.asarray(C, np.float64) - np.asarray(C, np.float64).mean(axis=1, keepdims=True)
    sd = np.sqrt((Cc**2).sum(axis=1))
    gone = np.zeros(len(candidates), bool)
    out = []
    for i in np.argsort(-strength, kind="stable"):
        if not candidates[i] or gone[i]:
            continue
        for j in np.flatnonzero((cos[i] >= p.overlap) & candidates & ~gone):
            if j == i or strength[j] > strength[i]:
                continue
            r = float(Cc[i] @ Cc[j] / (sd[i] * sd[j])) if sd[i] > 0 and sd[j] > 0 else 0.0
            if r >= p.correlation:
                gone[j] = True
                out.append((int(j), int(i)))
    return out
