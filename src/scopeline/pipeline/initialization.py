"""Initialization: parameter sets, tasks, and the Initialization table (seeds, A_init, C_init, b, f).

All computation is :func:`scopeline.core.initialize.initialize` on the stored corrected movie; this
module fetches, calls it, and inserts.
"""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np

import scopeline
from scopeline._dj import dj
from scopeline.core import initialize as core_init
from scopeline.pipeline import acquisition, keys, motion
from scopeline.pipeline._objects import open_zarr, store_writes
from scopeline.pipeline._paramsets import parse_params
from scopeline.pipeline._stage import Stage, stage_tables
from scopeline.pipeline._util import FetchFingerprint, progress_bar

schema = dj.Schema()

__all__ = ["InitParamSet", "InitTask", "Initialization"]


InitParamSet, InitTask = stage_tables(
    globals(), prefix="Init", attr="init_paramset", model=core_init.InitParams, presets=core_init.PRESETS,
    label="initialization", upstream="motion.MotionTask", upstream_text="a motion-correction task")


@schema
class Initialization(FetchFingerprint, dj.Computed):
    """Seeds, initial footprints and traces, and background of one corrected movie.

    Attributes
    ----------
    n_seeds, n_units : int
        Candidate seeds, and units kept (the rows of A_init / C_init).
    noise : float
        Movie noise standard deviation (median over pixels), movie units.
    footprints : NpyRef
        float32 (n_units, size_y, size_x): A_init as patches (see :class:`scopeline.core.footprints.Footprints`).
    offsets : numpy.ndarray
        int32 (n_units, 2): (y, x) of each patch in the frame, pixels.
    c_init : NpyRef
        float32 (n_units, n_frames): C_init, movie units.
    b : numpy.ndarray
        float32 (height, width): background image.
    f : numpy.ndarray
        float32 (n_frames,): background trace.
    """

    definition = """
    # Initialization of CNMF: seeds, A_init, C_init, background
    -> motion.MotionCorrection
    -> InitTask
    ---
    n_seeds                    : int32
    n_units                    : int32
    noise                      : float32        # movie units
    footprints                 : <npy@>         # float32 (n_units, size_y, size_x) patches of A_init
    offsets                    : <blob>         # int32 (n_units, 2) patch corners (y, x), pixels
    c_init                     : <npy@>         # float32 (n_units, n_frames)
    b                          : <blob>         # float32 (height, width)
    f                          : <blob>         # float32 (n_frames,)
    seconds                    : json           # wall time per step, s
    compute_time               : float64        # s
    scopeline_version          : varchar(16)
    """

    class Seed(dj.Part):
        """Every candidate seed, and which refinement removed it ('' = kept; 'stripe': it follows its row,
        line noise; 'shape': its footprint is not cell-shaped)."""

        definition = """
        -> master
        seed_id                    : int32
        ---
        seed_y                     : int16          # pixels
        seed_x                     : int16          # pixels
        pnr                        : float32        # peak-to-noise ratio of the seed trace
        ks_p                       : float32        # KS normality p-value (0 when the test is off)
        removed_by                 : varchar(16)    # '', pnr, ks, stripe, gmm, merge, footprint or shape
        unit_index = null          : int32          # row of A_init / C_init when kept
        """

    show_progress = True

    def make_fetch(self, key):
        """The corrected movie's reference, its frame rate, shifts and field of view, and the parameters."""
        movie, shifts = (motion.MotionCorrection & key).fetch1("movie", "shifts")
        fov = (motion.MotionCorrection & key).field_of_view()
        params = (InitParamSet & key).fetch1("params")
        return movie, corrected_fps(key), shifts, fov, params

    def make_compute(self, key, movie_ref, fps, shifts, fov, params):
        """Run core.initialize.initialize on the stored movie."""
        t0 = time.perf_counter()
        p = parse_params(core_init.InitParams, params, "initialization", key[InitParamSet.name_attr])
        movie = open_zarr(movie_ref)
        bar = progress_bar(3 * movie.shape[0], f"init {keys.recording_text(key)}",
                   self.show_progress)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an empty result is stored, not warned about twice
            res = core_init.initialize(movie, fps, p, progress=bar.update,
                                       valid=core_init.valid_region(movie.shape[1:], np.asarray(shifts), fov=fov))
        bar.close()
        unit_of = {seed: unit for unit, seed in enumerate(i for i, r in enumerate(res.removed_by) if r == "")}
        row = dict(key, n_seeds=len(res.seeds), n_units=len(res.A), noise=res.noise, footprints=res.A.patches,
                   offsets=res.A.offsets, c_init=res.C, b=res.b, f=res.f,
                   seconds={k: round(v, 3) for k, v in res.seconds.items()},
                   compute_time=time.perf_counter() - t0, scopeline_version=scopeline.__version__)
        seeds = [dict(key, seed_id=i, seed_y=int(y), seed_x=int(x), pnr=float(res.pnr[i]), ks_p=float(res.ks_p[i]),
                      removed_by=res.removed_by[i], unit_index=unit_of.get(i))
                 for i, (y, x) in enumerate(res.seeds)]
        return row, seeds

    def make_insert(self, key, row, seeds):
        with store_writes(self, key):  # the <npy@> arrays go to the store
            self.insert1(row)
            if seeds:
                self.Seed.insert(seeds)


def corrected_fps(key) -> float:
    """Frame rate of a motion correction's corrected movie, Hz: the recording's, over the motion
    parameter set's temporal downsampling."""
    fps = float((acquisition.RecordingInfo & key).fetch1("fps"))
    motion_params = (motion.MotionParamSet & key).fetch1("params")
    return fps / float(motion_params.get("preprocess", {}).get("temporal_downsample", 1))


STAGE = Stage(
    "initialization", module=sys.modules[__name__], computed=Initialization, paramset=InitParamSet,
    task=InitTask, upstream="motion", aliases=("--init",),
    description="Initialization parameter set of scopeline (seeds, refinement, initial footprints); pixels of the "
                "motion-corrected movie, Hz of its frame rate.")
