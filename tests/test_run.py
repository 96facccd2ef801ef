"""`scopeline run`, `results`, `status`, `report` as a user runs them (subprocesses against the test
database), and the query interface: one command from a recording folder to stored results, figures
and an NWB file; re-running is a no-op; two parameter sets are told apart by a query."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import db_env, one_backend

from scopeline import query
from scopeline.pipeline import acquisition, cnmf, curation, initialization, motion, presets
from scopeline.pipeline.ingest import ingest

pytestmark = pytest.mark.db


def _cli(args, env, ok=True):
    out = subprocess.run([sys.executable, "-m", "scopeline.cli", *map(str, args)], capture_output=True,
                         text=True, env=env, timeout=600)
    if ok:
        assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-3000:]
    return out


def _cli_here(args):
    """The CLI in this process, on the test's active pipeline (no subprocess start-up, 2-3 s each): for the
    many refusals of one test. Exit code and stderr as a subprocess would give them."""
    from typer.testing import CliRunner

    from scopeline.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_run_from_folder_to_results_figures_and_nwb(db, sim_cells, tmp_path):
    env = db_env(db["backend"], db["url"], db["prefix"], db["store"])
    out = tmp_path / "results"
    first = _cli(["run", sim_cells, "--subject", "r1", "--session", "d1", "--out", out], env)
    key = presets.result_key({"subject": "r1", "session": "d1", "recording_id": 0}, "default")
    n_found = (cnmf.CNMF & key).fetch1("n_units")
    assert 6 <= n_found <= 12, n_found  # 8 simulated cells
    # run applied the default rule set: the curation in use, whose accepted units every reader shows
    n_units = (curation.AutoCuration & key).fetch1("n_accepted")
    assert curation.in_use(key) == 1 and 6 <= n_units <= n_found
    # the summary names frames, fps, units found and accepted, and where the outputs are
    assert "400" in first.stdout and f" {n_found} " in first.stdout and f" {n_units} " in first.stdout
    # ... and the wall time of each phase, which add up to at most the whole; the pipeline, figures
    # and NWB each did work on this first run (which is longest depends on the machine)
    done = re.search(r"done in ([\d.]+) s \(ingest ([\d.]+) s, pipeline ([\d.]+) s, figures ([\d.]+) s, "
                     r"NWB ([\d.]+) s\)", " ".join(first.stdout.split()))
    assert done, first.stdout[-500:]
    total, *phases = map(float, done.groups())
    assert sum(phases) <= total + 0.1 and min(phases[1:]) > 0, done.group(0)
    files = sorted(p.name for p in (out / "r1" / "d1").iterdir())
    stem = "r1_d1_0_default_minian_minian"
    assert files == [f"{stem}.nwb", f"{stem}_cnmf.png", f"{stem}_curation1.png", f"{stem}_quality.png",
                     "r1_d1_0_default_motion.png"]  # motion: shared
    nwb = out / "r1" / "d1" / f"{stem}.nwb"
    mtime = nwb.stat().st_mtime_ns
    # again: nothing recomputed, nothing rewritten
    second = _cli(["run", sim_cells, "--subject", "r1", "--session", "d1", "--out", out], env)
    assert "MotionCorrection: 0 done" in second.stdout and "CNMF: 0 done" in second.stdout
    assert nwb.stat().st_mtime_ns == mtime
    assert len(motion.MotionCorrection()) == len(cnmf.CNMF()) == 1

    # the query interface sees the result
    res = query.results(subject="r1")
    assert len(res) == 1 and res.loc[0, "n_units"] == n_found and res.loc[0, "n_frames"] == 400
    assert res.loc[0, "n_accepted"] == n_units
    u = query.units(subject="r1", cnmf_paramset="minian")
    assert len(u) == n_units and (u["area"] > 0).all() and u["centroid_y"].between(0, 96).all()
    tr = query.traces(subject="r1")
    assert len(tr) == n_units and tr.loc[0, "C"].shape == (400,) and np.all(np.diff(tr.loc[0, "time"]) > 0)
    wide = query.trace_matrix(key, "S")
    assert wide.shape == (400, n_units) and wide.index.name == "time"
    sessions = query.sessions()
    assert sessions.loc[0, "cnmf_results"] == 1 and sessions.loc[0, "n_frames"] == 400

    status = _cli(["status", "--json"], env).stdout
    assert '"table":"CNMF","done":1,"pending":0' in status
    listed = _cli(["results", "--subject", "r1", "--units"], env).stdout
    assert listed.count("minian") >= n_units
    rep = _cli(["report", "-s", "r1", "-d", "d1", "--out", tmp_path / "rep"], env)
    assert f"{n_found} units found, {n_units} accepted by curation 1 (rules default)" in " ".join(rep.stdout.split())
    assert (tmp_path / "rep" / "r1" / "d1" / f"{stem}_cnmf.png").stat().st_size > 10_000

    # export-nwb: an existing file is kept unless --overwrite; the written file passes nwbinspector
    refused = _cli(["export-nwb", "-s", "r1", "-d", "d1", "--preset", "default", "--out", nwb], env, ok=False)
    assert refused.returncode == 1 and "overwrite" in refused.stderr and nwb.stat().st_mtime_ns == mtime
    again = _cli(["export-nwb", "-s", "r1", "-d", "d1", "--preset", "default", "--out", tmp_path / "x.nwb"], env)
    assert "0 critical or violations" in again.stdout and (tmp_path / "x.nwb").exists()


def test_curate_from_the_command_line(db, sim_cells, tmp_path):
    """`scopeline curate` as a user runs it: rules, manual changes with a note, versions, use, export,
    delete; bad input is refused with the reason and writes nothing. On MariaDB only: the curation tables'
    server side runs on both backends in test_curation."""
    import json

    one_backend(db, "mysql")
    env = db_env(db["backend"], db["url"], db["prefix"], db["store"])
    (rec,) = ingest(sim_cells, "c1", "d1")
    presets.queue([rec.key], presets.stage_paramsets("default"), "cnmf")
    for table in (motion.MotionCorrection, initialization.Initialization, cnmf.CNMF):
        table.populate(reserve_jobs=True)
    key = presets.result_key(rec.key, "default")
    ids = sorted(int(u) for u in (cnmf.CNMF.Unit & key).to_arrays("unit_id"))
    assert "curation 1 of c1/d1/0 (rules none, scopeline," in _cli(["curate", "c1/d1", "--rules", "none"], env).stdout
    assert curation.in_use(key) == 1 and len(query.units(subject="c1")) == len(ids)
    out = _cli(["curate", "c1/d1", "--reject", f"{ids[0]},{ids[1]}", "--label", f"{ids[2]}=dendrite",
                "--note", "first pass", "--curator", "ann"], env).stdout
    assert f"curation 2 of c1/d1/0 (manual on 1, ann," in out and f"{len(ids) - 2} of {len(ids)} units accepted; in use" in out
    assert sorted(query.units(subject="c1")["unit_id"]) == ids[2:]
    listed = _cli(["curate", "ls", "c1"], env).stdout
    assert "rules none" in listed and "first pass" in listed and "ann" in listed
    shown = _cli(["curate", "show", "c1/d1", "--rejected"], env).stdout
    assert "rejected by hand" in shown and shown.count("rejected by hand") == 2
    _cli(["curate", "export", "c1/d1", tmp_path / "c.json"], env)
    assert sorted(json.loads((tmp_path / "c.json").read_text())["removed"]) == ids[:2]
    # refused: unknown unit, unknown label, deleting a parent; nothing written
    for args, message in ((["c1/d1", "--reject", "999"], "unit(s) [999] are not units of this curation"),
                          (["c1/d1", "--label", f"{ids[3]}=soma"], "unknown label(s) ['soma']"),
                          (["c1/d1", "--merge", "3-4"], "give unit ids joined by '+'"),
                          (["c1/d1", "--merge", f"{ids[3]}+{ids[3]}"], "a merge needs at least two different units"),
                          (["c1/d1", "--merge", f"{ids[3]}+{ids[4]}", "--merge", f"{ids[4]}+{ids[5]}"],
                           "in more than one merge"),
                          (["c1/d1", "--label", "999=dendrite"], "unit(s) [999] are not units of this curation"),
                          (["delete", "c1/d1", "1"], "curation 1 is the parent of [2]"),
                          (["nobody/d1", "--rules", "default"], "matches 0 CNMF results"),
                          (["c1/d1", "--rules", "strict", "--parent", "1"], "give manual changes (and --parent)"),
                          (["ls", "c1/d1/x"], "give SUBJECT, SUBJECT/SESSION or SUBJECT/SESSION/RECORDING"),
                          (["c1/d1", "--accept", f"{ids[0]}", "--reject", f"{ids[0]}"], "both accepted and rejected")):
        bad = _cli_here(["curate", *args])
        assert bad.exit_code == 1 and message in " ".join(bad.stderr.split()), (args, bad.stderr, bad.exception)
    assert len(curation.Curation & key) == 2
    (tmp_path / "rules.json").write_text(json.dumps({"require": {"roundness": {"min": 0.5}}}))
    bad = _cli(["paramset", "add", "round", tmp_path / "rules.json", "--stage", "curation"], env, ok=False)
    assert bad.returncode == 1 and "unknown metric(s) ['roundness']" in bad.stderr, bad.stderr
    assert not (curation.CurationParamSet & {"curation_paramset": "round"})
    _cli(["curate", "use", "c1/d1", "1"], env)
    assert len(query.units(subject="c1")) == len(ids)
    assert "deleted curation 2" in _cli(["curate", "delete", "c1/d1", "2"], env).stdout
    assert len(cnmf.CNMF.Unit & key) == len(ids) and len(curation.Curation & key) == 1


def test_two_parameter_sets_share_upstream_work_and_are_told_apart(db, sim_cells):
    (rec,) = ingest(sim_cells, "r2", "d1")
    cnmf.CNMFParamSet.insert1({"cnmf_paramset": "sparser", "params": {"sparse_penal": 5.0}})
    presets.queue([rec.key], presets.stage_paramsets("default"))
    presets.queue([rec.key], {**presets.stage_paramsets("default"), "cnmf": "sparser"})
    assert query.status().set_index("table").loc["CNMF", "pending"] == 2
    for table in (motion.MotionCorrection, initialization.Initialization, cnmf.CNMF):
        table.populate(reserve_jobs=True)
    assert len(motion.MotionCorrection & rec.key) == 1 and len(initialization.Initialization & rec.key) == 1
    both = query.results(subject="r2")
    assert sorted(both["cnmf_paramset"]) == ["minian", "sparser"]
    a, b = (query.traces(subject="r2", cnmf_paramset=name) for name in ("minian", "sparser"))
    assert set(a["cnmf_paramset"]) == {"minian"} and set(b["cnmf_paramset"]) == {"sparser"}
    # a larger sparsity penalty gives sparser activity
    assert sum((s > 0).sum() for s in b["S"]) < sum((s > 0).sum() for s in a["S"])
    assert query.status().set_index("table").loc["CNMF", "pending"] == 0


def test_run_bad_input(db, tmp_path):
    one_backend(db, "postgresql")
    env = db_env(db["backend"], db["url"], db["prefix"])
    (tmp_path / "empty").mkdir()
    out = _cli(["run", tmp_path / "empty", "-s", "x", "-d", "y", "--out", tmp_path / "o"], env, ok=False)
    assert out.returncode == 1 and "no recording found" in out.stderr
    out = _cli(["run", tmp_path / "empty", "-s", "x", "-d", "y", "--preset", "nope"], env, ok=False)
    assert out.returncode == 1 and "unknown preset 'nope'" in out.stderr and "default" in out.stderr
    out = _cli(["run", tmp_path / "absent", "-s", "x", "-d", "y"], env, ok=False)
    assert out.returncode == 1 and "no such file or folder" in out.stderr
    assert not (acquisition.Recording & {"subject": "x"}) and not (tmp_path / "o").exists()
    out = _cli(["report", "-s", "x", "-d", "y"], env, ok=False)
    assert out.returncode == 1 and "no motion correction" in out.stderr


def test_changed_shipped_preset_warns_and_the_database_one_is_kept(db):
    """A preset name stored by an earlier version with other parameters stays as stored (results are
    tied to it), and the user is told it differs from this version's preset; an unchanged one is quiet."""
    import json
    import warnings

    table = motion.MotionParamSet
    earlier = json.loads(table.presets["fast"].canonical_json())
    earlier["registration"]["upsample"] = 5
    table.insert1({"motion_paramset": "fast", "description": "an earlier version's", "params": earlier})
    with pytest.warns(presets.PresetWarning, match=r"motion parameter set 'fast' in the database differs"):
        key = presets.ensure_paramset("motion", "fast")
    assert (table & key).fetch1("params")["registration"]["upsample"] == 5
    presets.ensure_paramset("motion", "default")  # inserted now: this version's
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        presets.ensure_paramset("motion", "default")
