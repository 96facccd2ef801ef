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
    res = curation.curate(metrics, curation.CurationParams(), A=A, C=C)  # the default duplicate criteria
    assert res.accepted.tolist() == [False, True, True]
    assert res.duplicate_of.tolist() == [1, -1, -1] and res.reasons[0] == "duplicate of unit 1"
    off = curation.curate(metrics, curation.CurationParams(duplicates={"enabled": False}), A=A, C=C)
    assert off.accepted.all()


def test_edits_merge_reject_label_and_say_what_is_wrong():
    st = curation.initial_state([0, 1, 2, 3, 4])
    after = curation.apply_edit(st, curation.make_edit(reject=[1], merges=[[2, 3]], labels={4: ["dendrite"], 0: ["good"]}))
    assert [u for u, s in after.items() if s.accepted] == [0, 4, 5]  # 5: the merge of 2 and 3
    assert after[2].merged_into == after[3].merged_into == 5 and after[2].reason == "merged into unit 5"
    assert after[4].labels == ("dendrite",) and after[1].reason == "rejected by hand"
    assert st[1].accepted  # the parent's state is not changed
    with pytest.raises(curation.EditError, match=r"unit\(s\) \[9\] are not units of this curation \(its units: 0-4\)"):
        curation.apply_edit(st, curation.make_edit(reject=[9]))
    with pytest.raises(curation.EditError, match=r"unit\(s\) \[2\] were merged before"):
        curation.apply_edit(after, curation.make_edit(merges=[[2, 4]]))
    with pytest.raises(curation.EditError, match="unknown label.*'soma'.*the labels are accept, reject"):
        curation.make_edit(labels={3: ["soma"]})
    with pytest.raises(curation.EditError, match=r"unit\(s\) \[1\] both accepted and rejected"):
        curation.make_edit(accept=[1], labels={1: ["reject"]})
    with pytest.raises(curation.EditError, match="in more than one merge"):
        curation.make_edit(merges=[[1, 2], [2, 3]])
    assert curation.parse_merges(["4+9", "1 + 2 + 3"]) == [[4, 9], [1, 2, 3]]
    assert curation.parse_labels(["12=dendrite", "3=artifact,reject"]) == {12: ["dendrite"], 3: ["artifact", "reject"]}
    for bad, parse in (("4-9", lambda t: curation.parse_merges([t])), ("12:dendrite", lambda t: curation.parse_labels([t])),
                       ("x", curation.parse_ids)):
        with pytest.raises(curation.EditError, match=repr(bad)):
            parse(bad)


def test_spikeinterface_json_round_trip():
    st = curation.initial_state(range(6))
    after = curation.apply_edit(st, curation.make_edit(reject=[1], merges=[[2, 3]], labels={4: ["dendrite", "unsure"]}))
    data = curation.to_spikeinterface(after, range(6))
    assert data["format_version"] == "2" and data["unit_ids"] == list(range(6))
    assert data["removed"] == [1] and data["merges"] == [{"unit_ids": [2, 3], "new_unit_id": 6}]
    assert {"unit_id": 4, "labels": {"quality": ["accept"], "type": ["dendrite", "unsure"]}} in data["manual_labels"]
    assert data["label_definitions"]["quality"] == {"label_options": ["accept", "reject"], "exclusive": True}
    again = curation.apply_edit(st, curation.from_spikeinterface(data, range(6)))
    assert again == after
    v1 = {"format_version": "1", "unit_ids": [0, 1, 2, 3], "manual_labels": [{"unit_id": 0, "quality": ["good"]},
          {"unit_id": 1, "quality": ["good"]}, {"unit_id": 3, "quality": ["noise"]}], "merge_unit_groups": [[1, 2]],
          "removed_units": []}
    one = curation.apply_edit(curation.initial_state(range(4)), curation.from_spikeinterface(v1, range(4)))
    assert [u for u, s in one.items() if s.accepted] == [0, 4] and one[3].labels == ("noise",)
    # a removed unit labelled good is removed; labels of another vocabulary are left out and said so
    other = {"format_version": "2", "unit_ids": [0, 1, 2], "removed": [1], "merges": [],
             "manual_labels": [{"unit_id": 1, "labels": {"quality": ["good"]}},
                               {"unit_id": 2, "labels": {"putative_type": ["excitatory"], "type": ["dendrite"]}}]}
    edit = curation.from_spikeinterface(other, range(3))
    assert edit.reject == [1] and edit.labels == {2: ["dendrite"]} and "excitatory" in edit.note
    # a merged unit hidden again: its members are removed; a merge member cannot be shown
    hidden = curation.apply_edit(after, curation.make_edit(reject=[6]))
    assert sorted(curation.to_spikeinterface(hidden, range(6))["removed"]) == [1, 2, 3]
    with pytest.raises(curation.EditError, match=r"unit\(s\) \[2\] are merged into another unit"):
        curation.apply_edit(after, curation.make_edit(accept=[2]))
    with pytest.raises(curation.EditError, match="not a readable SpikeInterface curation"):
        curation.from_spikeinterface({"unit_ids": [0], "manual_labels": [{"unit_id": "x"}]}, range(4))
    with pytest.raises(curation.EditError, match=r"f.json: unit\(s\) \[7\] are not units of this result"):
        curation.from_spikeinterface({"unit_ids": [7]}, range(4), "f.json")
    with pytest.raises(curation.EditError, match="not a SpikeInterface curation"):
        curation.from_spikeinterface({"units": []}, range(4))


