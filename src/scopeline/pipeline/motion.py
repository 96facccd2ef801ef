"""Preprocessing and motion correction: parameter sets, tasks, and the MotionCorrection table.

All computation is :func:`scopeline.core.motion.correct_motion`; this module fetches, calls it, and
inserts. The corrected movie is written as a Zarr array straight into the object store during the
computation (no transaction open), and removed again if the computation fails.
"""

from __future__ import annotations

import sys
import json
import time

import numpy as np
import scopeline
from scopeline._dj import dj
from scopeline.core import motion as core_motion
from scopeline.pipeline import acquisition, keys
from scopeline.pipeline._objects import open_zarr, staged_zarr
from scopeline.pipeline._paramsets import ParamSetError, parse_params, validate_params
from scopeline.pipeline._stage import Stage, stage_tables
from scopeline.pipeline._util import FetchFingerprint, json_default, progress_bar

schema = dj.Schema()

__all__ = ["ParamSetError", "MotionParamSet", "MotionTask", "MotionCorrection", "validate_params"]


MotionParamSet, MotionTask = stage_tables(
    globals(), prefix="Motion", attr="motion_paramset", model=core_motion.MotionParams, presets=core_motion.PRESETS,
    label="motion", upstream="acquisition.RecordingInfo", upstream_text="a recording")


