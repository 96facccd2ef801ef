"""The ``scopeline`` command."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

os.environ.setdefault("DJ_LOG_LEVEL", "WARNING")  # no "connected to ..." line on every command

app = typer.Typer(help="scopeline: a DataJoint pipeline for 1-photon miniscope calcium imaging.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
db_app = typer.Typer(help="The private database server (used when no server is configured).",
                     no_args_is_help=True)
app.add_typer(db_app, name="db")
_WIDTH = None if sys.stdout.isatty() else 160  # logs and pipes get whole tables, not 80 columns
console = Console(width=_WIDTH)
err_console = Console(stderr=True, width=_WIDTH)


def _fail(message: str, code: int = 1):
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def _clear_errors():
    """Turn the errors a user can cause (bad recordings, identity, database access) into one line."""
    from scopeline._dj import dj
    from scopeline.core.io import RecordingError
    from scopeline.pipeline.ingest import IngestError
    from scopeline.server import ServerError

    try:
        yield
    except (RecordingError, IngestError, ServerError, dj.DataJointError) as err:
        _fail(f"{type(err).__name__}: {err}" if isinstance(err, dj.DataJointError) else str(err))


# --------------------------------------------------------------------------------------- db


@db_app.command("up")
def db_up():
    """Start the private server (initializing it on first use); no-op if it runs."""
    from scopeline import database, server

    if database.user_configured():
        console.print("A database server is configured (DJ_HOST or datajoint.json): scopeline uses it "
                      "and starts none of its own.")
        return
    t0 = time.monotonic()
    try:
        info = server.up()
    except server.ServerError as err:
        _fail(str(err))
    console.print(f"{info.flavor} running on {info.host}:{info.port} (pid {info.pid}, data {info.datadir}) "
                  f"[{time.monotonic() - t0:.1f} s]")


@db_app.command("down")
def db_down():
    """Stop the private server."""
    from scopeline import server

    try:
        stopped = server.down()
    except server.ServerError as err:
        _fail(str(err))
    console.print("stopped" if stopped else "not running")


@db_app.command("status")
def db_status(as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Describe the database scopeline uses and the private server."""
    from scopeline import database

    info = database.describe()
    if as_json:
        console.print_json(json.dumps(info, default=str))
        return
    console.print(f"home: {info['home']}")
    if info["configured_by_user"]:
        from scopeline._dj import dj

        console.print(f"database: configured by the user ({dj.config['database.backend']} at "
                      f"{dj.config['database.host']})")
    srv = info["private_server"]
    if srv is None:
        console.print("private server: not set up (`scopeline db up`)")
    else:
        state = "running" if srv["running"] else "stopped"
        console.print(f"private server: {srv['flavor']} {state} on {srv['host']}:{srv['port']}, data {srv['datadir']}")
    console.print(f"object store: {info['store']}")


# ---------------------------------------------------------------------------------- ingest


@app.command()
def ingest(
    path: Path = typer.Argument(..., help="Recording folder or file, or a folder above recordings."),
    subject: Optional[str] = typer.Option(None, "--subject", "-s", help="Subject id."),
    session: Optional[str] = typer.Option(None, "--session", "-d", help="Session id."),
    pattern: Optional[str] = typer.Option(
        None, "--pattern", "-p",
        help="Folder template relative to the data root giving subject/session, e.g. '**/{subject}/{session}/*/*'."),
    fps: Optional[float] = typer.Option(None, "--fps", help="Frame rate (Hz) for TIFF/AVI without a clock."),
):
    """Ingest recordings (Miniscope V4/V3 folders, TIFF stacks, AVI folders) into the database."""
    from scopeline.pipeline.ingest import ingest as run_ingest

    with _clear_errors():
        results = run_ingest(path, subject, session, pattern=pattern, fps=fps)
    table = Table("subject", "session", "recording", "frames", "fps", "path", "status")
    for r in results:
        table.add_row(r.key["subject"], r.key["session"], str(r.key["recording_id"]), str(r.n_frames),
                      f"{r.fps:.2f}", r.path, "ingested" if r.new else "present")
    console.print(table)
    new = sum(r.new for r in results)
    console.print(f"{new} recording(s) ingested, {len(results) - new} already in the database")


# -------------------------------------------------------------------------------- simulate