def test_a_split_cell_is_flagged_and_its_merge_gets_the_cells_footprint_and_trace_back():
    """A cell given as two overlapping halves with the same trace: the default rules flag the weaker
    half a duplicate; the merge of the halves has the cell's footprint (r >= 0.95, better than either
    half) and, re-estimated from the movie, its trace (r >= 0.95) at the whole cell's amplitude."""
    from scopeline.core.cnmf import CNMFParams

    rng = np.random.default_rng(3)
    n, h, w = 600, 40, 40
    yy, xx = np.mgrid[0:h, 0:w]
    cell = np.exp(-((yy - 20) ** 2 + (xx - 20) ** 2) / (2 * 3.0**2))
    other = np.exp(-((yy - 20) ** 2 + (xx - 31) ** 2) / (2 * 3.0**2))
    spikes = (rng.random((2, n)) < 0.02) * rng.uniform(1, 2, (2, n))
    truth = np.zeros((2, n))
    for t in range(1, n):
        truth[:, t] = 0.92 * truth[:, t - 1] + spikes[:, t]
    movie = (10 + 20 * (cell[None] * truth[0, :, None, None] + other[None] * truth[1, :, None, None])
             + rng.normal(0, 0.5, (n, h, w))).astype(np.float32)
    halves = np.stack([cell * (xx <= 21), cell * (xx >= 19), other])
    A = Footprints.from_dense((halves / halves.max(axis=(1, 2), keepdims=True)).astype(np.float32), pad=2)
    C = np.stack([10 * truth[0], 10 * truth[0], 20 * truth[1]]).astype(np.float32)
    flagged = curation.curate({"event_snr": np.array([5.0, 6.0, 5.0])}, curation.PRESETS["default"].model_copy(
        update={"require": {}, "accept_any": {}}), A=A, C=C)
    assert flagged.accepted.tolist() == [False, True, True] and flagged.reasons[0] == "duplicate of unit 1"
    out = curation.merge(movie - 10, A, C, np.zeros((h, w), np.float32), np.zeros(n, np.float32), [[0, 1]],
                         np.array([False, False, True]), CNMFParams(), diameter=10.0)
    fp = out["A"].dense()[0]
    r = [np.corrcoef(a.ravel(), cell.ravel())[0, 1] for a in (fp, *A.dense()[:2])]
    assert r[0] >= 0.95 and r[0] > max(r[1:]) + 0.1, r
    assert np.corrcoef(out["C"][0], truth[0])[0, 1] >= 0.95
    assert out["metrics"]["r_value"][0] > 0.8 and out["snr"][0] > 5
    assert out["C"][0].max() > 1.5 * C[0].max()  # the whole cell's amplitude, not a half's


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


