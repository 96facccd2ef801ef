"""CNMF: parameter sets, tasks, and the CNMF table with one Unit row per cell.

All computation is :func:`scopeline.core.cnmf.cnmf`, started from a stored Initialization on the
stored corrected movie: changing CNMF parameters reuses both, never recomputes them.
"""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np

import scopeline
from scopeline._dj import dj
from scopeline.core import cnmf as core_cnmf
from scopeline.core import initialize as core_init
from scopeline.core.footprints import Footprints
from scopeline.pipeline import initialization, keys, motion
from scopeline.pipeline._objects import open_zarr, store_writes
from scopeline.pipeline._paramsets import parse_params
from scopeline.pipeline._stage import Stage, stage_tables
from scopeline.pipeline._util import FetchFingerprint, load_npy, load_npy_writable, progress_bar

schema = dj.Schema()

__all__ = ["CNMFParamSet", "CNMFTask", "CNMF"]


CNMFParamSet, CNMFTask = stage_tables(
    globals(), prefix="CNMF", attr="cnmf_paramset", model=core_cnmf.CNMFParams, presets=core_cnmf.PRESETS,
    label="CNMF", upstream="initialization.InitTask", upstream_text="an initialization task")


#: the attributes of a unit (``CNMF.Unit``, and units a curation makes by merging), after its key
UNIT_ATTRIBUTES = """
footprint                  : <blob>         # float32 (size_y, size_x) patch, peak 1
patch_y                    : int16          # patch's top-left corner, pixels
patch_x                    : int16
centroid_y                 : float32        # pixels
centroid_x                 : float32        # pixels
area                       : int32          # pixels
trace                      : <npy@>         # C: float32 (n_frames,) calcium, movie units
activity                   : <npy@>         # S: float32 (n_frames,) deconvolved activity
b0                         : float32        # baseline, movie units
c0                         : float32        # initial concentration, movie units
g                          : <blob>         # float32 (p,) AR coefficients
sn                         : float32        # trace noise standard deviation, movie units
snr                        : float32        # peak of C over sn
event_snr = null           : float32        # CaImAn's SNR_comp (event exceptionality)
r_value = null             : float32        # spatial consistency: footprint vs movie at the unit's peaks
compactness = null         : float32        # 4 pi area / perimeter^2 of the half-peak region
eccentricity = null        : float32        # of the half-peak region (0: a disk)
elongation = null          : float32        # major / minor axis of the half-peak region
rel_area = null            : float32        # half-peak area over the expected cell's
pnr = null                 : float32        # (max - mode) of YrA over sn
skewness = null            : float32        # of YrA
outside_fov = null         : float32        # fraction of the footprint outside the field of view
yra = null                 : <npy@>         # YrA: float32 (n_frames,) trace before deconvolution (C + residual)
"""


@schema
class CNMF(FetchFingerprint, dj.Computed):
    """CNMF result of one corrected movie: units (footprints A, traces C, activity S) and background.

    Attributes
    ----------
    n_units : int
    n_inconsistent : int
        Units dropped at the end because their footprint did not look like the movie at their peaks
        (spatial consistency below the parameter set's ``min_r_value``); null in rows of earlier versions.
    b : numpy.ndarray
        float32 (height, width): background footprint.
    f : NpyRef
        float32 (n_frames,): background trace.
    pixel_sn : numpy.ndarray
        float32 (height, width): per-pixel noise standard deviation, movie units.
    seconds : dict
        Wall time per step (noise, spatial, temporal, merge), s.
    """

    definition = """
    # CNMF: footprints, traces and deconvolved activity of every unit
    -> initialization.Initialization
    -> CNMFTask
    ---
    n_units                    : int32
    b                          : <blob>         # float32 (height, width) background footprint
    f                          : <npy@>         # float32 (n_frames,) background trace
    pixel_sn                   : <blob>         # float32 (height, width) noise, movie units
    seconds                    : json           # wall time per step, s
    compute_time               : float64        # s
    scopeline_version          : varchar(16)
    n_inconsistent = null      : int32          # units dropped at the end: spatial consistency below min_r_value
    """

    class Unit(dj.Part):
        """One unit (cell): footprint, traces and their model.

        C and S are in movie units at the footprint's peak pixel (the footprint has peak 1): the
        fluorescence of the corrected, background-removed movie, not dF/F. The quality metrics after
        ``snr`` are :data:`scopeline.core.quality.METRICS` (formulas there); they and ``yra`` (YrA, what
        curation and QC views show beside C) are null in rows an earlier scopeline made. Readers get
        units through :mod:`scopeline.pipeline.units`.
        """

        definition = """
        -> master
        unit_id                    : int32
        ---
        """ + UNIT_ATTRIBUTES

    show_progress = True

    def make_fetch(self, key):
        """The corrected movie's reference and field of view, its frame rate, the initialization's arrays,
        and the parameters (CNMF's, and initialization's for the expected cell diameter)."""
        movie, fov, fps, init_params = _movie_inputs(key)
        footprints, offsets, c_init, b, f = (initialization.Initialization & key).fetch1(
            "footprints", "offsets", "c_init", "b", "f")
        params = (CNMFParamSet & key).fetch1("params")
        return movie, fov, fps, footprints, offsets, c_init, b, f, params, init_params

    def make_compute(self, key, movie_ref, fov, fps, patches, offsets, c_init, b, f, params, init_params):
        """Run core.cnmf.cnmf from the initialization (it computes the units' quality metrics too)."""
        t0 = time.perf_counter()
        p = parse_params(core_cnmf.CNMFParams, params, "CNMF", key[CNMFParamSet.name_attr])
        diameter = parse_params(core_init.InitParams, init_params, "initialization", key[initialization.InitParamSet.name_attr]).diameter
        movie = open_zarr(movie_ref)
        patches, c_init, f = load_npy(patches), load_npy_writable(c_init), load_npy(f)  # references until here
        A = Footprints(patches, offsets, movie.shape[1:])
        passes = sum(s in ("spatial", "temporal") for s in p.iterations) + 2
        bar = progress_bar(passes * movie.shape[0], f"cnmf {keys.recording_text(key)}",
                           self.show_progress)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res = core_cnmf.cnmf(movie, A, c_init, b, f, p, progress=bar.update, diameter=diameter, fps=fps, fov=fov,
                                 overwrite_c=True)  # c_init is this call's own: CNMF's working memory
        bar.close()
        metrics = res.metrics
        row = dict(key, n_units=len(res.A), n_inconsistent=res.n_inconsistent, b=res.b, f=res.f, pixel_sn=res.pixel_sn,
                   seconds={k: round(v, 3) for k, v in res.seconds.items()}, compute_time=time.perf_counter() - t0,
                   scopeline_version=scopeline.__version__)
        units = unit_rows(key, range(len(res.A)), res.A, res.C, res.S, res.YrA, res.b0, res.c0, res.g, res.sn, res.snr,
                          metrics)
        return row, units

    def make_insert(self, key, row, units):
        with store_writes(self, key):  # the <npy@> traces go to the store
            self.insert1(row)
            if units:
                self.Unit.insert(units)

    def result(self) -> dict:
        """One row's units as arrays (:func:`scopeline.pipeline.units.arrays`: the units a reader sees)."""
        from scopeline.pipeline import units

        return units.arrays(self.fetch1("KEY"))


