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
import typer.core
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
    """Turn the errors a user can cause (:class:`scopeline.errors.ScopelineError`: bad recordings,
    parameters, names, configuration; and database access) into one line and the error's exit code,
    and show scopeline's own warnings (a changed preset) as one line too."""
    import warnings

    from scopeline._dj import dj
    from scopeline.errors import ScopelineError, exit_code
    from scopeline.pipeline.presets import PresetWarning

    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, PresetWarning):
            err_console.print(f"[bold yellow]warning:[/] {message}", highlight=False, soft_wrap=True)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    except (ScopelineError, FileExistsError, dj.DataJointError) as err:
        _fail(f"{type(err).__name__}: {err}" if isinstance(err, dj.DataJointError) else str(err), exit_code(err))
    finally:
        warnings.showwarning = shown


def _recording_cells(key) -> list[str]:
    """A recording's fields as table cells (subject, session, recording)."""
    from scopeline.pipeline import keys

    return [str(key[k]) for k in keys.RECORDING]


def _stage_options(*, skip: tuple = ()):
    """Give a command one option per stage with parameters (``--motion``, ``--initialization``,
    ``--cnmf`` and their aliases, and any stage registered later), passed to it as
    ``paramsets={stage name: value or None}``: adding a stage adds its option everywhere. Aliases in
    ``skip`` are left out (a command's own ``--paramset``)."""
    import functools
    import inspect

    from scopeline.pipeline import stages

    def decorate(fn):
        signature = inspect.signature(fn)
        own = [p for p in signature.parameters.values() if p.name != "paramsets"]
        names = {s.name: f"paramset_{s.name}" for s in stages.per_recording()}
        extra = [inspect.Parameter(
            names[s.name], inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],
            default=typer.Option(None, f"--{s.name}", *(a for a in s.aliases if a not in skip), help=f"{s.label[0].upper()}{s.label[1:]} parameter set."))
            for s in stages.per_recording()]

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            paramsets = {stage: kwargs.pop(arg) for stage, arg in names.items()}
            return fn(*args, paramsets=paramsets, **kwargs)

        wrapper.__signature__ = signature.replace(parameters=own + extra)
        wrapper.__annotations__ = {**{k: v for k, v in fn.__annotations__.items() if k != "paramsets"},
                                   **{p.name: p.annotation for p in extra}}
        return wrapper

    return decorate


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


@db_app.command("migrate")
def db_migrate():
    """Add the attributes this version of scopeline stores to tables an earlier version made (rows kept;
    the new attributes are null in them)."""
    from scopeline.pipeline import migrate

    with _clear_errors():
        added = migrate()
    if not added:
        console.print("the database is current: nothing to add")
    for table, names in added.items():
        console.print(f"{table}: added {', '.join(names)}", highlight=False)


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
    fps: Optional[float] = typer.Option(None, "--fps", min=0.001, max=10000.0, help="Frame rate (Hz) for TIFF/AVI "
                                        "without a clock."),
):
    """Ingest recordings (Miniscope V4/V3 folders, TIFF stacks, AVI folders) into the database."""
    from scopeline.pipeline.ingest import ingest as run_ingest

    with _clear_errors():
        results = run_ingest(path, subject, session, pattern=pattern, fps=fps)
    table = Table("subject", "session", "recording", "frames", "fps", "path", "status")
    for r in results:
        table.add_row(*_recording_cells(r.key), str(r.n_frames),
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
    fps: float = typer.Option(20.0, min=0.001, max=10000.0, help="Frame rate, Hz."),
    frames_per_file: int = typer.Option(1000, help="Frames per AVI file."),
    dropped: int = typer.Option(0, help="Dropped-frame gaps in the timestamps."),
    seed: int = typer.Option(0, help="Random seed."),
    layout: str = typer.Option("v4", help="v4 | v3 | tiff"),
    sessions: int = typer.Option(1, help="Several sessions of the same cells (V4 layout)."),
    fov_shift: float = typer.Option(10.0, help="Multi-session: largest field-of-view offset, pixels."),
    presence: float = typer.Option(0.85, help="Multi-session: probability a cell is present in a session."),
    max_rotation: float = typer.Option(0.0, "--max-rotation", help="Multi-session: largest rotation of a later "
                                       "session's field of view, degrees."),
    deformation: float = typer.Option(0.0, help="Multi-session: a later session's non-rigid field, pixels."),
    realistic: bool = typer.Option(False, "--realistic", help="Every artifact of real recordings on, at the "
                                   "measured strengths (line noise, GRIN lens, hot/dead pixels, LED warm-up, "
                                   "bleaching, diffuse sources, heterogeneous cells; --noise is then ignored)."),
    artifact: Optional[list[str]] = typer.Option(None, "--artifact", help="One artifact on (repeatable): "
                                                 "line_noise, lens, defective_pixels, warmup, bleaching, diffuse, "
                                                 "heterogeneous."),
):
    """Write a simulated recording with ground truth (Minian paper's generator; with --realistic or
    --artifact the artifacts of real recordings)."""
    from scopeline.core import simulate as sim

    if sessions > 1 and layout != "v4":
        _fail("--sessions > 1 writes Miniscope V4 folders; drop --layout")
    try:
        fields = dict(height=height, width=width, n_frames=frames, n_cells=cells, signal_level=signal_level,
                      motion_sd=motion, max_shift=max_shift, noise_sd=noise, fps=fps,
                      frames_per_file=frames_per_file, n_dropped=dropped, seed=seed)
        names = list(sim.ARTIFACTS) if realistic else list(artifact or [])
        if "line_noise" in names:
            fields.pop("noise_sd")  # the measured pixel noise: line noise takes part of it
        params = sim.SimulationParams.with_artifacts(names, **fields)
        t0 = time.monotonic()
        if sessions > 1:
            folders = sim.simulate_sessions(out, params, sessions, fov_shift=fov_shift, presence=presence,
                                            max_rotation=max_rotation, deformation=deformation, progress=True)
        else:
            folders = [sim.simulate(out, params, layout=layout, progress=True)]
    except (ValueError, RuntimeError) as err:
        _fail(str(err))
    for f in folders:
        console.print(f"recording: {f}")
    console.print(f"ground truth: {out}/**/{sim.GROUND_TRUTH}  [{time.monotonic() - t0:.1f} s]")


# ---------------------------------------------------------------------------- processing

paramset_app = typer.Typer(help="Parameter sets of the processing stages.", no_args_is_help=True)
app.add_typer(paramset_app, name="paramset")