@schema
class MotionCorrection(FetchFingerprint, dj.Computed):
    """Preprocessed, motion-corrected movie with shifts, corrupted frames and summary images.

    Attributes
    ----------
    n_frames, height, width : int
        Shape of the corrected movie (after cropping, downsampling, dropping).
    shifts : numpy.ndarray
        float32 (n_frames, 2), rigid (dy, dx) of each frame relative to the template, pixels; the
        correction moved each frame by ``-shifts``.
    frame_index : numpy.ndarray
        int64 (n_frames,), raw frame of each corrected frame (timestamps: RecordingInfo.timestamps[frame_index]).
    corrupted_frames : numpy.ndarray
        int64, raw indices of frames flagged as corrupted (then interpolated or dropped).
    corrupted_reasons : dict
        raw index (str) -> ``"rows/blocks"`` | ``"black"``.
    template : numpy.ndarray
        float32 (height, width), the high-passed registration template.
    mean_image, max_image, std_image, correlation_image, pnr_image : numpy.ndarray
        float32 (height, width) summary images of the corrected movie.
    movie : ObjectRef
        Zarr array (n_frames, height, width) of ``movie_dtype`` in the object store; see :meth:`open_movie`.
    confidence : numpy.ndarray
        float32 (n_frames,): how clearly each frame's registration peak stands out (peak-to-sidelobe ratio;
        ``template_confidence`` its median over the template's frames).
    fallback_frames : numpy.ndarray
        int64: corrected frames whose own registration peak was in doubt and whose shift comes from their
        neighbours' (see :class:`scopeline.core.motion.RegistrationParams`).
    dark_frames : numpy.ndarray
        int64: raw indices of the dark frames at the start (LED warm-up), flagged and kept.
    brightness, row_noise : numpy.ndarray
        float32 (n_frames,): each raw frame's mean, and the line noise removed from it (standard deviation
        of its row offsets), movie units.
    line_noise : dict
        Line noise of the movie before and after removal (see ``MotionResult.line_noise``).
    fov : numpy.ndarray
        uint8 (height, width), 1 inside: the field of view of the corrected movie (inside the lens in every
        frame); ``lens`` the lens on the sensor (raw frame), ``fov_info`` how it was found.
    defects : numpy.ndarray
        int8 (height, width): defective pixels repaired (1 hot, -1 dead).
    mean_raw : numpy.ndarray
        float32 (height, width): mean of the sampled raw frames, where the lens was found.
    seconds : dict
        Wall time of each pass, s; ``compute_time`` the total.

    The attributes after ``movie_dtype`` were added by scopeline 0.2 and are null in rows an earlier
    version made (``scopeline db migrate`` adds them to such a table).
    """

    definition = """
    # Preprocessed, motion-corrected movie and its summaries
    -> MotionTask
    ---
    n_frames                   : int32
    height                     : int16          # pixels
    width                      : int16          # pixels
    shifts                     : <blob>         # float32 (n_frames, 2) rigid (dy, dx), pixels
    frame_index                : <blob>         # int64 (n_frames,) raw frame of each frame
    corrupted_frames           : <blob>         # int64 raw frames flagged as corrupted
    corrupted_reasons          : json           # raw frame -> reason
    template                   : <blob>         # float32 (height, width), high-passed
    mean_image                 : <blob>         # float32 (height, width)
    max_image                  : <blob>
    std_image                  : <blob>
    correlation_image          : <blob>         # mean correlation with the 8 neighbours
    pnr_image                  : <blob>         # (max - mean) / noise
    movie                      : <object@>      # Zarr (n_frames, height, width)
    movie_dtype                : varchar(8)
    confidence = null          : <blob>         # float32 (n_frames,) registration peak-to-sidelobe ratio
    template_confidence = null : float32        # its median over the template's frames
    fallback_frames = null     : <blob>         # int64 frames whose shift comes from their neighbours
    dark_frames = null         : <blob>         # int64 raw frames flagged dark at the start (LED warm-up)
    brightness = null          : <blob>         # float32 (n_frames,) mean of each raw frame
    row_noise = null           : <blob>         # float32 (n_frames,) line noise removed, movie units
    line_noise = null          : json           # line noise before / after removal
    fov = null                 : <blob>         # uint8 (height, width) field of view of the corrected movie
    lens = null                : <blob>         # uint8 (height, width) lens on the sensor
    fov_info = null            : json           # how the lens was found
    defects = null             : <blob>         # int8 (height, width) 1 hot, -1 dead pixel
    mean_raw = null            : <blob>         # float32 (height, width) mean of sampled raw frames
    seconds                    : json           # wall time per pass, s
    compute_time               : float64        # s
    scopeline_version          : varchar(16)
    """

    class Block(dj.Part):
        """Piecewise-rigid mode: one patch of the grid and its shifts."""

        definition = """
        -> master
        block_id                   : int16
        ---
        y0                         : int16          # pixels, end exclusive
        y1                         : int16
        x0                         : int16
        x1                         : int16
        block_shifts               : <blob>         # float32 (n_frames, 2) total (dy, dx), pixels
        """

    show_progress = True

    @property
    def key_source(self):
        return MotionTask()

    def make_fetch(self, key):
        """The movie's files and the parameter set."""
        spec = (acquisition.RecordingInfo & key).movie_spec()
        params = (MotionParamSet & key).fetch1("params")
        return spec, params

    def make_compute(self, key, spec, params):
        """Run core.motion.correct_motion, writing the corrected movie into the object store."""
        t0 = time.perf_counter()
        p = parse_params(core_motion.MotionParams, params, "motion", key[MotionParamSet.name_attr])
        movie = acquisition.open_movie(spec, chunk_frames=p.block_frames * p.preprocess.temporal_downsample)
        passes = 2 if p.preprocess.corruption.action == "drop" else 1
        bar = progress_bar(passes * movie.shape[0], f"motion {keys.recording_text(key)}",
                   self.show_progress)
        with staged_zarr(self, key, "movie") as (create, finish):
            res = core_motion.correct_motion(movie, p, create,  # workers, scheduler: scopeline.executor.settings()
                                             progress=bar.update)
            meta = finish()
        bar.close()
        img = res.summary
        row = dict(
            key, n_frames=res.shape[0], height=res.shape[1], width=res.shape[2], shifts=res.shifts,
            frame_index=res.frame_index, corrupted_frames=np.array(sorted(res.corrupted), np.int64),
            corrupted_reasons={str(k): v for k, v in res.corrupted.items()}, template=res.template,
            mean_image=img["mean"], max_image=img["max"], std_image=img["std"],
            correlation_image=img["correlation"], pnr_image=img["pnr"], movie=meta, movie_dtype=p.store_dtype,
            confidence=res.confidence, template_confidence=float(res.template_confidence),
            fallback_frames=np.flatnonzero(res.fallback).astype(np.int64), dark_frames=res.dark_frames,
            brightness=res.brightness, row_noise=res.row_noise, line_noise=_plain(res.line_noise),
            fov=res.fov.astype(np.uint8), lens=res.lens.astype(np.uint8), fov_info=_plain(res.fov_info),
            defects=res.defects, mean_raw=res.mean_raw,
            seconds={k: round(v, 3) for k, v in res.seconds.items()}, compute_time=time.perf_counter() - t0,
            scopeline_version=scopeline.__version__,
        )
        blocks = [dict(key, block_id=i, y0=b[0], y1=b[1], x0=b[2], x1=b[3], block_shifts=res.patch_shifts[:, i])
                  for i, b in enumerate(res.patch_boxes)]
        return row, blocks

    def make_insert(self, key, row, blocks):
        """Insert the row and its patches."""
        self.insert1(row)
        if blocks:
            self.Block.insert(blocks)

    def open_movie(self):
        """The corrected movie of one row as a (read-only) Zarr array (n_frames, height, width)."""
        return open_zarr(self.fetch1("movie"))

    def field_of_view(self) -> np.ndarray:
        """bool (height, width): one row's field of view of the corrected movie (all True for rows made
        before scopeline found one)."""
        fov, h, w = self.fetch1("fov", "height", "width")
        return np.ones((int(h), int(w)), bool) if fov is None else np.asarray(fov) > 0


def frame_times(key: dict) -> np.ndarray:
    """float64 (frames,): times of a motion correction's corrected frames, s from its recording's first
    frame (the recording's own clock)."""
    ts = (acquisition.RecordingInfo & key).fetch1("timestamps")
    idx = (MotionCorrection & key).fetch1("frame_index")
    return np.asarray(ts, np.float64)[idx] - float(ts[0])


def _plain(info: dict) -> dict:
    """JSON-ready copy of a dict (numpy scalars and arrays as Python numbers and lists, also nested)."""
    return json.loads(json.dumps(info, default=json_default))


STAGE = Stage(
    "motion", module=sys.modules[__name__], computed=MotionCorrection, paramset=MotionParamSet,
    task=MotionTask, upstream="acquisition", extra={"columns": ("n_frames",)},
    description="Motion-correction parameter set of scopeline (preprocessing, registration, output); pixels refer "
                "to the frame after cropping and downsampling unless stated.")