@app.command()
def simulate(
    out: Path = typer.Argument(..., help="Output folder (must be empty or absent)."),
    height: int = typer.Option(256, help="Frame height, pixels."),
    width: int = typer.Option(256, help="Frame width, pixels."),
    frames: int = typer.Option(1000, help="Number of frames."),
    cells: int = typer.Option(50, help="Number of cells."),
    signal_level: float = typer.Option(1.0, help="Scalar on the cells' signal (Minian paper: 0.2-1.8)."),
    motion: float = typer.Option(0.3, help="Random-walk step of the translation, pixels/frame."),
    max_shift: float = typer.Option(8.0, help="Largest translation, pixels."),
    noise: float = typer.Option(6.0, help="Gaussian noise standard deviation, 8-bit units."),
    fps: float = typer.Option(20.0, help="Frame rate, Hz."),
    frames_per_file: int = typer.Option(1000, help="Frames per AVI file."),
    dropped: int = typer.Option(0, help="Dropped-frame gaps in the timestamps."),
    seed: int = typer.Option(0, help="Random seed."),
    layout: str = typer.Option("v4", help="v4 | v3 | tiff"),
    sessions: int = typer.Option(1, help="Several sessions of the same cells (V4 layout)."),
    fov_shift: float = typer.Option(10.0, help="Multi-session: largest field-of-view offset, pixels."),
    presence: float = typer.Option(0.85, help="Multi-session: probability a cell is present in a session."),
):
    """Write a simulated recording with ground truth (Minian paper's generator)."""
    from scopeline.core import simulate as sim

    if sessions > 1 and layout != "v4":
        _fail("--sessions > 1 writes Miniscope V4 folders; drop --layout")
    try:
        params = sim.SimulationParams(height=height, width=width, n_frames=frames, n_cells=cells,
                                      signal_level=signal_level, motion_sd=motion, max_shift=max_shift,
                                      noise_sd=noise, fps=fps, frames_per_file=frames_per_file,
                                      n_dropped=dropped, seed=seed)
        t0 = time.monotonic()
        if sessions > 1:
            folders = sim.simulate_sessions(out, params, sessions, fov_shift=fov_shift, presence=presence,
                                            progress=True)
        else:
            folders = [sim.simulate(out, params, layout=layout, progress=True)]
    except (ValueError, RuntimeError) as err:
        _fail(str(err))
    for f in folders:
        console.print(f"recording: {f}")
    console.print(f"ground truth: {out}/**/{sim.GROUND_TRUTH}  [{time.monotonic() - t0:.1f} s]")


# ---------------------------------------------------------------------------- processing

paramset_app = typer.Typer(help="Parameter sets of the processing stages.", no_args_is_help=True)
task_app = typer.Typer(help="Say which parameter set to run on which recordings.", no_args_is_help=True)
app.add_typer(paramset_app, name="paramset")
app.add_typer(task_app, name="task")


def _paramset_tables() -> dict:
    """stage name -> its parameter-set table."""
    from scopeline.pipeline import cnmf, initialization, motion

    return {"motion": motion.MotionParamSet, "init": initialization.InitParamSet, "cnmf": cnmf.CNMFParamSet}


@paramset_app.command("ls")
def paramset_ls():
    """List the parameter sets of every stage in the database, and the shipped presets."""
    from scopeline.pipeline import activate

    with _clear_errors():
        activate()
    table = Table("stage", "paramset", "description", "hash")
    tables = _paramset_tables()
    for stage, t in tables.items():
        for r in t.to_dicts(order_by=t.name_attr):
            table.add_row(stage, r[t.name_attr], r["description"], r["params_hash"][:10])
    console.print(table)
    for stage, t in tables.items():
        console.print(f"shipped {stage} presets: {', '.join(sorted(t.presets))}")