@paramset_app.command("ls")
def paramset_ls():
    """List the parameter sets of every stage in the database, and the shipped presets."""
    from scopeline.pipeline import activate, stages

    with _clear_errors():
        activate()
    table = Table("stage", "paramset", "description", "hash")
    for stage in stages.with_params():
        t = stage.paramset
        for r in t.to_dicts(order_by=t.name_attr):
            table.add_row(stage.name, r[t.name_attr], r["description"], r["params_hash"][:10])
    console.print(table)
    for stage in stages.with_params():
        console.print(f"shipped {stage.name} presets: {', '.join(sorted(stage.presets))}")


@paramset_app.command("add")
def paramset_add(
    name: str = typer.Argument(..., help="Name of the new parameter set."),
    params_file: Path = typer.Argument(..., help="JSON file of parameters (missing fields take defaults)."),
    stage: str = typer.Option("motion", help="The stage: motion | initialization | cnmf (or any registered)."),
    description: str = typer.Option("", help="What it is for."),
):
    """Add a parameter set from a JSON file (validated against schemas/<stage>.schema.json)."""
    from scopeline.pipeline import activate, stages

    with _clear_errors():
        target = stages.get(stage)
        if target.paramset is None:
            _fail(f"stage {target.name!r} has no parameter sets")
    try:
        params = json.loads(params_file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        _fail(f"{params_file}: {err}")
    with _clear_errors():
        activate()
        t = target.paramset
        t.insert1({t.name_attr: name, "description": description, "params": params})
    console.print(f"added {target.name} paramset {name!r}")


def _recordings(subject, session, recording) -> list[dict]:
    from scopeline.pipeline import acquisition

    from scopeline.pipeline import keys

    restriction = keys.restriction(subject=subject, session=session, recording_id=recording)
    keys = (acquisition.RecordingInfo & restriction).keys()
    if not keys:
        _fail(f"no ingested recording matches {restriction or 'anything'}")
    return keys


@app.command("task")
@_stage_options(skip=("--paramset", "-p"))
def task(
    stage: str = typer.Argument(..., help="The last stage to queue: motion | initialization | cnmf (or any "
                                          "registered); the stages before it are queued too."),
    paramset: Optional[str] = typer.Option(None, "--paramset", "-p", help="That stage's parameter set (or a "
                                                                         "shipped preset)."),
    preset: str = typer.Option("default", "--preset", help="Pipeline preset naming the parameter sets not given."),
    subject: Optional[str] = typer.Option(None, "--subject", "-s"),
    session: Optional[str] = typer.Option(None, "--session", "-d"),
    recording: Optional[int] = typer.Option(None, "--recording", "-r"),
    paramsets: dict = None,
):
    """Queue a stage and the stages before it for the matching recordings (all when no filter is given).

    Work already queued or done is shared: a second CNMF parameter set reuses the motion correction
    and initialization of the first.
    """
    from scopeline.pipeline import activate, presets, stages

    with _clear_errors():
        target = stages.get(stage)
        if target.task is None:
            _fail(f"stage {target.name!r} has no tasks (recordings are queued by `scopeline ingest`)")
        if target.scope != "recording":
            _fail(f"stage {target.name!r} works on groups of results, not recordings (scopeline register-group)")
        names = {**presets.stage_paramsets(preset), **{k: v for k, v in paramsets.items() if v is not None}}
        if paramset is not None:
            names[target.name] = paramset
        activate()
        keys = _recordings(subject, session, recording)
        added = presets.queue(keys, names, target.name)
    console.print(f"{added} {target.name} task(s) added ({len(keys)} matching recording(s))")


_ORPHAN_TIMEOUT_H = 24.0  # hours (scopeline.pipeline.jobs.ORPHAN_TIMEOUT)


@app.command()
def populate(
    retry_errors: bool = typer.Option(False, "--retry-errors", help="Clear failed jobs first and run them again."),
    workers: Optional[int] = typer.Option(None, help="Blocks (and kernel threads) in parallel per job "
                                                     "(default: SCOPELINE_WORKERS or 2)."),
    scheduler: Optional[str] = typer.Option(None, help="threads | processes | address of a dask.distributed "
                                                       "scheduler (default: SCOPELINE_DASK_SCHEDULER or threads)."),
    stage: Optional[list[str]] = typer.Option(None, "--stage", help="Only this stage's work (repeatable; "
                                              "default every stage), e.g. motion on one machine and CNMF on another."),
    orphan_timeout: float = typer.Option(_ORPHAN_TIMEOUT_H, "--orphan-timeout", help="Hours after which a reserved "
                                         "job whose worker cannot be seen is run again (a job whose worker's "
                                         "database connection closed is run again at once)."),
):
    """Run all pending work of every stage (RecordingInfo, MotionCorrection, Initialization, CNMF, and
    any registered), with progress bars; reports failures.

    Safe on many machines at once: jobs are reserved in the database, so each runs once; jobs left
    reserved by a worker that is gone (killed, crashed) are run again.
    """
    from scopeline.pipeline import activate, stages

    with _clear_errors():
        activate()
        only = [stages.get(name).name for name in stage] if stage else None
        _reset_orphans(orphan_timeout * 3600)
        failed = _populate(None, retry_errors, workers, scheduler, only=only)
    if failed:
        console.print("fix the cause, then: scopeline populate --retry-errors")
        raise typer.Exit(1)


def _reset_orphans(orphan_timeout_s: float) -> int:
    """Make the jobs of workers that are gone pending again, saying which; return how many."""
    from scopeline.pipeline import jobs

    reset = jobs.reset_orphans(orphan_timeout_s)
    for row in reset.itertuples(index=False):
        console.print(f"[yellow]orphaned job reset[/] {row.table} {_key_text(row.key)}: reserved by {row.host} pid "
                      f"{row.pid} ({row.reason})", highlight=False)
    return len(reset)


def _key_text(key: dict) -> str:
    return "/".join(str(v) for v in key.values())


@app.command()
def worker(
    stage: Optional[list[str]] = typer.Option(None, "--stage", help="Only this stage's jobs (repeatable; default "
                                              "every stage)."),
    max_jobs: Optional[int] = typer.Option(None, "--max-jobs", min=1, help="Stop after this many jobs."),
    idle_exit: Optional[float] = typer.Option(None, "--idle-exit", min=0, help="Stop after this many seconds "
                                              "without work (default: wait for work for ever)."),
    run_for: Optional[float] = typer.Option(None, "--run-for", min=0, help="Start no job after this many seconds "
                                            "(a batch job: its wall time less the longest job)."),
    max_sleep: float = typer.Option(60.0, "--max-sleep", min=0.1, help="Longest wait between looks for work, s."),
    orphan_timeout: float = typer.Option(_ORPHAN_TIMEOUT_H, "--orphan-timeout", help="Hours after which a reserved "
                                         "job whose worker cannot be seen is run again."),
    workers: Optional[int] = typer.Option(None, help="Blocks in parallel per job (default: SCOPELINE_WORKERS or 2)."),
    scheduler: Optional[str] = typer.Option(None, help="threads | processes | address of a dask.distributed "
                                                       "scheduler (default: SCOPELINE_DASK_SCHEDULER or threads)."),
):
    """Run jobs of every stage, upstream first, one at a time, until stopped (SIGTERM / Ctrl-C: the job in
    hand is released for another worker) or idle: one line per job. The same on every machine."""
    from scopeline import database, executor
    from scopeline.pipeline import activate, check_current, stages
    from scopeline.pipeline import worker as loop

    with _clear_errors():
        activate()
        check_current()
        database.check_store()
        names = [stages.get(name).name for name in stage] if stage else None
        executor.configure(workers=workers, scheduler=scheduler)
        stamp = lambda line: print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}", flush=True)  # noqa: E731
        stats = loop.run(names, max_jobs=max_jobs, idle_exit=idle_exit, run_for=run_for, max_sleep=max_sleep,
                         orphan_timeout=orphan_timeout * 3600, log=stamp)
    if stats.failed:
        raise typer.Exit(1)