def _movie_inputs(key: dict) -> tuple:
    """The corrected movie's reference, its field of view (bool (height, width)), its frame rate (Hz)
    and the initialization's parameters (stored JSON: the expected cell diameter)."""
    movie = (motion.MotionCorrection & key).fetch1("movie")
    fov = (motion.MotionCorrection & key).field_of_view()
    return movie, fov, initialization.corrected_fps(key), (initialization.InitParamSet & key).fetch1("params")


def fit_context(key: dict) -> dict:
    """What refitting units of a stored CNMF result needs (a curation's merges): ``movie`` (the
    corrected movie, a zarr array), ``fov``, ``fps`` (Hz), ``params`` (its :class:`CNMFParams`),
    ``diameter`` (pixels), ``b`` and ``f`` (its background footprint and trace)."""
    movie, fov, fps, init_params = _movie_inputs(key)
    b, f = (CNMF & key).fetch1("b", "f")
    return {"movie": open_zarr(movie), "fov": fov, "fps": fps, "b": b, "f": load_npy(f),
            "params": parse_params(core_cnmf.CNMFParams, (CNMFParamSet & key).fetch1("params"), "CNMF",
                                   key[CNMFParamSet.name_attr]),
            "diameter": parse_params(core_init.InitParams, init_params, "initialization",
                                     key[initialization.InitParamSet.name_attr]).diameter}


def unit_rows(key: dict, unit_ids, A: Footprints, C, S, YrA, b0, c0, g, sn, snr, metrics: dict) -> list[dict]:
    """Rows of :data:`UNIT_ATTRIBUTES` (with ``key`` and ``unit_id``) for units given as arrays
    (:class:`scopeline.core.cnmf.CNMFResult`'s fields, one entry per unit)."""
    cy, cx = A.centroids().T if len(A) else (np.zeros(0), np.zeros(0))
    area = A.area()
    return [dict(key, unit_id=int(u), footprint=A.patches[i], patch_y=int(A.offsets[i, 0]), patch_x=int(A.offsets[i, 1]),
                 centroid_y=float(cy[i]), centroid_x=float(cx[i]), area=int(area[i]), trace=C[i], activity=S[i],
                 yra=YrA[i], b0=float(b0[i]), c0=float(c0[i]), g=g[i], sn=float(sn[i]), snr=float(snr[i]),
                 **{name: float(values[i]) for name, values in metrics.items()})
            for i, u in enumerate(unit_ids)]


STAGE = Stage(
    "cnmf", module=sys.modules[__name__], computed=CNMF, paramset=CNMFParamSet, task=CNMFTask,
    upstream="initialization", label="CNMF", aliases=("--paramset", "-p"),
    extra={"columns": ("n_units",)},
    description="CNMF parameter set of scopeline (noise, spatial and temporal updates, merging); pixels and frames "
                "of the motion-corrected movie.")
