"""Write notebooks/*.ipynb (no outputs) from the cells below: edit here, run `python scripts/build_notebooks.py`, commit both."""
import nbformat as nbf
from pathlib import Path
OUT = Path(__file__).resolve().parents[1] / "notebooks"

SETUP = '''import os
import tempfile
from pathlib import Path

import numpy as np

# Where this notebook writes its recordings and files (a scratch folder unless you set SCOPELINE_NOTEBOOK_DIR).
WORK = Path(os.environ.get("SCOPELINE_NOTEBOOK_DIR") or tempfile.mkdtemp(prefix="scopeline-nb-"))
WORK.mkdir(parents=True, exist_ok=True)

from scopeline.pipeline import activate

# The database: the lab server scopeline is configured for (`scopeline db status` says which), or
# scopeline's private one on this machine (start it first with `scopeline db up`).
activate()'''

def nb(name, cells):
    book = nbf.v4.new_notebook()
    book.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                     "language_info": {"name": "python"}}
    for kind, text in cells:
        book.cells.append(nbf.v4.new_markdown_cell(text) if kind == "md" else nbf.v4.new_code_cell(text))
    for i, c in enumerate(book.cells):
        c["id"] = f"cell-{i:02d}"
    nbf.write(book, OUT / name)

SIM = '''from scopeline.core import simulate as sim

recording = WORK / "{name}"
params = sim.SimulationParams(height=128, width=128, n_frames={frames}, n_cells={cells}, signal_level=1.2, seed={seed})
if not (recording / "ground_truth.zarr").exists():
    sim.simulate(recording, params)
sorted(p.name for p in recording.rglob("*.avi"))[:4]'''

nb("01_quickstart.ipynb", [
 ("md", "# Quickstart: from a recording to cells, traces and an NWB file\n\n"
        "A small simulated UCLA Miniscope V4 recording (128 x 128 pixels, 600 frames, 20 cells; its ground truth is kept) "
        "goes through the whole pipeline: ingest, motion correction, initialization, CNMF. Then we query the results, "
        "draw the figures and export NWB. Point `recording` at one of your own folders to do the same with real data."),
 ("code", SETUP),
 ("md", "## 1. A recording\n\n`scopeline simulate` (here its Python function) writes a V4 folder: `.avi` files, "
        "`metaData.json`, `timeStamps.csv`, as the Miniscope software does."),
 ("code", SIM.format(name="quickstart_rec", frames=600, cells=20, seed=3)),
 ("md", "## 2. Ingest and process\n\nIngesting reads the files' metadata and timing into the database (the movie stays "
        "where it is). `presets.queue` queues the chain with the `default` preset's parameter sets; each stage's "
        "`populate()` computes what is queued (`scopeline run FOLDER` does all of this in one command)."),
 ("code", '''from scopeline.pipeline import cnmf, initialization, motion, presets
from scopeline.pipeline.ingest import ingest

(rec,) = ingest(recording, subject="m1", session="day1")
presets.queue([rec.key], presets.stage_paramsets("default"), "cnmf")
for table in (motion.MotionCorrection, initialization.Initialization, cnmf.CNMF):
    table.populate(reserve_jobs=True, display_progress=False)
key = presets.result_key(rec.key, "default")
key'''),
 ("md", "## 3. Query\n\nEvery reader takes optional restrictions (subject, session, parameter sets) and returns a pandas table."),
 ("code", '''from scopeline import query

query.sessions()'''),
 ("code", '''query.results(subject="m1")'''),
 ("code", '''units = query.units(subject="m1")
units[["unit_id", "centroid_y", "centroid_x", "area", "snr", "sn"]].head()'''),
 ("md", "Traces come as one row per unit with arrays; `kind=\"dff\"` gives dF/F over each unit's resting "
        "fluorescence, and `query.events` the onsets of its calcium events (runs of deconvolved activity above 3 noise units)."),
 ("code", '''dff = query.traces(subject="m1", kind="dff")
events = query.events(subject="m1")
print(f"{len(dff)} units, {len(events)} events; peak dF/F median {np.median([t.max() for t in dff['dff']]):.2f}")
events.head()'''),
 ("md", "How close is this to the truth? The simulator kept it: count the true cells with a unit within 4 pixels."),
 ("code", '''from scopeline.core import quality

truth = sim.load_ground_truth(recording)
offset = -np.median(np.asarray((motion.MotionCorrection & key).fetch1("shifts")) - truth["shifts"], axis=0)
found, true_idx = quality.match_units(units[["centroid_y", "centroid_x"]].to_numpy(),
                                      quality.centroids(truth["A"]) + offset, 4.0)
print(f"{len(units)} units; {len(true_idx)} of {len(truth['A'])} true cells found")
assert len(true_idx) >= 0.8 * len(truth["A"])'''),
 ("md", "## 4. Figures\n\nThe same figures `scopeline report` writes: motion, summary images, units with traces, quality."),
 ("code", '''from IPython.display import Image, display

from scopeline import report

figures = report.write_figures(key, WORK / "figures")
for name, path in figures.items():
    print(name, path.name)
display(Image(filename=str(figures["cnmf"]), width=900))'''),
 ("md", "## 5. NWB\n\nOne file with the recording's timing, the corrected movie's summary images, the units' footprints, "
        "C, S, dF/F and events, and the provenance of every stage; checked by nwbinspector."),
 ("code", '''from scopeline.pipeline import nwb

path = nwb.export_nwb(key, WORK / "m1_day1.nwb", overwrite=True)
problems = nwb.inspect_nwb(path)
print(path.name, f"{path.stat().st_size / 1e6:.1f} MB;", len(problems), "nwbinspector messages")

from pynwb import NWBHDF5IO

with NWBHDF5IO(str(path), "r") as io:
    f = io.read()
    ophys = f.processing["ophys"]
    print("C:", ophys["Fluorescence"]["C"].data.shape, "| dF/F:", ophys["DfOverF"]["dff"].data.shape, "(frames, units)")'''),
])