@paramset_app.command("add")
def paramset_add(
    name: str = typer.Argument(..., help="Name of the new parameter set."),
    params_file: Path = typer.Argument(..., help="JSON file of parameters (missing fields take defaults)."),
    stage: str = typer.Option("motion", help="motion | init | cnmf"),
    description: str = typer.Option("", help="What it is for."),
):
    """Add a parameter set from a JSON file (validated against schemas/<stage>.schema.json)."""
    from scopeline.pipeline import activate

    tables = _paramset_tables()
    if stage not in tables:
        _fail(f"unknown stage {stage!r}: use one of {', '.join(tables)}")
    try:
        params = json.loads(params_file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        _fail(f"{params_file}: {err}")
    with _clear_errors():
        activate()
        t = tables[stage]
        t.insert1({t.name_attr: name, "description": description, "params": params})
    console.print(f"added {stage} paramset {name!r}")


def _paramset(stage: str, name: str) -> dict:
    """The key of a parameter set, inserting a shipped preset of that name when missing."""
    t = _paramset_tables()[stage]
    key = {t.name_attr: name}
    if not (t & key):
        if name not in t.presets:
            _fail(f"no {stage} paramset {name!r} (in the database: {sorted(t.to_arrays(t.name_attr))}; "
                  f"presets: {sorted(t.presets)})")
        t.add_preset(name)
    return key


def _recordings(subject, session, recording) -> list[dict]:
    from scopeline.pipeline import acquisition

    restriction = {k: v for k, v in (("subject", subject), ("session", session), ("recording_id", recording))
                   if v is not None}
    keys = (acquisition.RecordingInfo & restriction).keys()
    if not keys:
        _fail(f"no ingested recording matches {restriction or 'anything'}")
    return keys


@task_app.command("motion")
def task_motion(
    paramset: str = typer.Option("default", "--paramset", "-p", help="Parameter set name, or a shipped preset."),
    subject: Optional[str] = typer.Option(None, "--subject", "-s"),
    session: Optional[str] = typer.Option(None, "--session", "-d"),
    recording: Optional[int] = typer.Option(None, "--recording", "-r"),
):
    """Add motion-correction tasks for the matching recordings (all when no filter is given)."""
    from scopeline.pipeline import activate, motion

    with _clear_errors():
        activate()
        m = _paramset("motion", paramset)
        rows = [{**k, **m} for k in _recordings(subject, session, recording)]
        before = len(motion.MotionTask())
        motion.MotionTask.insert(rows, skip_duplicates=True)
    console.print(f"{len(motion.MotionTask()) - before} motion task(s) added ({len(rows)} matching recording(s))")


@task_app.command("cnmf")
def task_cnmf(
    paramset: str = typer.Option("minian", "--paramset", "-p", help="CNMF parameter set, or a shipped preset."),
    init: str = typer.Option("minian", "--init", help="Initialization parameter set, or a shipped preset."),
    motion_paramset: str = typer.Option("default", "--motion", help="Motion parameter set, or a shipped preset."),
    subject: Optional[str] = typer.Option(None, "--subject", "-s"),
    session: Optional[str] = typer.Option(None, "--session", "-d"),
    recording: Optional[int] = typer.Option(None, "--recording", "-r"),
):
    """Queue the whole chain (motion, initialization, CNMF) for the matching recordings.

    Work already queued or done is shared: a second CNMF parameter set reuses the motion correction
    and initialization of the first.
    """
    from scopeline.pipeline import activate, cnmf, initialization, motion

    with _clear_errors():
        activate()
        m, i, c = _paramset("motion", motion_paramset), _paramset("init", init), _paramset("cnmf", paramset)
        keys = _recordings(subject, session, recording)
        before = len(cnmf.CNMFTask())
        motion.MotionTask.insert([{**k, **m} for k in keys], skip_duplicates=True)
        initialization.InitTask.insert([{**k, **m, **i} for k in keys], skip_duplicates=True)
        cnmf.CNMFTask.insert([{**k, **m, **i, **c} for k in keys], skip_duplicates=True)
    console.print(f"{len(cnmf.CNMFTask()) - before} CNMF task(s) added ({len(keys)} matching recording(s))")


@app.command()
def populate(
    retry_errors: bool = typer.Option(False, "--retry-errors", help="Clear failed jobs first and run them again."),
    workers: int = typer.Option(2, help="Blocks processed in parallel per job."),
    scheduler: str = typer.Option(os.environ.get("SCOPELINE_DASK_SCHEDULER", "threads"),
                                  help="threads | processes | address of a dask.distributed scheduler "
                                       "(default: SCOPELINE_DASK_SCHEDULER or threads)."),
):
    """Run all pending work (RecordingInfo, MotionCorrection, Initialization, CNMF), with progress bars;
    reports failures.

    Safe on many machines at once: jobs are reserved in the database, so each runs once.
    """
    from scopeline.pipeline import acquisition, activate, cnmf, initialization, motion

    with _clear_errors():
        activate()
    motion.MotionCorrection.workers = workers
    motion.MotionCorrection.scheduler = scheduler
    failed = 0
    for table in (acquisition.RecordingInfo, motion.MotionCorrection, initialization.Initialization, cnmf.CNMF):
        name = table.__name__
        if retry_errors:
            table.jobs.errors.delete_quick()
        t0 = time.monotonic()
        out = table.populate(reserve_jobs=True, suppress_errors=True, display_progress=True)
        errors = table.jobs.errors.to_dicts()
        console.print(f"{name}: {out['success_count']} done in {time.monotonic() - t0:.1f} s, "
                      f"{len(table())} in total, {len(errors)} failed")
        for job in errors:
            key = "/".join(str(job[k]) for k in table.primary_key)
            console.print(f"  [red]failed[/] {key}: {job['error_message']}", highlight=False)
        failed += len(errors)
    if failed:
        console.print("fix the cause, then: scopeline populate --retry-errors")
        raise typer.Exit(1)


figure_app = typer.Typer(help="Diagnostic figures of stored results (PNG).", no_args_is_help=True)
app.add_typer(figure_app, name="figure")


@figure_app.command("motion")
def figure_motion(
    out: Path = typer.Argument(..., help="PNG file to write."),
    subject: str = typer.Option(..., "--subject", "-s"),
    session: str = typer.Option(..., "--session", "-d"),
    recording: int = typer.Option(0, "--recording", "-r"),
    paramset: str = typer.Option("default", "--paramset", "-p"),
):
    """Motion shifts over time and summary images (mean, max, std, correlation, PNR)."""
    from scopeline.figures import motion_figure
    from scopeline.pipeline import acquisition, activate, motion

    key = {"subject": subject, "session": session, "recording_id": recording, "motion_paramset": paramset}
    with _clear_errors():
        activate()
        rows = (motion.MotionCorrection & key).to_dicts()
        if not rows:
            _fail(f"no motion correction for {key}: add a task and run `scopeline populate`")
        ts = (acquisition.RecordingInfo & key).fetch1("timestamps")
    path = motion_figure(rows[0], ts, out, title=f"{subject} / {session} / recording {recording} / {paramset}")
    console.print(f"wrote {path}")


@figure_app.command("cnmf")
def figure_cnmf(
    out: Path = typer.Argument(..., help="PNG file to write."),
    subject: str = typer.Option(..., "--subject", "-s"),
    session: str = typer.Option(..., "--session", "-d"),
    recording: int = typer.Option(0, "--recording", "-r"),
    paramset: str = typer.Option("minian", "--paramset", "-p", help="CNMF parameter set."),
    init: str = typer.Option("minian", "--init", help="Initialization parameter set."),
    motion_paramset: str = typer.Option("default", "--motion", help="Motion parameter set."),
):
    """Footprint contours on the max projection, and sample traces with their deconvolved activity."""
    from scopeline.pipeline import activate

    key = {"subject": subject, "session": session, "recording_id": recording, "motion_paramset": motion_paramset,
           "init_paramset": init, "cnmf_paramset": paramset}
    with _clear_errors():
        activate()
        path = _cnmf_figure(key, out)
    console.print(f"wrote {path}")


def _cnmf_figure(key: dict, out: Path) -> Path:
    from scopeline.figures import cnmf_figure
    from scopeline.pipeline import acquisition, cnmf, motion

    if not (cnmf.CNMF & key):
        _fail(f"no CNMF result for {key}: add a task (`scopeline task cnmf`) and run `scopeline populate`")
    res = (cnmf.CNMF & key).result()
    max_image, frame_index = (motion.MotionCorrection & key).fetch1("max_image", "frame_index")
    ts = (acquisition.RecordingInfo & key).fetch1("timestamps")
    times = ts[frame_index] - ts[0] if ts is not None and len(ts) > frame_index.max(initial=0) else None
    title = " / ".join(str(key[k]) for k in ("subject", "session", "recording_id", "motion_paramset",
                                              "init_paramset", "cnmf_paramset"))
    return cnmf_figure(res["A"], max_image, res["C"], res["S"], times, out, title=title, unit_ids=res["unit_id"])


# -------------------------------------------------------------------------------------- ls


@app.command("ls")
def ls():
    """List subjects, sessions and recordings in the database."""
    from scopeline.pipeline import acquisition, activate

    with _clear_errors():
        activate()
    rows = (acquisition.Recording * acquisition.RecordingInfo).to_dicts(
        order_by=["subject", "session", "recording_id"])
    table = Table("subject", "session", "recording", "system", "frames", "size", "fps", "duration (s)", "path")
    for r in rows:
        table.add_row(r["subject"], r["session"], str(r["recording_id"]), r["acquisition_system"],
                      str(r["n_frames"]), f"{r['height']}x{r['width']}", f"{r['fps']:.2f}",
                      f"{r['duration']:.1f}", r["recording_path"])
    console.print(table)


# ------------------------------------------------------------------------------------ demo


@app.command()
def demo(
    frames: int = typer.Option(2000, help="Frames of the simulated session."),
    shared_data: Optional[Path] = typer.Option(None, help="Folder of the real data (default ../shared/data)."),
):
    """Local database, the real CA1 recording and a simulated V4 session: ingest, motion correction,
    initialization and CNMF, figures."""
    from scopeline import database, settings
    from scopeline.core import simulate as sim
    from scopeline.figures import motion_figure
    from scopeline.pipeline import acquisition, activate, cnmf, initialization, motion

    t0 = time.monotonic()
    with _clear_errors():
        where = database.configure()
        activate()
    console.print(f"database: {where['backend']} at {where['host']}:{where['port']} ({where['source']})")
    data = shared_data or _find_shared_data()
    real = data / "ca1_miniscope_v3" / "ca1_500x240x376_uint8.tif" if data else None
    subjects = []
    if real is not None and real.exists():
        ingest(real, subject="ca1", session="minian_demo", pattern=None, fps=15.0)
        subjects.append(("ca1", "minian_demo"))
    else:
        console.print("real recording not found (../shared/data/ca1_miniscope_v3): skipped")
    sim_dir = settings.home() / "demo" / f"sim_v4_{frames}"
    if not (sim_dir / sim.GROUND_TRUTH).exists():
        import shutil

        shutil.rmtree(sim_dir, ignore_errors=True)
        sim.simulate(sim_dir, sim.SimulationParams(height=256, width=256, n_frames=frames, n_cells=60,
                                                   seed=0), progress=True)
    ingest(sim_dir, subject="sim01", session="2026_01_05", pattern=None, fps=None)
    subjects.append(("sim01", "2026_01_05"))
    for subject, session in subjects:
        task_cnmf(paramset="minian", init="minian", motion_paramset="default", subject=subject, session=session,
                  recording=None)
    populate(retry_errors=False, workers=2, scheduler="threads")
    figures = settings.home() / "demo" / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    for subject, session in subjects:
        key = {"subject": subject, "session": session, "recording_id": 0, "motion_paramset": "default"}
        row = (motion.MotionCorrection & key).to_dicts()[0]
        ts = (acquisition.RecordingInfo & key).fetch1("timestamps")
        path = motion_figure(row, ts, figures / f"{subject}_motion.png", title=f"{subject} / {session} / default")
        console.print(f"{subject}: {row['n_frames']} frames motion-corrected in {row['compute_time']:.1f} s, "
                      f"{len(row['corrupted_frames'])} corrupted frames; figure {path}")
        ckey = {**key, "init_paramset": "minian", "cnmf_paramset": "minian"}
        n_units, seconds = (cnmf.CNMF & ckey).fetch1("n_units", "compute_time")
        init_s = (initialization.Initialization & ckey).fetch1("compute_time")
        path = _cnmf_figure(ckey, figures / f"{subject}_cnmf.png")
        console.print(f"{subject}: {n_units} units (initialization {init_s:.1f} s, CNMF {seconds:.1f} s); figure {path}")
    ls()
    console.print(f"demo done in {time.monotonic() - t0:.1f} s")


def _find_shared_data() -> Path | None:
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        for candidate in (base / ".." / "shared" / "data", base / "shared" / "data"):
            if candidate.is_dir():
                return candidate.resolve()
    return None


def main() -> None:  # pragma: no cover - entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
