"""Automatic curation rules (core.curation): CaImAn's semantics, a reason per rejection, duplicates."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from scopeline.core import curation
from scopeline.core.footprints import Footprints


def _metrics(**values):
    base = {"r_value": [0.9, 0.9, 0.5, 0.95], "event_snr": [3.0, 1.0, 5.0, 1.0], "outside_fov": [0.0, 0.0, 0.0, 0.9],
            "rel_area": [1.0, 1.0, 1.0, 1.0]}
    base.update(values)
    return {k: np.asarray(v, float) for k, v in base.items()}


def test_rules_follow_caimans_semantics_and_say_why():
    p = curation.CurationParams(require={"r_value": {"min": 0.8}, "outside_fov": {"max": 0.5}},
                                accept_any={"event_snr": 2.0, "r_value": 0.92})
    res = curation.curate(_metrics(), p)
    # unit 0: all bounds, event_snr reaches; 1: bounds met, neither accept_any metric; 2: r_value below the
    # bound (a high event_snr does not save it); 3: r_value reaches accept_any but it is outside the lens
    assert res.accepted.tolist() == [True, False, False, False]
    assert res.reasons[0] == ""
    assert res.reasons[1] == "no accept_any metric reached (event_snr 1 < 2, r_value 0.9 < 0.92)"
    assert res.reasons[2] == "r_value 0.5 < 0.8"
    assert res.reasons[3] == "outside_fov 0.9 > 0.5"
    nan = curation.curate(_metrics(r_value=[np.nan, 0.9, 0.9, 0.9]), p)
    assert not nan.accepted[0] and nan.reasons[0] == "r_value not computed"
    assert curation.curate(_metrics(), curation.PRESETS["none"]).accepted.all()


def test_rules_refuse_unknown_metrics_and_empty_bounds():
    with pytest.raises(ValidationError, match="unknown metric.*'roundness'"):
        curation.CurationParams(require={"roundness": {"min": 1}})
    with pytest.raises(ValidationError, match="give min, max or both"):
        curation.CurationParams(require={"r_value": {}})
    with pytest.raises(ValidationError, match="min 2.0 is above max 1.0"):
        curation.CurationParams(require={"rel_area": {"min": 2, "max": 1}})
    with pytest.raises(KeyError, match="metric 'pnr'"):
        curation.curate(_metrics(), curation.CurationParams(accept_any={"pnr": 1.0}))


def test_a_split_cell_is_a_duplicate_and_the_stronger_half_stays():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:40]
    cell = np.exp(-((yy - 20) ** 2 + (xx - 20) ** 2) / 18.0)
    other = np.exp(-((yy - 8) ** 2 + (xx - 30) ** 2) / 18.0)
    left, right = cell * (xx <= 21), cell * (xx >= 19)
    A = Footprints.from_dense(np.stack([left, right, other]).astype(np.float32) / 1.0, pad=1)
    trace = np.maximum(rng.standard_normal(500).cumsum(), 0)
    C = np.stack([trace + 0.05 * rng.standard_normal(500), trace, rng.random(500)])
    metrics = {"event_snr": np.array([4.0, 6.0, 5.0]), "r_value": np.ones(3)}
    res = curation.curate(metrics, curation.CurationParams(duplicates={"overlap": 0.3, "correlation": 0.9}), A=A, C=C)
    assert res.accepted.tolist() == [False, True, True]
    assert res.duplicate_of.tolist() == [1, -1, -1] and res.reasons[0] == "duplicate of unit 1"
    off = curation.curate(metrics, curation.CurationParams(duplicates={"enabled": False}), A=A, C=C)
    assert off.accepted.all()


@pytest.mark.db
def test_automatic_curation_of_a_stored_result(db, sim_cells):
    from scopeline import query
    from scopeline.pipeline import cnmf, presets, stages
    from scopeline.pipeline import curation as pl_curation
    from scopeline.pipeline.ingest import ingest

    (rec,) = ingest(sim_cells, "cu1", "d1")
    assert presets.queue([rec.key], presets.stage_paramsets("default"), "curation") == 1
    for stage in stages.STAGES:
        out = stage.computed.populate(reserve_jobs=True, suppress_errors=True)
        assert not out["error_list"], out["error_list"]
    key = (pl_curation.AutoCuration & rec.key).fetch1("KEY")
    n_units, n_accepted = (pl_curation.AutoCuration & key).fetch1("n_units", "n_accepted")
    decisions = (pl_curation.AutoCuration.Unit & key).to_dicts(order_by="unit_id")
    assert n_units == len(cnmf.CNMF.Unit & rec.key) == len(decisions) >= 4
    assert n_accepted == sum(d["accepted"] for d in decisions)
    assert all((d["reason"] == "") == d["accepted"] for d in decisions)
    frame = query.results(stage="curation", subject="cu1")
    assert frame.iloc[0]["n_accepted"] == n_accepted and frame.iloc[0]["curation_paramset"] == "default"
    (pl_curation.AutoCuration & key).delete(prompt=False)  # a curation's rows go; CNMF's stay
    assert len(cnmf.CNMF.Unit & rec.key) == n_units and not (pl_curation.AutoCuration.Unit & key)
