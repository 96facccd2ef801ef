"""Curation: parameter sets of rules, tasks, and the automatic curation of a CNMF result (one row per
unit: accepted or not, and why).

All computation is :func:`scopeline.core.curation.curate` on the CNMF result's stored metrics, footprints
and traces; a curation never changes CNMF rows. Readers do not yet follow a curation (choosing the one
to use, manual curations on top, and exports of accepted units come with the rest of issue 13).
"""

from __future__ import annotations

import sys
import time

import scopeline
from scopeline._dj import dj
from scopeline.core import curation as core_curation
from scopeline.pipeline import cnmf, units  # noqa: F401  (cnmf: foreign keys)
from scopeline.pipeline._paramsets import parse_params
from scopeline.pipeline._stage import Stage, stage_tables

schema = dj.Schema()

__all__ = ["CurationParamSet", "CurationTask", "AutoCuration"]

CurationParamSet, CurationTask = stage_tables(
    globals(), prefix="Curation", attr="curation_paramset", model=core_curation.CurationParams,
    presets=core_curation.PRESETS, label="curation", upstream="cnmf.CNMFTask", upstream_text="a CNMF task")


@schema
class AutoCuration(dj.Computed):
    """An automatic curation of one CNMF result by a rule set: every unit accepted or rejected, with the
    reason (:func:`scopeline.core.curation.curate`).

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
        p = parse_params(core_curation.CurationParams, (CurationParamSet & key).fetch1("params"), "curation",
                         key[CurationParamSet.name_attr])
        res = units.arrays(key, selected=False)
        out = core_curation.curate(res["metrics"], p, A=res["A"], C=res["C"], unit_ids=res["unit_id"])
        ids = res["unit_id"]
        self.insert1({**key, "n_units": len(ids), "n_accepted": int(out.accepted.sum()),
                      "compute_time": time.perf_counter() - t0, "scopeline_version": scopeline.__version__})
        self.Unit.insert([{**key, "unit_id": int(u), "accepted": bool(a), "reason": r[:1024],
                           "duplicate_of": int(ids[d]) if d >= 0 else None}
                          for u, a, r, d in zip(ids, out.accepted, out.reasons, out.duplicate_of)])


STAGE = Stage(
    "curation", module=sys.modules[__name__], computed=AutoCuration, paramset=CurationParamSet, task=CurationTask,
    upstream="cnmf", extra={"columns": ("n_accepted",)},
    description="Curation rule set of scopeline: bounds every accepted unit meets (require), thresholds of which "
                "any accepts (accept_any), and duplicate detection, over the per-unit quality metrics.")
