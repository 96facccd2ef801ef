"""Shared fixtures: database backends (MariaDB and PostgreSQL), simulated recordings, real data.

Database tests take the ``db`` fixture and run once per backend. Servers come from
``SCOPELINE_TEST_MYSQL`` / ``SCOPELINE_TEST_POSTGRES`` (``host:port:user:password``, set by
``.ci/run``), or are started here in a temporary folder (see ``tests/servers.py``). A backend whose
server is unavailable is skipped with the reason, or fails the run when ``SCOPELINE_REQUIRE_DB=1``.
Each test run uses its own schema prefix and drops its schemas at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import servers  # noqa: E402

from scopeline._dj import dj  # noqa: E402
from scopeline.core import simulate as sim  # noqa: E402

# tests never touch the user's own scopeline home (private server, object store)
os.environ["SCOPELINE_HOME"] = tempfile.mkdtemp(prefix="scopeline-test-home-")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (ROOT / ".." / "shared" / "data").resolve()
BACKENDS = ["mysql", "postgresql"]
_ENV = {"mysql": "SCOPELINE_TEST_MYSQL", "postgresql": "SCOPELINE_TEST_POSTGRES"}


def process_simulated(path: Path, fps=None):
    """A simulated recording under ``path`` through motion correction (template of 100 frames; the movie
    written to ``path / "corrected.zarr"``), initialization and CNMF (diameter 8), without a database.
    Returns (motion result, initialization, CNMF result)."""
    import warnings

    import zarr

    from scopeline.core import cnmf, initialize, io, motion
    from scopeline.pipeline._objects import create_zarr

    meta = io.read_metadata(io.discover(path)[0], fps=fps) if fps else io.read_metadata(io.discover(path)[0])
    out = str(path / "corrected.zarr")
    p = motion.MotionParams(registration=motion.RegistrationParams(template_frames=100))
    res = motion.correct_motion(meta.movie(chunk_frames=100), p, lambda s, c, d: create_zarr(out, s, c, d))
    movie = zarr.open_array(out, mode="r")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        init = initialize.initialize(movie, meta.fps, valid=initialize.valid_region(movie.shape[1:], res.shifts,
                                                                                   fov=res.fov))
        units = cnmf.cnmf(movie, init.A, init.C, init.b, init.f, diameter=8, fps=meta.fps, fov=res.fov)
    return res, init, units


def shared_data(*parts: str) -> Path:
    """Path under ../shared/data, skipping the test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (see ../shared/data/PROVENANCE.md)")
    return path