nb("02_parameter_tuning.ipynb", [
 ("md", "# Parameter tuning: two parameter sets of one stage, side by side\n\n"
        "Every result is stored with the exact parameters that made it. To try a change, add a parameter set, queue it "
        "on the same recording, and compare: the stages upstream (motion correction here) are computed once and shared."),
 ("code", SETUP),
 ("code", SIM.format(name="tuning_rec", frames=600, cells=20, seed=5)),
 ("md", "## Two initialization parameter sets\n\n`default` and a stricter one that keeps only seeds with a higher "
        "peak-to-noise ratio (`pnr_threshold`). Missing fields take their defaults; the set is validated against the "
        "stage's schema (`schemas/initialization.schema.json`) when inserted. (`scopeline paramset add NAME FILE.json --stage initialization` does the same.)"),
 ("code", '''from scopeline.pipeline import cnmf, initialization, motion, presets, stages
from scopeline.pipeline.ingest import ingest

(rec,) = ingest(recording, subject="m2", session="day1")
init = stages.get("initialization").paramset
if not (init & {init.name_attr: "strict_pnr"}):
    init.insert1({init.name_attr: "strict_pnr", "description": "seeds need PNR 9 (default 4.5)",
                  "params": {"pnr_threshold": 9.0}})
chains = {"default": presets.stage_paramsets("default")}
chains["strict_pnr"] = {**chains["default"], "initialization": "strict_pnr"}
for chain in chains.values():
    presets.queue([rec.key], chain, "cnmf")
for table in (motion.MotionCorrection, initialization.Initialization, cnmf.CNMF):
    table.populate(reserve_jobs=True, display_progress=False)

from scopeline import query

query.results(subject="m2")'''),
 ("md", "## Side by side\n\nAgainst the simulator's truth: the Minian paper's accuracy (F1 of units matched within 5 pixels, "
        "footprint, trace and spike correlations), and each result's units over the max projection."),
 ("code", '''from scopeline.core import quality
from scopeline.pipeline import keys, units

truth = sim.load_ground_truth(recording)
rows = []
for name, chain in chains.items():
    key = keys.for_paramsets(rec.key, chain, "cnmf")
    res = units.arrays(key)
    offset = -np.median(np.asarray((motion.MotionCorrection & key).fetch1("shifts")) - truth["shifts"], axis=0)
    acc = quality.accuracy(res["A"].dense(), res["C"], res["S"], truth["A"], truth["C"], truth["S"], offset=tuple(offset))
    rows.append({"initialization": name, "units": len(res["unit_id"]), "F1": acc.f1, "precision": acc.precision,
                 "recall": acc.recall, "footprint_r": acc.footprint_corr, "trace_r": acc.trace_corr})
import pandas as pd

pd.DataFrame(rows).round(3)'''),
 ("code", '''import matplotlib.pyplot as plt

from scopeline import figures

max_image = (motion.MotionCorrection & key).fetch1("max_image")
fig, axes = plt.subplots(1, 2, figsize=(11, 5.5))
for ax, (name, chain) in zip(axes, chains.items()):
    res = units.arrays(keys.for_paramsets(rec.key, chain, "cnmf"))
    ax.imshow(max_image, cmap="gray")
    figures._lines(ax, res["A"].contours(), ["#3ddc84"] * len(res["A"]))
    ax.set_title(f"initialization {name}: {len(res['A'])} units")
    ax.set_axis_off()
plt.show()'''),
 ("md", "The result you keep is just a key: every reader (`query`, figures, NWB, the view) takes the parameter sets, "
        "e.g. `query.units(subject=\"m2\", initialization=\"strict_pnr\")`."),
 ("code", '''len(query.units(subject="m2", initialization="strict_pnr")), len(query.units(subject="m2", initialization="default"))'''),
])