def _errors(table, restriction) -> list[dict]:
    """Failed jobs of a table, those matching any of the restriction's dicts (all when None)."""
    jobs = table.jobs.errors.to_dicts()
    if restriction is None:
        return jobs
    return [j for j in jobs if any(all(j[k] == v for k, v in r.items() if k in j) for r in restriction)]


def _populate(restriction, retry_errors: bool = False, workers: Optional[int] = None,
              scheduler: Optional[str] = None, only: Optional[list[str]] = None) -> int:
    """Populate every stage's table (those named in ``only``, if given), upstream first (restricted to
    any of the ``restriction`` dicts, if given), with progress bars; print each table's outcome and
    failures; return the number of failed jobs."""
    from scopeline import database, executor
    from scopeline.pipeline import check_current, stages

    check_current()  # tables of an earlier version would fail every insert: say so first
    database.check_store()  # and a store not mounted or read-only would fail every heavy job
    executor.configure(workers=workers, scheduler=scheduler)
    where = () if restriction is None else (restriction,)
    failed = 0
    for table in [s.computed for s in stages.STAGES if only is None or s.name in only]:
        name = table.__name__
        if retry_errors:
            for job in _errors(table, restriction):
                (table.jobs & {k: job[k] for k in table.primary_key}).delete_quick()
        t0 = time.monotonic()
        out = table.populate(*where, reserve_jobs=True, suppress_errors=True, display_progress=True)
        errors = _errors(table, restriction)
        console.print(f"{name}: {out['success_count']} done in {time.monotonic() - t0:.1f} s, "
                      f"{len(table())} in total, {len(errors)} failed")
        for job in errors:
            key = "/".join(str(job[k]) for k in table.primary_key)
            console.print(f"  [red]failed[/] {key}: {job['error_message']}", highlight=False)
        failed += len(errors)
    return failed


# -------------------------------------------------------------------------------------- ls


@app.command("ls")
def ls():
    """List subjects, sessions and recordings in the database."""
    from scopeline.pipeline import acquisition, activate

    with _clear_errors():
        activate()
    from scopeline.pipeline import keys

    rows = (acquisition.Recording * acquisition.RecordingInfo).to_dicts(order_by=list(keys.RECORDING))
    table = Table("subject", "session", "recording", "system", "frames", "size", "fps", "duration (s)", "path")
    for r in rows:
        table.add_row(*_recording_cells(r), r["acquisition_system"],
                      str(r["n_frames"]), f"{r['height']}x{r['width']}", f"{r['fps']:.2f}",
                      f"{r['duration']:.1f}", r["recording_path"])
    console.print(table)


# ------------------------------------------------------------------------------------- run

_METADATA = typer.Option(None, "--metadata", help="Lab metadata of the NWB file (YAML/JSON: experimenter, "
                         "institution, indicator, location, wavelengths, pixel size; schemas/nwb_metadata.schema.json"
                         "). Default: SCOPELINE_NWB_METADATA.")


def _process(recordings: list[dict], preset: str, out_dir: Path, nwb: bool = True, metadata=None,
             seconds: Optional[dict] = None) -> list[dict]:
    """Queue a pipeline preset for the recordings, populate, write figures and NWB files; return one
    summary row per recording (``error`` set when its chain failed). ``seconds`` (a dict) gains the wall
    time of each phase: ``pipeline`` (populate), ``figures``, ``NWB``."""
    from scopeline import report
    from scopeline.pipeline import presets

    seconds = {} if seconds is None else seconds
    presets.queue(recordings, presets.stage_paramsets(preset), "curation")  # the preset's rule set curates
    keys = [presets.result_key(r, preset, "cnmf") for r in recordings]
    with _timed(seconds, "pipeline"):
        _populate(keys, retry_errors=True)
    rows = []
    for key in keys:
        try:
            row = report.summary(key)
        except LookupError as err:
            rows.append({**key, "error": str(err)})
            continue
        out = out_dir / key["subject"] / key["session"]
        with _timed(seconds, "figures"):
            row["figures"] = [str(p) for p in report.write_figures(key, out).values()]
        if nwb:
            with _timed(seconds, "NWB"):
                row["nwb"] = str(_export_once(key, out / f"{report.result_name(key)}.nwb", metadata))
        rows.append(row)
    return rows


@contextlib.contextmanager
def _timed(seconds: dict, phase: str):
    """Add the wall time (s) of the ``with`` block to ``seconds[phase]``."""
    t = time.monotonic()
    try:
        yield
    finally:
        seconds[phase] = seconds.get(phase, 0.0) + time.monotonic() - t


def _export_once(key: dict, path: Path, metadata=None) -> Path:
    """The result's NWB file, written unless it exists (re-running is a no-op)."""
    from scopeline.pipeline.nwb import export_nwb

    if not path.exists():
        export_nwb(key, path, metadata=metadata)
    return path.resolve()