def _unavailable(reason: str):
    if os.environ.get("SCOPELINE_REQUIRE_DB") == "1":
        pytest.fail(f"SCOPELINE_REQUIRE_DB=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def server_urls(tmp_path_factory):
    """Lazily started servers: backend -> 'host:port:user:password' (or an Exception)."""
    started: dict = {}
    cache: dict = {}

    def get(backend: str) -> str:
        if backend in cache:
            if isinstance(cache[backend], Exception):
                _unavailable(f"no {backend} server: {cache[backend]}")
            return cache[backend]
        url = os.environ.get(_ENV[backend])
        if not url:
            # not under pytest's 0700 tmp root: PostgreSQL runs as its own user when we are root
            folder = Path(tempfile.mkdtemp(prefix=f"scopeline-test-{backend}-"))
            try:
                if backend == "mysql":
                    home = os.environ.get("SCOPELINE_HOME")
                    url = servers.start_mariadb(folder)
                    if home is None:
                        os.environ.pop("SCOPELINE_HOME", None)
                    else:
                        os.environ["SCOPELINE_HOME"] = home
                else:
                    url = servers.start_postgres(folder)
                started[backend] = folder
            except Exception as err:  # noqa: BLE001 - reported as skip/fail
                cache[backend] = err
                _unavailable(f"no {backend} server: set {_ENV[backend]} or install it ({err})")
        cache[backend] = url
        return url

    yield get
    for backend, folder in started.items():
        (servers.stop_mariadb if backend == "mysql" else servers.stop_postgres)(folder)
        shutil.rmtree(folder, ignore_errors=True)


def _configure(backend: str, url: str, store: Path) -> dj.Connection:
    host, port, user, password = url.split(":", 3)
    dj.config["database.backend"] = backend
    dj.config["database.host"] = host
    dj.config["database.port"] = int(port)
    dj.config["database.user"] = user
    dj.config["database.password"] = password
    dj.config["database.use_tls"] = False
    dj.config["safemode"] = False
    dj.config.stores = {"default": "test", "test": {"protocol": "file", "location": str(store)}}
    return dj.conn(reset=True)


def db_env(backend: str, url: str, prefix: str, store: Path | None = None) -> dict:
    """Environment for a scopeline subprocess that must use the test server and schemas (and the
    test's object store, when given, so that the test reads back what the subprocess stored; else a
    scratch one: a lab server needs a store)."""
    host, port, user, password = url.split(":", 3)
    env = {**os.environ, "DJ_BACKEND": backend, "DJ_HOST": host, "DJ_PORT": port, "DJ_USER": user,
           "DJ_PASS": password, "DJ_USE_TLS": "false", "SCOPELINE_SCHEMA_PREFIX": prefix}
    store = store if store is not None else Path(tempfile.gettempdir()) / "scopeline-test-store"
    store.mkdir(parents=True, exist_ok=True)
    env["DJ_STORES"] = json.dumps({"default": "test", "test": {"protocol": "file", "location": str(store)}})
    return env


@pytest.fixture(scope="session", params=BACKENDS)
def pipeline_db(request, server_urls, tmp_path_factory):
    """The scopeline pipeline activated on one backend under a unique schema prefix."""
    import scopeline.pipeline as pl

    backend = request.param
    url = server_urls(backend)
    store = tmp_path_factory.mktemp(f"store_{backend}")
    conn = _configure(backend, url, store)
    prefix = f"sltest_{uuid.uuid4().hex[:8]}_"
    pl.deactivate()
    pl.activate(prefix, connection=conn)
    yield {"backend": backend, "url": url, "prefix": prefix, "connection": conn, "store": store}
    pl.activate(prefix, connection=conn)
    pl.drop(force=True)


def one_backend(db, backend: str) -> None:
    """Run a slow end-to-end test on one backend only (the suite's time): for tests whose server-side part
    (reservations, declarations, inserts) other tests already run on both."""
    if db["backend"] != backend:
        pytest.skip(f"runs on {backend} only (the suite's time; what differs by server is tested on both)")


@pytest.fixture
def db(pipeline_db):
    """One backend's pipeline, emptied after the test."""
    import scopeline.pipeline as pl
    from scopeline.pipeline import stages
    from scopeline.pipeline.subject import Subject

    pl.activate(pipeline_db["prefix"], connection=pipeline_db["connection"])
    yield pipeline_db
    Subject.delete(prompt=False)
    for stage in stages.with_params():
        stage.paramset.delete(prompt=False)
    for stage in stages.STAGES:
        stage.computed.jobs.delete_quick()


@pytest.fixture(scope="session")
def sim_cells(tmp_path_factory) -> Path:
    """A small simulated V4 recording with clear cells (96 x 96, 400 frames in 2 files, 8 cells, signal
    1.4) for the end-to-end chain tests; read only."""
    out = tmp_path_factory.mktemp("sim_cells")
    sim.simulate(out, sim.SimulationParams(height=96, width=96, n_frames=400, n_cells=8, frames_per_file=200,
                                           signal_level=1.4, seed=21))
    return out


@pytest.fixture(scope="session")
def sim_v4(tmp_path_factory) -> Path:
    """A small simulated V4 recording split into 5 files of 40 frames, with 2 dropped-frame gaps."""
    out = tmp_path_factory.mktemp("sim_v4")
    params = sim.SimulationParams(height=64, width=80, n_frames=200, n_cells=8, frames_per_file=40,
                                  n_dropped=2, seed=3, chunk_frames=64)
    sim.simulate(out, params)
    return out