nb("03_curation.ipynb", [
 ("md", "# Curation: rules, manual decisions, versions, and the browser view\n\n"
        "A curation decides which units of a CNMF result are cells. Curations are versioned: each new one is made on top of "
        "another, none is overwritten, and one is *in use* (what every reader shows: queries, figures, NWB)."),
 ("code", SETUP),
 ("code", SIM.format(name="curation_rec", frames=600, cells=20, seed=7)),
 ("code", '''from scopeline.pipeline import cnmf, curation, initialization, motion, presets
from scopeline.pipeline.ingest import ingest

(rec,) = ingest(recording, subject="m3", session="day1")
presets.queue([rec.key], presets.stage_paramsets("default"), "cnmf")
for table in (motion.MotionCorrection, initialization.Initialization, cnmf.CNMF):
    table.populate(reserve_jobs=True, display_progress=False)
key = presets.result_key(rec.key, "default")'''),
 ("md", "## Rules\n\nA rule set (CaImAn's semantics: a unit is kept when its metrics pass) says why each unit it rejects is rejected."),
 ("code", '''first = curation.apply_rules(key, "default")
state = curation.state(key, first)
print(f"curation {first}: {sum(s.accepted for s in state.values())} of {len(state)} units accepted")
{u: s.reason for u, s in state.items() if not s.accepted}'''),
 ("md", "## Manual decisions\n\nReject, accept, label, merge, with a note; saved as a new curation on top of the one in use."),
 ("code", '''from scopeline.core.curation import Edit

ids = sorted(state)
second = curation.edit(key, Edit(reject=[ids[0]], labels={ids[1]: ["dendrite"]}, note="first look"), curator="notebook")
for c in curation.curations(key):
    print(c["curation_id"], c["kind"], "on", c["parent"], "|", c["n_accepted"], "of", c["n_units"], "|",
          c["note"], "| in use" if c["in_use"] else "")'''),
 ("code", '''from scopeline import query

shown = query.units(subject="m3")
assert ids[0] not in set(shown["unit_id"])
print(len(shown), "units shown; unit", ids[1], "is labelled", curation.state(key)[ids[1]].labels)'''),
 ("md", "Going back is choosing another curation (nothing is deleted): `curation.use(key, first)`; "
        "`scopeline curate ls m3` lists them on the command line."),
 ("code", '''curation.use(key, first)
print(len(query.units(subject="m3")), "units shown with curation", first)
curation.use(key, second)
print(len(query.units(subject="m3")), "units shown with curation", second)'''),
 ("md", "## The browser view\n\n`scopeline view` serves a page on this machine (127.0.0.1, with a random token in the "
        "URL it prints): click a unit to see its footprint, C / S / dF/F and a clip of the movie at its strongest events; "
        "`a` / `r` accept / reject, `1`-`7` label, `m` merge, `s` saves a new curation. Here we start it inside the notebook "
        "and ask its API for the results, as the page does."),
 ("code", '''import json
import urllib.request

from scopeline import view

running = view.start()
print("open", running.url())
request = urllib.request.Request(running.base + "/api/results", headers={"X-Scopeline-Token": running.token})
listed = json.load(urllib.request.urlopen(request))["results"]
print([(r["subject"], r["session"], r["n_accepted"], r["curation"]) for r in listed])
running.stop()'''),
])