def _artifacts_text(r: dict) -> str:
    """The artifact handling of one result in a few words: frames flagged, line noise, field of view."""
    parts = [f"{r['corrupted_frames']} corrupted/striped", f"{r['dark_frames']} dark", f"{r['fallback_frames']} "
             "shifts from neighbours"]
    if r.get("line_noise_before") is not None:
        parts.append(f"line noise {r['line_noise_before']:.1f}->{r['line_noise_after']:.1f}")
    parts.append(f"field of view {100 * r['fov_fraction']:.0f}%")
    return ", ".join(parts)


def _print_summary(rows: list[dict], seconds: float, phases: Optional[dict] = None) -> None:
    table = Table("subject", "session", "rec", "frames", "fps", "units found", "accepted", "motion s", "init s",
                  "cnmf s", "artifacts")
    for r in rows:
        if "error" in r:
            table.add_row(*_recording_cells(r), "-", "-", "[red]failed[/]", "", "", "", "", "")
            continue
        table.add_row(*_recording_cells(r), str(r["n_frames"]), f"{r['fps']:.2f}", str(r["n_found"]),
                      str(r["n_units"]) if r["curation"] else "-", f"{r['motion_s']:.1f}",
                      f"{r['initialization_s']:.1f}", f"{r['cnmf_s']:.1f}", _artifacts_text(r))
    console.print(table)
    for r in rows:
        if "error" in r:
            continue
        for path in r["figures"] + ([r["nwb"]] if r.get("nwb") else []):
            console.print(f"  {path}", highlight=False, soft_wrap=True)
    split = ", ".join(f"{k} {v:.1f} s" for k, v in (phases or {}).items())
    console.print(f"done in {seconds:.1f} s" + (f" ({split})" if split else ""), soft_wrap=True)


@app.command()
def run(
    path: Path = typer.Argument(..., help="Recording folder or file (Miniscope V4/V3 folder, TIFF, AVI)."),
    subject: str = typer.Option(..., "--subject", "-s", help="Subject id."),
    session: str = typer.Option(..., "--session", "-d", help="Session id."),
    preset: str = typer.Option("default", "--preset",
                               help="Pipeline preset: default | minian | cnmfe | fast | registered (a movie "
                                    "registered before: edges excluded)."),
    out: Path = typer.Option(Path("scopeline-results"), "--out", "-o", help="Folder for figures and NWB files."),
    fps: Optional[float] = typer.Option(None, "--fps", min=0.001, max=10000.0, help="Frame rate (Hz) for TIFF/AVI "
                                        "without a clock."),
    no_nwb: bool = typer.Option(False, "--no-nwb", help="Skip the NWB export."),
    metadata: Optional[Path] = _METADATA,
):
    """Ingest one recording and run the whole pipeline on it: motion correction, initialization, CNMF
    and the automatic curation (rule set `default`) with the preset's parameter sets, figures, NWB file
    (accepted units), summary (units found and accepted).

    Re-running is a no-op for work already done (failed steps are retried).
    """
    from scopeline import database
    from scopeline.pipeline import activate, presets
    from scopeline.pipeline.ingest import ingest as run_ingest

    t0 = time.monotonic()
    with _clear_errors():
        presets.stage_paramsets(preset)  # unknown preset: fail before any work
        if not path.exists():
            _fail(f"{path}: no such file or folder")
        where = database.configure()
        activate()
        console.print(f"database: {where['backend']} at {where['host']}:{where['port']} ({where['source']})")
        seconds: dict = {}
        with _timed(seconds, "ingest"):
            ingested = run_ingest(path, subject, session, pattern=None, fps=fps)
        rows = _process([r.key for r in ingested], preset, out, nwb=not no_nwb, metadata=metadata,
                        seconds=seconds)
    _print_summary(rows, time.monotonic() - t0, seconds)
    if any("error" in r for r in rows):
        raise typer.Exit(1)


# options naming one result (report, export-nwb); the parameter sets come from _stage_options
_SUBJECT = typer.Option(..., "--subject", "-s")
_SESSION = typer.Option(..., "--session", "-d")
_RECORDING = typer.Option(0, "--recording", "-r")
_PRESET = typer.Option(None, "--preset", help="Pipeline preset (names every stage's parameter set).")


def _result_key(subject: str, session: str, recording: int, preset: Optional[str], paramsets: dict) -> dict:
    """A result's key from the CLI's options: a pipeline preset names every parameter set, and the
    single-stage options override it; stages left open match any parameter set."""
    from scopeline.pipeline import keys, presets

    key = keys.restriction(subject=subject, session=session, recording_id=recording)
    if preset:
        key = presets.result_key(key, preset, "cnmf")
    return {**key, **keys.restriction(**paramsets)}


@app.command()
@_stage_options()
def report(
    subject: str = _SUBJECT,
    session: str = _SESSION,
    recording: int = _RECORDING,
    preset: Optional[str] = _PRESET,
    paramsets: dict = None,
    out: Path = typer.Option(Path("scopeline-results"), "--out", "-o", help="Folder for the figures."),
):
    """Figures (motion shifts, summary images, footprint contours, traces with activity) and a summary
    of one result. Parameter sets not given are inferred when only one result matches."""
    from scopeline import report as rep
    from scopeline.pipeline import activate, keys

    with _clear_errors():
        key = _result_key(subject, session, recording, preset, paramsets)
        activate()
        try:
            paths = rep.write_figures(key, out / keys.file_part(subject) / keys.file_part(session))
            info = rep.summary(key) if "cnmf" in paths else None
        except LookupError as err:
            _fail(str(err))
    if info:
        console.print(f"{info['n_frames']} frames ({info['size']} pixels) at {info['fps']:.2f} Hz; "
                      f"{_artifacts_text(info)}; {info['n_seeds']} seeds, {info['n_found']} units found"
                      f"{', ' + str(info['n_units']) + ' accepted by ' + info['curation'] if info['curation'] else ''}; "
                      f"motion {info['motion_s']:.1f} s, initialization {info['initialization_s']:.1f} s, "
                      f"CNMF {info['cnmf_s']:.1f} s")
    for p in paths.values():
        console.print(f"wrote {p}", highlight=False, soft_wrap=True)


