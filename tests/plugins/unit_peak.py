"""A small extra stage, as a lab would add one: each CNMF unit's peak of C over its baseline.

It is the whole of the stage: the parameter model and its one computation (what a core module holds),
its tables (ParamSet and Task from ``stage_tables``, its own Computed), and ``STAGE``. Registering it is
one line (``stages.register(unit_peak.STAGE)``, or ``SCOPELINE_STAGES=unit_peak`` for every process);
``tests/test_stages.py`` checks that it then shows in status, populate, paramset ls, presets, JSON
Schemas and the query layer with no other edit.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from pydantic import Field

from scopeline._dj import dj
from scopeline.core.params import StageParams
from scopeline.pipeline import cnmf, units  # noqa: F401  (cnmf: foreign keys)
from scopeline.pipeline._stage import Stage, stage_tables


class PeakParams(StageParams):
    """Parameters of the unit-peak statistic."""

    baseline_quantile: float = Field(0.1, ge=0.0, le=1.0, description="Quantile of C taken as the baseline.")


def peak_over_baseline(C: np.ndarray, quantile: float) -> np.ndarray:
    """float32 (units,): each unit's max of C minus its ``quantile`` of C (movie units); C (units, frames)."""
    if not len(C):
        return np.zeros(0, np.float32)
    return (C.max(axis=1) - np.quantile(C, quantile, axis=1)).astype(np.float32)


schema = dj.Schema()

PeakParamSet, PeakTask = stage_tables(
    globals(), prefix="Peak", attr="peak_paramset", model=PeakParams,
    presets={"default": PeakParams(), "median": PeakParams(baseline_quantile=0.5)}, label="unit peak",
    upstream="cnmf.CNMFTask", upstream_text="a CNMF task")


@schema
class UnitPeak(dj.Computed):
    """Peak over baseline of every unit a CNMF result shows."""

    definition = """
    -> cnmf.CNMF
    -> PeakTask
    ---
    n_units                    : int32
    compute_time               : float64        # s
    """

    class Unit(dj.Part):
        definition = """
        -> master
        unit_id                    : int32
        ---
        peak                       : float32        # movie units
        """

    def make(self, key):
        t0 = time.perf_counter()
        params = PeakParams.model_validate((PeakParamSet & key).fetch1("params"))
        res = units.arrays(key)
        peak = peak_over_baseline(res["C"], params.baseline_quantile)
        self.insert1({**key, "n_units": len(peak), "compute_time": time.perf_counter() - t0})
        self.Unit.insert([{**key, "unit_id": int(u), "peak": float(v)} for u, v in zip(res["unit_id"], peak)])


def figures(key: dict, out_dir) -> dict:
    """A histogram of the units' peaks (the report's hook)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from scopeline.pipeline import keys

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.hist((UnitPeak.Unit & key).to_arrays("peak"), bins=10)
    ax.set_xlabel("peak over baseline (movie units)")
    path = out_dir / f"{keys.name(key)}_peak.png"
    fig.savefig(path)
    plt.close(fig)
    return {f"peak_{key['peak_paramset']}": path}


def nwb(nwbfile, key: dict) -> None:
    """The peaks as a table of the ophys module (the NWB export's hook)."""
    from hdmf.common import DynamicTable

    rows = (UnitPeak.Unit & key).to_dicts(order_by=["peak_paramset", "unit_id"])
    if not rows:
        return
    table = DynamicTable(name="unit_peaks", description="Peak of C over its baseline quantile, per unit.")
    for name, text in (("unit_id", "CNMF unit id"), ("peak", "peak over baseline, movie units")):
        table.add_column(name=name, description=text)
    for r in rows:
        table.add_row(unit_id=int(r["unit_id"]), peak=float(r["peak"]))
    nwbfile.processing["ophys"].add(table)


STAGE = Stage("peak", module=sys.modules[__name__], computed=UnitPeak, paramset=PeakParamSet, task=PeakTask,
              upstream="cnmf", label="unit peak", description="Unit-peak statistic parameter set.",
              extra={"columns": ("n_units",)}, figures=figures, nwb=nwb)
