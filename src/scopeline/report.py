"""Per-result reports: the figures of a stored result (motion shifts and summary images; footprint
contours on the max projection with sample traces and activity) and a one-line-per-stage summary.

Reads the database only; every figure is drawn by :mod:`scopeline.figures`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scopeline.figures import cnmf_figure, motion_figure, quality_figure
from scopeline.core.quality import METRICS
from scopeline.pipeline import acquisition, cnmf, initialization, keys, motion, stages, units

__all__ = ["result_name", "summary", "write_figures", "unit_metrics"]


def _one(table, key: dict, what: str) -> dict:
    """The full primary key of the single row of ``table & key``.

    Raises
    ------
    LookupError
        If there is no such row (with what to run) or several (with the fields to add).
    """
    n = len(table & key)
    if n == 0:
        raise LookupError(f"no {what} for {key}: queue it (`scopeline run` or `scopeline task cnmf`) "
                          f"and run `scopeline populate`")
    if n > 1:
        free = [k for k in table.primary_key if k not in key]
        raise LookupError(f"{key} matches {n} {what} results: also give {', '.join(free)}")
    return (table & key).fetch1("KEY")


def result_name(key: dict) -> str:
    """File-name stem of a result: subject_session_recording_motion_init_cnmf (:func:`scopeline.pipeline.keys.name`)."""
    return keys.name(key)


def _title(key: dict) -> str:
    return " / ".join(str(v) for v in keys.of(key).values())


def _frame_times(key: dict) -> np.ndarray | None:
    ts = (acquisition.RecordingInfo & key).fetch1("timestamps")
    return None if ts is None else np.asarray(ts, np.float64)


def write_figures(key: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write the motion figure and, when CNMF is done, the CNMF figure of one result.

    Parameters
    ----------
    key : dict
        Restricts MotionCorrection (and CNMF, if it has the init/cnmf parameter sets) to one row.
    out_dir : str or pathlib.Path
        Folder for the PNG files (created).

    Returns
    -------
    dict
        ``{"motion": path, "cnmf": path, "quality": path}`` (the last two only when a CNMF result
        matches), and what each registered stage's ``figures`` hook adds for its results of that CNMF result.

    Raises
    ------
    LookupError
        If no motion correction matches ``key``, or several do.
    """
    mkey = _one(motion.MotionCorrection, keys.of(key, "motion"), "motion correction")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    row = (motion.MotionCorrection & mkey).fetch1()
    ts = _frame_times(mkey)
    paths = {"motion": motion_figure(row, ts, out / f"{result_name(mkey)}_motion.png", title=_title(mkey))}
    if cnmf.STAGE.key_attr in key or len(cnmf.CNMF & key) == 1:
        ckey = _one(cnmf.CNMF, key, "CNMF")
        res = units.arrays(ckey)
        idx = row["frame_index"]
        times = ts[idx] - ts[0] if ts is not None and len(ts) > idx.max(initial=0) else None
        paths["cnmf"] = cnmf_figure(res["A"], row["max_image"], res["C"], res["S"], times,
                                    out / f"{result_name(ckey)}_cnmf.png",
                                    title=_title(ckey), unit_ids=res["unit_id"])
        metrics = {name: res["metrics"][name].astype(np.float32) for name in METRICS}
        if len(res["A"]) and np.isfinite(metrics["r_value"]).any():  # none before scopeline stored them
            paths["quality"] = quality_figure(res["A"], metrics, row["max_image"],
                                              (motion.MotionCorrection & mkey).field_of_view(),
                                              out / f"{result_name(ckey)}_quality.png",
                                              title=_title(ckey) + ": unit quality metrics")
        for stage in stages.STAGES:  # a registered stage's own figures, for each of its results here
            if stage.figures is not None:
                paths.update(_stage_figures(stage, ckey, out))
    return paths


def _stage_figures(stage, ckey: dict, out: Path) -> dict:
    """A stage's figures of its results that involve one CNMF result: its results of that result (once for
    the result with ``figures_per: cnmf``), or for a group-scoped stage, its results of the groups the
    result is a member of."""
    if stage.scope == "group":
        group = stage.extra["group"]
        found = (stage.computed & (group.Member & keys.of(ckey, "cnmf")).proj()).keys()
    else:
        found = [ckey] if stage.extra.get("figures_per") == "cnmf" else (stage.computed & ckey).keys()
    paths = {}
    for stage_key in found:
        paths.update(stage.figures(dict(stage_key), out))
    return paths


def unit_metrics(key: dict) -> dict:
    """One CNMF result's per-unit quality metrics, metric -> float32 (units,) in unit order ({} for a
    result made before scopeline stored them)."""
    rows = units.rows(key, *METRICS)
    if not rows or rows[0].get("r_value") is None:
        return {}
    return {name: np.array([r[name] for r in rows], np.float32) for name in METRICS}


def summary(key: dict) -> dict:
    """One CNMF result in numbers: its key, frames, fps (Hz), duration (s), frames flagged (corrupted or
    striped, dark at the start, shifts from neighbours), line noise before / after removal (movie units),
    the field of view (fraction of the frame), units CNMF found (``n_found``) and those shown
    (``n_units``: the curation in use accepts them, :mod:`scopeline.pipeline.units`), the curation in
    words (``curation``, '' when none is in use), and the compute time of each stage (``<stage>_s``, s).

    Raises
    ------
    LookupError
        If ``key`` matches no CNMF result or several.
    """
    ckey = _one(cnmf.CNMF, key, "CNMF")
    info = (acquisition.RecordingInfo & ckey).fetch1("fps", "duration")
    mc = motion.MotionCorrection & ckey
    m = mc.fetch1("n_frames", "height", "width", "corrupted_frames")
    dark, fallback, line = mc.fetch1("dark_frames", "fallback_frames", "line_noise")
    line = line or {}
    n_seeds = (initialization.Initialization & ckey).fetch1("n_seeds")
    seconds = {f"{s.name}_s": float((s.computed & ckey).fetch1("compute_time")) for s in stages.chain("cnmf")
               if "compute_time" in s.computed.heading.names}
    return {**ckey, "n_frames": int(m[0]), "size": f"{m[1]}x{m[2]}", "fps": float(info[0]),
            "duration_s": float(info[1]), "corrupted_frames": int(len(m[3])),
            "dark_frames": int(len(dark)) if dark is not None else 0,
            "fallback_frames": int(len(fallback)) if fallback is not None else 0,
            "line_noise_before": round(float(line.get("before", 0.0)), 2) if line.get("removed") else None,
            "line_noise_after": round(float(line.get("after", 0.0)), 2) if line.get("removed") else None,
            "fov_fraction": round(float(mc.field_of_view().mean()), 3), "n_seeds": int(n_seeds),
            "n_found": int((cnmf.CNMF & ckey).fetch1("n_units")), "n_units": units.count(ckey),
            "curation": _curation_text(ckey), **seconds}


def _curation_text(ckey: dict) -> str:
    """The choice of units readers follow, in words ('' when every unit is shown)."""
    chosen = units.choice(ckey)
    if chosen is None:
        return ""
    return chosen.source.get("text", "a selection")