@app.command("export-nwb")
@_stage_options()
def export_nwb_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="NWB file to write."),
    subject: str = _SUBJECT,
    session: str = _SESSION,
    recording: int = _RECORDING,
    preset: Optional[str] = _PRESET,
    paramsets: dict = None,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing file."),
    embed_movie: bool = typer.Option(False, "--embed-movie", help="Also store the corrected movie in the file."),
    inspect: bool = typer.Option(True, "--inspect/--no-inspect", help="Check the file with nwbinspector (DANDI)."),
    metadata: Optional[Path] = _METADATA,
):
    """Export one CNMF result (with its recording, motion correction and provenance) as an NWB file.

    The file is written under a temporary name and renamed when complete: an interrupted export
    leaves nothing under --out.
    """
    from scopeline.pipeline import activate
    from scopeline.pipeline.nwb import export_nwb, inspect_nwb

    with _clear_errors():
        key = _result_key(subject, session, recording, preset, paramsets)
        activate()
        try:
            path = export_nwb(key, out, overwrite=overwrite, embed_movie=embed_movie, progress=embed_movie,
                              metadata=metadata)
        except (ValueError, FileExistsError, FileNotFoundError, IsADirectoryError) as err:
            _fail(str(err))
    console.print(f"wrote {path}", highlight=False)
    if inspect:
        messages = inspect_nwb(path)
        serious = [m for m in messages if m.importance.name in ("CRITICAL", "BEST_PRACTICE_VIOLATION")]
        for m in messages:
            console.print(f"  nwbinspector {m.importance.name}: {m.message} ({m.object_type} {m.location})",
                          highlight=False, soft_wrap=True)
        console.print(f"nwbinspector (DANDI): {len(messages)} message(s), {len(serious)} critical or violations")


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Progress of every stage across the database: done, pending, reserved (running) and failed jobs."""
    from scopeline import query
    from scopeline.pipeline import activate, jobs

    with _clear_errors():
        activate()
        frame = query.status()
    if as_json:
        print(frame.to_json(orient="records"))
        return
    table = Table("stage", "table", "done", "pending", "reserved", "error")
    for r in frame.to_dict("records"):
        table.add_row(r["stage"], r["table"], str(r["done"]), str(r["pending"]), str(r["reserved"]),
                      f"[red]{r['error']}[/]" if r["error"] else "0")
    console.print(table)
    if frame["reserved"].sum():
        _print_jobs(jobs.jobs(status="reserved"))
    if frame["error"].sum():
        console.print("see the failures: scopeline populate (prints them); retry: scopeline populate --retry-errors")


def _print_jobs(frame) -> None:
    """A table of jobs: stage, key, status, where and since when it runs, and why it failed."""
    table = Table("stage", "key", "status", "host", "pid", "age", "worker", "error")
    for r in frame.itertuples(index=False):
        age = "" if r.age_s is None or r.age_s != r.age_s else f"{r.age_s / 60:.1f} min"
        worker = {True: "running", False: "[red]gone[/]", None: "unknown"}[r.alive] if r.status == "reserved" else ""
        table.add_row(r.stage, _key_text(r.key), r.status, r.host, str(r.pid), age, worker,
                      (r.error_message or "")[:80])
    console.print(table)


@app.command("gc")
def gc_cmd(
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be removed; remove nothing."),
    force: bool = typer.Option(False, "--force", help="Collect even while jobs are held (only when their workers "
                                                      "are known to be gone)."),
):
    """Remove store objects no row refers to (left by a worker killed between writing and inserting, or by
    deleted rows), with DataJoint's garbage collector; refused while a worker holds a job."""
    from scopeline.pipeline import activate
    from scopeline.pipeline import store

    with _clear_errors():
        activate()
        out = store.collect(dry_run=dry_run, force=force)
    for path in out["orphaned"][:50]:
        console.print(f"  {'would remove' if dry_run else 'removed'} {path}", highlight=False)
    more = len(out["orphaned"]) - 50
    if more > 0:
        console.print(f"  ... and {more} more", highlight=False)
    verb = "would remove" if dry_run else "removed"
    console.print(f"store {', '.join(out['stores'])}: {len(out['orphaned'])} unreferenced object(s), "
                  f"{out['bytes'] / 1e6:.1f} MB; {verb} {len(out['orphaned']) if dry_run else out['deleted']}"
                  f"{', ' + str(out['errors']) + ' error(s)' if out['errors'] else ''}")
    if out["errors"]:
        raise typer.Exit(1)