@pytest.mark.db
def test_curations_are_versioned_and_every_reader_follows_the_one_in_use(db, sim_cells, tmp_path):
    import json

    from scopeline import query, report
    from scopeline._dj import dj
    from scopeline.pipeline import cnmf, presets, stages, units
    from scopeline.pipeline import curation as pl
    from scopeline.pipeline.ingest import ingest
    from scopeline.pipeline.nwb import export_nwb

    (rec,) = ingest(sim_cells, "cu2", "d1")
    presets.queue([rec.key], {**presets.stage_paramsets("default"), "curation": "strict"}, "curation")
    for stage in stages.STAGES:
        assert not stage.computed.populate(reserve_jobs=True, suppress_errors=True)["error_list"]
    ckey = presets.result_key(rec.key, "default")
    n_cnmf = len(cnmf.CNMF.Unit & ckey)
    # the populated rule set is a curation, and (the first) the one in use
    (first,) = pl.curations(ckey)
    assert first["kind"] == "rules" and first["curation_paramset"] == "strict" and first["in_use"]
    assert units.count(ckey) == first["n_accepted"] == (pl.AutoCuration & ckey).fetch1("n_accepted")
    rules = pl.apply_rules(ckey, "none")  # every unit: readers now show all of them
    assert units.count(ckey) == n_cnmf and pl.in_use(ckey) == rules
    # a manual curation on top: reject, label, merge the two closest units
    ids = [r["unit_id"] for r in units.rows(ckey, "unit_id")]
    xy = {r["unit_id"]: (r["centroid_y"], r["centroid_x"]) for r in units.rows(ckey, "centroid_y", "centroid_x")}
    a, b = min(((i, j) for i in ids for j in ids if i < j), key=lambda p: np.hypot(*np.subtract(xy[p[0]], xy[p[1]])))
    reject = next(u for u in ids if u not in (a, b))
    label = next(u for u in ids if u not in (a, b, reject))
    change = curation.make_edit(reject=[reject], merges=[[a, b]], labels={label: ["dendrite"]}, note="first look")
    manual = pl.edit(ckey, change, curator="tester")
    row = next(c for c in pl.curations(ckey) if c["curation_id"] == manual)
    assert row["parent"] == rules and row["kind"] == "manual" and row["curator"] == "tester" and row["in_use"]
    new = max(ids) + 1
    shown = units.rows(ckey, "unit_id", "trace")
    assert [r["unit_id"] for r in shown] == sorted(set(ids) - {a, b, reject} | {new})
    assert next(r for r in shown if r["unit_id"] == label)["labels"] == "dendrite"
    assert len(cnmf.CNMF.Unit & ckey) == n_cnmf  # CNMF's rows are never changed
    merged = units.arrays(ckey)
    m = list(merged["unit_id"]).index(new)
    assert merged["C"][m].max() > 0 and np.isfinite(merged["metrics"]["r_value"][m])
    # every reader follows: the query layer, the report, the NWB file (with labels and the chain)
    assert sorted(query.units(subject="cu2")["unit_id"]) == [r["unit_id"] for r in shown]
    assert report.summary(ckey)["n_units"] == len(shown)
    path = export_nwb(ckey, tmp_path / "cu2.nwb")
    from pynwb import NWBHDF5IO

    from scopeline.pipeline.nwb import inspect_nwb

    serious = [m for m in inspect_nwb(path) if m.importance.name in ("CRITICAL", "BEST_PRACTICE_VIOLATION")]
    assert not serious, [m.message for m in serious]

    with NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        seg = nwb.processing["ophys"]["ImageSegmentation"]["PlaneSegmentation"]
        assert sorted(seg.id[:]) == [r["unit_id"] for r in shown]
        assert dict(zip(seg.id[:], seg["labels"][:]))[label] == "dendrite"
        rejected = nwb.processing["ophys"]["ImageSegmentation"]["RejectedUnits"]
        assert {reject, a, b} <= set(rejected.id[:])
        chain = json.loads(nwb.notes)["curation"]["chain"]
        assert [c["curation_id"] for c in chain] == [rules, manual] and chain[1]["note"] == "first look"
    # SpikeInterface JSON out and in: the same decisions as a new first curation
    out = pl.export_json(ckey, tmp_path / "cur.json")
    imported = pl.import_json(ckey, out, curator="other lab")
    assert sorted(r["unit_id"] for r in units.rows(ckey, "unit_id")) == sorted(set(ids) - {a, b, reject} | {new + 1})
    before, after = pl.state(ckey, manual), pl.state(ckey, imported)
    assert all(before[u] == after[u] for u in ids if u not in (a, b))  # the same decisions and labels
    assert before[new].accepted and after[new + 1].accepted and after[a].merged_into == new + 1
    exported = json.loads(out.read_text())
    again = json.loads(pl.export_json(ckey, tmp_path / "again.json", imported).read_text())
    renumbered = [{**e, "unit_id": new + 1 if e["unit_id"] == new else e["unit_id"]} for e in exported["manual_labels"]]
    assert again["manual_labels"] == renumbered and again["removed"] == exported["removed"]
    # deleting: refused under a child, then the curation in use goes back to its parent
    with pytest.raises(pl.CurationError, match=f"curation {rules} is the parent of \\[{manual}\\]"):
        pl.delete(ckey, rules)
    pl.use(ckey, manual)
    gone = pl.delete(ckey, manual)
    assert gone["in_use"] == rules and gone["objects_removed"] >= 1 and units.count(ckey) == n_cnmf
    assert not (pl.Curation.Merged & ckey & {"curation_id": manual})
    orphans = dj.gc.GarbageCollector(pl.schema).collect(dry_run=True)
    assert orphans["schema_paths_orphaned"] == 0 and orphans["hash_paths_orphaned"] == 0
    assert imported in [c["curation_id"] for c in pl.curations(ckey)] and len(cnmf.CNMF.Unit & ckey) == n_cnmf
    with pytest.raises(pl.CurationError, match="no curation 99"):
        pl.use(ckey, 99)