nb("04_cross_session.ipynb", [
 ("md", "# Cross-session tracking: the same cells across days\n\n"
        "Three simulated sessions of one animal: the same cells, the field of view shifted and turned a little each day. "
        "Each session is processed, then a registration group aligns them and finds each cell in every session it is seen in."),
 ("code", SETUP),
 ("code", '''from scopeline.core import simulate as sim

params = sim.SimulationParams(height=112, width=112, n_frames=400, n_cells=16, signal_level=1.4, seed=4)
days = WORK / "days"
folders = sorted(days.glob("*/*/")) if days.exists() else []
if len(folders) != 3:
    folders = sim.simulate_sessions(days, params, n_sessions=3, fov_shift=4.0)
[str(f.relative_to(WORK)) for f in folders]'''),
 ("code", '''from scopeline.pipeline import presets, stages
from scopeline.pipeline.ingest import ingest

recs = [ingest(folder, "m4", f"day{k + 1}")[0].key for k, folder in enumerate(folders)]
presets.queue(recs, presets.stage_paramsets("default"), "cnmf")
for stage in stages.per_recording():
    stage.computed.populate(reserve_jobs=True, display_progress=False)
results = [presets.result_key(r, "default") for r in recs]'''),
 ("md", "## Register\n\nA group names the results to register (one per session, in order); its task is queued with the "
        "`default` registration parameters and `populate` registers them (`scopeline register-group` on the command line)."),
 ("code", '''from scopeline.pipeline import registration

group = registration.create_group("m4_fov1", results, description="three days")
registration.Registration.populate(reserve_jobs=True, display_progress=False)
cells = registration.cells("m4_fov1")
print(f"{len(cells)} distinct cells;", cells["n_sessions"].value_counts().sort_index().to_dict(), "(sessions: cells)")
cells.head()'''),
 ("md", "## One cell across days\n\nIts traces in each session, each on its own clock."),
 ("code", '''import matplotlib.pyplot as plt

from scopeline import query

cell = int(cells.sort_values(["n_sessions", "score"], ascending=False)["cell_id"].iloc[0])
traces = query.cell_traces("m4_fov1", cell)
fig, axes = plt.subplots(len(traces), 1, figsize=(10, 1.6 * len(traces)), sharex=True)
for ax, row in zip(np.atleast_1d(axes), traces.itertuples()):
    ax.plot(row.time, row.C, lw=0.8)
    ax.set_ylabel(row.session)
axes[-1].set_xlabel("time (s)")
plt.show()
traces[["session", "unit_id"]]'''),
 ("md", "The registration's figures (aligned footprints, the same-cell model) are drawn by `scopeline report` for each "
        "member session, or directly:"),
 ("code", '''from IPython.display import Image, display

from scopeline import figures

path = figures.registration_figure(registration.result("m4_fov1"), WORK / "registration.png",
                                   names=[r["session"] for r in results])
display(Image(filename=str(path), width=900))'''),
])

nb("05_lab_server.ipynb", [
 ("md", "# Working on a lab server\n\n"
        "One MySQL / MariaDB (or PostgreSQL) server holds every result of the lab; an object store (a shared folder) "
        "holds the large arrays; any number of workers on any machines compute what is queued. This notebook shows "
        "how scopeline finds them, and queues work for workers and watches it."),
 ("md", "## Configuration\n\nscopeline reads, in order: environment variables (`DJ_HOST`, `DJ_USER`, `DJ_PASS`, "
        "`DJ_BACKEND`, `DJ_STORES`, `SCOPELINE_SCHEMA_PREFIX`), then `scopeline.yaml` in `SCOPELINE_HOME`. "
        "`scopeline db status` prints what is in use. Nothing here is secret in a notebook: passwords come from the environment."),
 ("code", SETUP),
 ("code", '''from scopeline import database
from scopeline._dj import dj

print("server:", dj.config["database.host"], "| backend:", dj.config.get("database.backend", "mysql"))
print("store:", database.describe()["store"])
database.check_store()  # the object store is mounted and writable (a worker checks this before any job)
print("object store ok")'''),
 ("md", "## Queue work, let workers do it\n\nQueuing writes task rows; it computes nothing. A worker "
        "(`scopeline worker` on each machine, e.g. under systemd or a SLURM array) takes one job at a time, every stage "
        "upstream first, and records it in the jobs table, so workers never do a job twice and a killed worker's "
        "job is made pending again."),
 ("code", SIM.format(name="server_rec", frames=400, cells=12, seed=9)),
 ("code", '''from scopeline.pipeline import presets
from scopeline.pipeline.ingest import ingest

(rec,) = ingest(recording, subject="m5", session="day1")
presets.queue([rec.key], presets.stage_paramsets("default"), "cnmf")

from scopeline import query

query.status()'''),
 ("md", "One worker, here as a subprocess that exits when nothing is left (`--idle-exit 0`); on a lab server you start "
        "several, on several machines, with the same configuration."),
 ("code", '''import subprocess
import sys

worker = subprocess.run([sys.executable, "-m", "scopeline.cli", "worker", "--idle-exit", "0", "--max-sleep", "0.5"],
                        capture_output=True, text=True, timeout=600)
print(worker.stdout[-1500:])
assert worker.returncode == 0, worker.stderr[-2000:]'''),
 ("code", '''status = query.status()
status'''),
 ("md", "## Watching jobs\n\n`scopeline jobs` (here `pipeline.jobs.jobs`) shows reserved and failed jobs with host, pid, "
        "age and whether the worker is alive; `scopeline jobs --reset-orphans` makes dead workers' jobs pending again "
        "(every populate and worker pass does that too)."),
 ("code", '''from scopeline.pipeline import jobs

print(len(jobs.jobs(status="reserved")), "reserved;", len(jobs.jobs(status="error")), "failed;",
      len(jobs.orphans()), "orphaned")
query.results(subject="m5")'''),
])
print("ok")