@app.command("jobs")
def jobs_cmd(
    stage: Optional[str] = typer.Option(None, "--stage", help="Only this stage's jobs."),
    reset_orphans: bool = typer.Option(False, "--reset-orphans", help="Run again the jobs whose worker is gone."),
    orphan_timeout: float = typer.Option(_ORPHAN_TIMEOUT_H, "--orphan-timeout", help="Hours after which a reserved "
                                         "job whose worker cannot be seen counts as orphaned."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Jobs that are running (reserved, with the host, pid and age of their worker and whether it is still
    there), failed or ignored, across every stage."""
    from scopeline.pipeline import activate
    from scopeline.pipeline import jobs

    with _clear_errors():
        activate()
        if reset_orphans:
            n = _reset_orphans(orphan_timeout * 3600)
            console.print(f"{n} orphaned job(s) reset; scopeline populate runs them")
        frame = jobs.jobs(stage)
    if as_json:
        print(frame.assign(key=frame["key"].map(_key_text)).to_json(orient="records", date_format="iso"))
        return
    if frame.empty:
        console.print("no job is running, failed or ignored")
        return
    _print_jobs(frame)


@app.command()
@_stage_options()
def results(
    subject: Optional[str] = typer.Option(None, "--subject", "-s"),
    session: Optional[str] = typer.Option(None, "--session", "-d"),
    paramsets: dict = None,
    stage: str = typer.Option("cnmf", "--stage", help="Whose results: cnmf (default) or another stage."),
    units: bool = typer.Option(False, "--units", help="One row per unit instead of per result."),
    csv: Optional[Path] = typer.Option(None, "--csv", help="Also write the table as CSV."),
):
    """CNMF results (or their units) restricted by subject, session and parameter sets."""
    from scopeline import query

    with _clear_errors():
        args = dict(subject=subject, session=session, **paramsets)
        frame = query.units(**args) if units else query.results(stage=stage, **args)
    if csv:
        frame.to_csv(csv, index=False)
    _print_frame(frame, "no result matches" if not units else "no unit matches")


def _print_frame(frame, empty: str) -> None:
    if frame.empty:
        console.print(empty)
        return
    table = Table(*[str(c) for c in frame.columns])
    for r in frame.itertuples(index=False):
        table.add_row(*[f"{v:.2f}" if isinstance(v, float) else str(v) for v in r])
    console.print(table)


# ----------------------------------------------------------------------------------- curate


class _CurateGroup(typer.core.TyperGroup):
    """``scopeline curate KEY ...`` is ``scopeline curate apply KEY ...`` (KEY is not a subcommand)."""

    def resolve_command(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["apply", *args]
        return super().resolve_command(ctx, args)


curate_app = typer.Typer(
    cls=_CurateGroup, no_args_is_help=True,
    help="Curation of a CNMF result: rules, manual decisions (reject, accept, merge, label), versions. KEY is "
         "SUBJECT/SESSION(/RECORDING) (add --preset or --cnmf ... when several results match). "
         "`scopeline curate KEY ...` is `scopeline curate apply KEY ...`.")
app.add_typer(curate_app, name="curate")
_KEY = typer.Argument(..., metavar="KEY", help="SUBJECT/SESSION(/RECORDING) (recording 0 when not given).")
_CURATOR = typer.Option(None, "--curator", help="Who (default SCOPELINE_CURATOR or the login name).")


def _curation_key(key: str, preset: Optional[str], paramsets: dict) -> dict:
    """The one CNMF result KEY (and the parameter-set options) names."""
    from scopeline.pipeline import activate
    from scopeline.pipeline import curation as pl

    parts = key.strip("/").split("/")
    if len(parts) not in (2, 3) or not all(parts) or (len(parts) == 3 and not parts[2].isdigit()):
        _fail(f"KEY {key!r}: give SUBJECT/SESSION or SUBJECT/SESSION/RECORDING (a number)")
    restriction = _result_key(parts[0], parts[1], int(parts[2]) if len(parts) == 3 else 0, preset, paramsets)
    activate()
    return pl.result_key(restriction)


def _curation_line(ckey: dict, cid: int) -> str:
    from scopeline.pipeline import curation as pl
    from scopeline.pipeline import keys

    row = next(c for c in pl.curations(ckey) if c["curation_id"] == cid)
    made = f"rules {row['curation_paramset']}" if row["kind"] == "rules" else row["kind"]
    on = f" on {row['parent']}" if row["parent"] is not None else ""
    return (f"curation {cid} of {keys.recording_text(ckey)} ({made}{on}, {row['curator']}, {row['created']:%Y-%m-%d %H:%M}"
            f" UTC): {row['n_accepted']} of {row['n_units']} units accepted{'; in use' if row['in_use'] else ''}")


@curate_app.command("apply")
@_stage_options()
def curate_apply(
    key: str = _KEY,
    rules: Optional[str] = typer.Option(None, "--rules", help="A rule set (default | strict | none, or a stored "
                                                               "curation parameter set): a new automatic curation."),
    reject: Optional[str] = typer.Option(None, "--reject", help="Units to hide, e.g. 3,7."),
    accept: Optional[str] = typer.Option(None, "--accept", help="Units to show, e.g. 5,11."),
    merge: Optional[list[str]] = typer.Option(None, "--merge", help="Units that are one cell, e.g. 4+9 (repeatable)."),
    label: Optional[list[str]] = typer.Option(None, "--label", help="UNIT=LABEL(,LABEL), e.g. 12=dendrite "
                                              "(repeatable; labels: accept, reject, cell, dendrite, artifact, "
                                              "duplicate, neuropil, noise, unsure)."),
    note: str = typer.Option("", "--note", help="Why (kept with the curation)."),
    parent: Optional[int] = typer.Option(None, "--parent", help="Curation to edit (default the one in use)."),
    curator: Optional[str] = _CURATOR,
    no_use: bool = typer.Option(False, "--no-use", help="Keep the curation in use as it is."),
    preset: Optional[str] = _PRESET,
    paramsets: dict = None,
):
    """A new curation of one result: a rule set (--rules), or manual changes on top of the curation in use
    (--reject / --accept / --merge / --label, with --note). Nothing is overwritten: each call adds a version."""
    from scopeline.core import curation as core_curation
    from scopeline.pipeline import curation as pl

    with _clear_errors():
        change = core_curation.make_edit(
            reject=core_curation.parse_ids(reject or ""), accept=core_curation.parse_ids(accept or ""),
            merges=core_curation.parse_merges(merge or []), labels=core_curation.parse_labels(label or []), note=note)
        if rules is None and change.is_empty():
            _fail("nothing to do: give --rules NAME, or --reject / --accept / --merge / --label")
        if rules is not None and (not change.is_empty() or parent is not None):
            _fail("--rules makes a first, automatic curation; give manual changes (and --parent) in a second call "
                  "(they go on top of it)")
        ckey = _curation_key(key, preset, paramsets)
        if rules is not None:
            cid = pl.apply_rules(ckey, rules, use_it=not no_use)
        else:
            cid = pl.edit(ckey, change, parent=parent, curator=curator, use_it=not no_use, progress=True)
        console.print(_curation_line(ckey, cid), highlight=False)


@curate_app.command("ls")
def curate_ls(key: Optional[str] = typer.Argument(None, help="SUBJECT(/SESSION(/RECORDING)) (default: every result).")):
    """List curations: id, parent, kind, curator, time, units accepted, which is in use."""
    from scopeline.pipeline import activate
    from scopeline.pipeline import curation as pl
    from scopeline.pipeline import keys

    parts = key.strip("/").split("/") if key else []
    if len(parts) > 3 or (len(parts) == 3 and not parts[2].isdigit()):
        _fail(f"KEY {key!r}: give SUBJECT, SUBJECT/SESSION or SUBJECT/SESSION/RECORDING (a number)")
    with _clear_errors():
        activate()
        rows = pl.curations(dict(zip(keys.RECORDING, [*parts[:2], *map(int, parts[2:3])])))
    if not rows:
        console.print("no curation")
        return
    table = Table("subject", "session", "rec", "cnmf", "id", "parent", "kind", "curator", "created (UTC)",
                  "accepted", "in use", "note")
    for r in rows:
        table.add_row(*_recording_cells(r), str(r["cnmf_paramset"]), str(r["curation_id"]),
                      "" if r["parent"] is None else str(r["parent"]),
                      r["kind"] + (f" {r['curation_paramset']}" if r["curation_paramset"] else ""), r["curator"],
                      f"{r['created']:%Y-%m-%d %H:%M}", f"{r['n_accepted']}/{r['n_units']}", "yes" if r["in_use"] else "",
                      r["note"][:40])
    console.print(table)


@curate_app.command("show")
@_stage_options()
def curate_show(
    key: str = _KEY,
    curation: Optional[int] = typer.Option(None, "--id", help="Curation id (default the one in use)."),
    rejected: bool = typer.Option(False, "--rejected", help="Only the units it hides."),
    preset: Optional[str] = _PRESET,
    paramsets: dict = None,
):
    """Every unit's decision in one curation: accepted, labels, reason, merged into."""
    from scopeline.pipeline import curation as pl

    with _clear_errors():
        ckey = _curation_key(key, preset, paramsets)
        st = pl.state(ckey, curation)
        cid = curation if curation is not None else pl.in_use(ckey)
    console.print(_curation_line(ckey, cid), highlight=False)
    table = Table("unit", "accepted", "labels", "reason")
    for u, s in st.items():
        if not (rejected and s.accepted):
            table.add_row(str(u), "yes" if s.accepted else "[red]no[/]", ",".join(s.labels), s.reason)
    console.print(table)


@curate_app.command("use")
@_stage_options()
def curate_use(key: str = _KEY, curation: int = typer.Argument(..., help="Curation id."),
               curator: Optional[str] = _CURATOR, preset: Optional[str] = _PRESET, paramsets: dict = None):
    """Make a curation the one every reader of its result follows (results, NWB, figures)."""
    from scopeline.pipeline import curation as pl

    with _clear_errors():
        ckey = pl.use(_curation_key(key, preset, paramsets), curation, curator)
        console.print(_curation_line(ckey, curation), highlight=False)


@curate_app.command("delete")
@_stage_options()
def curate_delete(key: str = _KEY, curation: int = typer.Argument(..., help="Curation id."),
                  preset: Optional[str] = _PRESET, paramsets: dict = None):
    """Delete one curation (its rows and merged units' objects; CNMF and other curations stay). Refused
    while another curation builds on it."""
    from scopeline.pipeline import curation as pl

    with _clear_errors():
        out = pl.delete(_curation_key(key, preset, paramsets), curation)
    left = f"curation {out['in_use']} in use" if out["in_use"] is not None else "no curation in use (every unit shown)"
    console.print(f"deleted curation {out['deleted']} ({out['objects_removed']} stored object(s) removed); {left}")


@curate_app.command("export")
@_stage_options()
def curate_export(key: str = _KEY, out: Path = typer.Argument(..., help="JSON file to write."),
                  curation: Optional[int] = typer.Option(None, "--id", help="Curation id (default the one in use)."),
                  preset: Optional[str] = _PRESET, paramsets: dict = None):
    """Write a curation as SpikeInterface curation JSON (format_version 2)."""
    from scopeline.pipeline import curation as pl

    with _clear_errors():
        path = pl.export_json(_curation_key(key, preset, paramsets), out, curation)
    console.print(f"wrote {path}", highlight=False)


@curate_app.command("import")
@_stage_options()
def curate_import(key: str = _KEY, path: Path = typer.Argument(..., help="SpikeInterface curation JSON."),
                  note: str = typer.Option("", "--note"), curator: Optional[str] = _CURATOR,
                  no_use: bool = typer.Option(False, "--no-use"), preset: Optional[str] = _PRESET,
                  paramsets: dict = None):
    """A new curation from a SpikeInterface curation JSON (format_version 1 or 2): removals, labels, merges."""
    from scopeline.pipeline import curation as pl

    with _clear_errors():
        ckey = _curation_key(key, preset, paramsets)
        cid = pl.import_json(ckey, path, curator=curator, note=note, use_it=not no_use, progress=True)
        console.print(_curation_line(ckey, cid), highlight=False)


# ---------------------------------------------------------------------------------- register


@app.command("view")
@_stage_options()
def view_cmd(
    key: Optional[str] = typer.Argument(None, metavar="[KEY]", help="SUBJECT/SESSION(/RECORDING): open this result "
                                        "first (default the first result)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on. The default, 127.0.0.1, is this "
                             "machine only. Another (0.0.0.0: every interface) lets anyone who can reach the port "
                             "and has the token read every result and save curations, over plain HTTP (the token "
                             "can be read on the network): prefer an SSH tunnel (ssh -L PORT:127.0.0.1:PORT)."),
    port: int = typer.Option(0, "--port", min=0, max=65535, help="TCP port (0: a free one)."),
    token: Optional[str] = typer.Option(None, "--token", envvar="SCOPELINE_VIEW_TOKEN",
                                        help="Access token (default a new random one each start)."),
    curator: Optional[str] = _CURATOR,
    preset: Optional[str] = _PRESET,
    paramsets: dict = None,
):
    """A web view of the results in your browser: summary images with unit contours, motion, provenance;
    a unit's footprint, traces (C, S, dF/F), metrics and movie clip; accept / reject / label / merge by
    buttons or keys, saved as a new manual curation on top of the one in use. Prints the URL (with its
    access token) to open; Ctrl-C stops it."""
    from scopeline import view
    from scopeline.pipeline import activate
    from scopeline.view import data

    with _clear_errors():
        activate()
        first = data.result_id(_curation_key(key, preset, paramsets)) if key else None
        if token is not None and len(token) < 16:
            _fail("--token: give at least 16 characters (or none for a random one)", 2)
        token = token or view.new_token()
        port = port or view.free_port(host)
    console.print(f"scopeline view: open [bold]{view.url(host, port, token, first)}[/]", highlight=False, soft_wrap=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(f"[bold yellow]warning:[/] listening on {host}: anyone who can reach port {port} and has "
                          "the token can read results and save curations (plain HTTP)", highlight=False)
    console.print("Ctrl-C stops it.")
    view.serve(host, port, token, curator)


@app.command("register")
def register_cmd(
    files: list[Path] = typer.Argument(..., help="Footprint files, one per session, in order (.mat: CellReg's "
                                                 "allFiltersMat; .npy / .npz: cells x height x width)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for registration.png, cells.csv and "
                                                                 "registration.json."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (n_cells, cells_in_n_sessions, "
                                                       "alignment, error_rates, ...)."),
    key: Optional[str] = typer.Option(None, "--key", help="The variable holding the footprints in each file."),
    max_distance: Optional[float] = typer.Option(None, "--max-distance", help="Candidate pairs, pixels (default 8)."),
    reference: int = typer.Option(1, "--reference", help="Reference session, 1-based (default the first)."),
    pixel_size: Optional[list[float]] = typer.Option(None, "--pixel-size", help="Each file's pixel size (um; "
                                                     "repeat once per file, in order): sessions are resampled to "
                                                     "the reference's. Default: all the same."),
):
    """Register cells across sessions from footprint files (no database): alignment, the same-cell model
    (CellReg's method), and cells with an id across sessions."""
    from scopeline.core import registration as reg

    with _clear_errors():
        fields = {"reference": reference - 1, **({"max_distance": max_distance} if max_distance is not None else {})}
        try:
            params = reg.RegistrationParams(**fields)
        except ValueError as err:
            _fail(f"registration parameters: {err}")
        if pixel_size and len(pixel_size) != len(files):
            _fail(f"--pixel-size given {len(pixel_size)} times for {len(files)} files: give one per file, in order")
        if pixel_size and (min(pixel_size) <= 0 or not 1 <= reference <= len(files)):
            _fail("--pixel-size: sizes must be positive" if min(pixel_size) <= 0 else
                  f"--reference {reference}: {len(files)} files")
        sessions = [reg.read_footprints(f, key) for f in files]
        if pixel_size:
            sessions = [reg.rescale(A, size / pixel_size[reference - 1]) for A, size in zip(sessions, pixel_size)]
        result = reg.register(sessions, params)
        summary = {"sessions": [str(f) for f in files], **result.summary()}
        if out is not None:
            _write_registration(result, summary, out, [f.stem for f in files])
    if as_json:
        print(json.dumps(summary))
        return
    table = Table("session", "file", "units", "dy", "dx", "rotation (deg)", "quality")
    for s, (f, a) in enumerate(zip(files, summary["alignment"])):
        table.add_row(str(s + 1), f.name, str(summary["n_units"][s]), f"{a['dy']:.2f}", f"{a['dx']:.2f}",
                      f"{a['rotation']:.2f}", f"{a['quality']:.3f}")
    console.print(table)
    counts = ", ".join(f"{k + 1}: {v}" for k, v in enumerate(summary["cells_in_n_sessions"]))
    console.print(f"{summary['n_cells']} distinct cells; found in 1..{len(files)} sessions: {counts}; "
                  f"model's error rates: false positive {summary['error_rates']['false_positive']:.3f}, "
                  f"false negative {summary['error_rates']['false_negative']:.3f}")
    if out is not None:
        console.print(f"wrote {out}/registration.png, cells.csv, registration.json", highlight=False)


@app.command("register-group")
@_stage_options()
def register_group(
    name: str = typer.Argument(..., help="The group's name (new)."),
    subject: str = typer.Option(..., "--subject", "-s"),
    session: Optional[list[str]] = typer.Option(None, "--session", "-d", help="Sessions in order (repeatable; "
                                                "default every session of the subject with a result)."),
    recording: int = _RECORDING,
    preset: Optional[str] = typer.Option("default", "--preset", help="Pipeline preset naming each result's "
                                                                      "parameter sets."),
    registration: str = typer.Option("default", "--registration", help="Registration parameter set to queue."),
    description: str = typer.Option("", "--description"),
    paramsets: dict = None,
):
    """A registration group of one subject's results (the units of each: its curation in use) and its task;
    `scopeline populate` registers it, `scopeline results --stage registration` lists it."""
    from scopeline.pipeline import activate, cnmf, keys, presets, stages
    from scopeline.pipeline import registration as pl

    with _clear_errors():
        activate()
        if session:
            results = [_result_key(subject, d, recording, preset, paramsets) for d in session]
        else:  # every session of the subject with a result of these parameter sets
            names = presets.stage_paramsets(preset) if preset else {}
            base = {**keys.restriction(subject=subject, recording_id=recording),
                    **keys.restriction(**{s.name: names.get(s.name) for s in stages.chain("cnmf") if s.key_attr}),
                    **keys.restriction(**paramsets)}
            results = [dict(k) for k in (cnmf.CNMF & base).keys(order_by=list(keys.fields("cnmf")))]
        group = pl.create_group(name, results, description, registration)
    console.print(f"group {group['group_name']!r}: {len(results)} results of subject {subject}; registration "
                  f"{registration!r} queued (scopeline populate)")


def _write_registration(result, summary: dict, out: Path, names: list) -> None:
    """The figure, the cell x session table and the summary, written into ``out`` (each file whole)."""
    import csv

    from scopeline.figures import registration_figure

    out.mkdir(parents=True, exist_ok=True)
    registration_figure(result, out / "registration.png", names)
    tmp = out / ".cells.csv.partial"
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["cell", "score", *names])
        for c, (row, score) in enumerate(zip(result.cells, result.scores)):
            writer.writerow([c, f"{score:.4f}", *[("" if u < 0 else int(u)) for u in row]])
    os.replace(tmp, out / "cells.csv")
    tmp = out / ".registration.json.partial"
    tmp.write_text(json.dumps(summary, indent=1))
    os.replace(tmp, out / "registration.json")


# ------------------------------------------------------------------------------------ demo


@app.command()
def demo(
    frames: int = typer.Option(2000, help="Frames of the simulated session."),
    shared_data: Optional[Path] = typer.Option(None, help="Folder of the real data (default ../shared/data)."),
    out: Path = typer.Option(None, "--out", "-o", help="Folder for figures and NWB files (default: "
                                                       "scopeline's home / demo)."),
):
    """Local database (unless one is configured), the real CA1 recording and a simulated V4 session:
    the same steps as `run` on each, then a query of the results."""
    from scopeline import database, query, settings
    from scopeline.core import simulate as sim
    from scopeline.pipeline import activate
    from scopeline.pipeline.ingest import ingest as run_ingest

    t0 = time.monotonic()
    out = out or settings.home() / "demo"
    with _clear_errors():
        where = database.configure()
        activate()
    console.print(f"database: {where['backend']} at {where['host']}:{where['port']} ({where['source']})")
    data = shared_data or _find_shared_data()
    real = data / "ca1_miniscope_v3" / "ca1_500x240x376_uint8.tif" if data else None
    recordings = []
    with _clear_errors():
        if real is not None and real.exists():
            recordings += [r.key for r in run_ingest(real, "ca1", "minian_demo", pattern=None, fps=15.0)]
        else:
            console.print("real recording not found (../shared/data/ca1_miniscope_v3): only the simulated session")
        sim_dir = settings.home() / "demo" / f"sim_v4_{frames}"
        if not (sim_dir / sim.GROUND_TRUTH).exists():
            import shutil

            shutil.rmtree(sim_dir, ignore_errors=True)
            sim.simulate(sim_dir, sim.SimulationParams(height=256, width=256, n_frames=frames, n_cells=60,
                                                       seed=0), progress=True)
        simulated = [r.key for r in run_ingest(sim_dir, "sim01", "2026_01_05", pattern=None, fps=None)]
        # the default preset also for the real recording: its field of view keeps units off the border
        # its earlier registration left (no need for the `registered` preset's margin)
        rows = (_process(recordings, "default", out) if recordings else []) + _process(simulated, "default", out)
    _print_summary(rows, time.monotonic() - t0)
    console.print("query: scopeline.query.results() / `scopeline results`")
    _print_frame(query.results(), "no result")
    ls()
    if any("error" in r for r in rows):
        raise typer.Exit(1)


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
