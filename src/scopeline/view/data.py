"""What ``scopeline view`` shows, read from the database: no web code here (``view.app`` serves it).

A result is opened once (:class:`ResultData`: its unit rows with footprints, their curation state, the
summary images) and kept in a small cache; a unit's traces are read when the unit is opened, and a
movie clip reads only the frames and pixels around the unit from the store. So opening a result with
1,000 units and 20,000 frames moves the footprints and images, not the traces or the movie.

Every database access holds one lock: a DataJoint connection is not safe to share between threads,
and the web server answers requests on several.
"""

from __future__ import annotations

import base64
import json
import threading
from collections import OrderedDict
from typing import Optional

import cv2
import numpy as np

from scopeline.core import traces
from scopeline.core.curation import LABELS, Edit
from scopeline.core.footprints import Footprints
from scopeline.core.quality import METRICS
from scopeline.errors import ScopelineError

__all__ = ["DB_LOCK", "ViewError", "Conflict", "result_id", "parse_result_id", "results", "open_result",
           "ResultData", "IMAGES"]

#: held around every database access
DB_LOCK = threading.RLock()

#: summary images offered under the contours: name -> (MotionCorrection attribute or recipe, title)
IMAGES = {"max_mean": "max - mean", "max_image": "max projection", "mean_image": "mean",
          "correlation_image": "local correlation", "pnr_image": "peak-to-noise", "std_image": "std"}

#: per-unit numbers sent with a result (colour the contours by any of them)
UNIT_NUMBERS = (*METRICS, "snr", "sn", "area")

_CLIP_BEFORE, _CLIP_AFTER, _CLIP_EVENTS = 10, 30, 3  # frames around each of the strongest events


class ViewError(ScopelineError, ValueError):
    """A request the view cannot answer (no such result or unit, a bad change); says which and why."""


class Conflict(ViewError):
    """The curation a change was made on is no longer the one in use (someone saved another meanwhile)."""


def result_id(key: dict) -> str:
    """A URL-safe id of one CNMF result: its key's fields as base64url JSON (no padding)."""
    from scopeline.pipeline import keys

    text = json.dumps(keys.of(key, "cnmf"), sort_keys=True, separators=(",", ":"), default=int)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def parse_result_id(rid: str) -> dict:
    """The key :func:`result_id` made.

    Raises
    ------
    ViewError
        If ``rid`` is not such an id.
    """
    try:
        key = json.loads(base64.urlsafe_b64decode(rid + "=" * (-len(rid) % 4)))
    except (ValueError, UnicodeDecodeError) as err:
        raise ViewError(f"result id {rid!r} is not one the view made ({err})") from None
    if not isinstance(key, dict):
        raise ViewError(f"result id {rid!r} is not one the view made")
    return key


def results() -> list[dict]:
    """Every CNMF result, for browsing subject -> session -> result: its key fields, ``id``, n_units,
    n_accepted, and the curation in use (``curation``: its words, or None)."""
    from scopeline import query
    from scopeline.pipeline import curation, keys

    with DB_LOCK:
        frame = query.results()
        out = []
        for row in frame.to_dict("records"):
            key = {k: (int(row[k]) if k == "recording_id" else row[k]) for k in keys.fields("cnmf")}
            cid = curation.in_use(key)
            out.append({**key, "id": result_id(key), "n_units": int(row.get("n_units", 0)),
                        "n_accepted": int(row["n_accepted"]), "curation": None if cid is None else cid})
        return out


_CACHE: "OrderedDict[str, ResultData]" = OrderedDict()
_CACHE_SIZE = 4


def open_result(rid: str, reload: bool = False) -> "ResultData":
    """The :class:`ResultData` of result ``rid``, from the cache (the 4 last opened) unless ``reload``.

    Raises
    ------
    ViewError
        If ``rid`` names no CNMF result.
    """
    with DB_LOCK:
        if reload or rid not in _CACHE:
            _CACHE[rid] = ResultData(parse_result_id(rid))
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
        _CACHE.move_to_end(rid)
        return _CACHE[rid]


def _gray_png(image: np.ndarray, lo_hi: tuple = (1.0, 99.7)) -> bytes:
    """uint8 grey PNG of a float image scaled between two percentiles (NaN as black)."""
    image = np.nan_to_num(np.asarray(image, np.float64))
    lo, hi = np.percentile(image, lo_hi)
    scaled = np.clip((image - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    ok, png = cv2.imencode(".png", (scaled * 255).astype(np.uint8))
    return png.tobytes()


def _number(v) -> Optional[float]:
    """A finite float, or None (JSON has no NaN)."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def _rounded(values: np.ndarray, digits: int = 4) -> list:
    """float32 values as a JSON list with ``digits`` significant digits (smaller payloads)."""
    v = np.asarray(values, np.float64)
    return [float(f"{x:.{digits}g}") if np.isfinite(x) else None for x in v]


class ResultData:
    """One CNMF result as the view shows it.

    Parameters
    ----------
    key : dict
        Restricts CNMF to exactly one result.

    Raises
    ------
    ViewError
        If ``key`` matches no CNMF result or several.
    """

    def __init__(self, key: dict):
        from scopeline.pipeline import cnmf, curation, keys, motion, units

        with DB_LOCK:
            q = cnmf.CNMF & keys.of(key, "cnmf")
            if len(q) != 1:
                raise ViewError(f"{keys.describe(key) or key}: matches {len(q)} CNMF results (the view opens one)")
            self.key = q.fetch1("KEY")
            self.id = result_id(self.key)
            rows, _ = units.every_unit(self.key)
            self.rows = {int(r["unit_id"]): r for r in rows}
            self.curation_id = curation.in_use(self.key)
            self.state = curation.state(self.key, self.curation_id) if self.curation_id is not None else {}
            self.curations = [{k: (v.isoformat() + "Z" if k == "created" else v) for k, v in c.items()
                               if k in ("curation_id", "parent", "kind", "curation_paramset", "curator", "created",
                                        "note", "n_units", "n_accepted", "in_use")}
                              for c in curation.curations(self.key)]
            names = ("n_frames", "height", "width", "shifts", "confidence", "mean_image", "max_image", "std_image",
                     "correlation_image", "pnr_image", "fov", "mean_raw", "fov_info")
            mc = dict(zip(names, (motion.MotionCorrection & self.key).fetch1(*names)))
            self.times = motion.frame_times(self.key)
            self.describe = keys.describe(self.key)
        self.motion = mc
        self.shape = (int(mc["height"]), int(mc["width"]))
        self.n_frames = int(mc["n_frames"])
        self.fps = 1.0 / float(np.median(np.diff(self.times))) if len(self.times) > 1 else None  # Hz
        self.black = float(mc["fov_info"]["dark"]) if mc["fov_info"] and mc["fov_info"].get("found") else 0.0
        self._movie = None
        self._recent: "OrderedDict[int, tuple]" = OrderedDict()
        ids = sorted(self.rows)
        self.unit_ids = ids
        self.A = Footprints(np.stack([self.rows[u]["footprint"] for u in ids]) if ids else np.zeros((0, 1, 1), np.float32),
                            [(self.rows[u]["patch_y"], self.rows[u]["patch_x"]) for u in ids] or np.zeros((0, 2), int),
                            self.shape)

    # ---------------------------------------------------------------- the result

    def summary(self) -> dict:
        """JSON of the result: key, shape, frames, fps, every unit (id, centroid, contour, state, labels,
        numbers), the metric names, the curations, the images offered and the label vocabulary."""
        contours = self.A.contours()
        unit_list = []
        for i, u in enumerate(self.unit_ids):
            r, st = self.rows[u], self.state.get(u)
            unit_list.append({
                "unit_id": u, "y": round(_number(r["centroid_y"]) or 0.0, 2), "x": round(_number(r["centroid_x"]) or 0.0, 2),
                "contour": [np.round(line, 1).tolist() for line in contours[i]],
                "accepted": True if st is None else bool(st.accepted),
                "labels": list(st.labels) if st is not None else [],
                "reason": st.reason if st is not None else "",
                "merged_into": None if st is None or st.merged_into is None else int(st.merged_into),
                "numbers": {n: (None if _number(r.get(n)) is None else round(_number(r[n]), 4)) for n in UNIT_NUMBERS},
            })
        return {"id": self.id, "key": self.key, "describe": self.describe, "height": self.shape[0],
                "width": self.shape[1], "n_frames": self.n_frames, "fps": self.fps,
                "duration": float(self.times[-1]) if len(self.times) else 0.0,
                "units": unit_list, "numbers": list(UNIT_NUMBERS), "metric_text": {k: v[0] for k, v in METRICS.items()},
                "curation_id": self.curation_id, "curations": self.curations, "images": IMAGES,
                "labels": {k: v for k, v in LABELS.items() if k not in ("accept", "reject")}}

    def image_png(self, name: str) -> bytes:
        """A summary image (:data:`IMAGES`) as a grey PNG.

        Raises
        ------
        ViewError
            If ``name`` is not one of them, or this result has none of it.
        """
        if name not in IMAGES:
            raise ViewError(f"no image {name!r}; the images are {', '.join(IMAGES)}")
        if name == "max_mean":
            image = np.asarray(self.motion["max_image"], np.float64) - np.asarray(self.motion["mean_image"], np.float64)
        else:
            image = self.motion.get(name)
        if image is None:
            raise ViewError(f"{self.describe}: its motion correction has no {name}")
        return _gray_png(image)

    def motion_json(self, max_points: int = 4000) -> dict:
        """The rigid shifts (dy, dx, pixels) and registration confidence over time, at most ``max_points``
        frames (every k-th: a 20,000-frame result sends 4,000)."""
        step = max(1, int(np.ceil(self.n_frames / max_points)))
        shifts = np.asarray(self.motion["shifts"], np.float64)[::step]
        conf = self.motion.get("confidence")
        return {"time": _rounded(self.times[::step], 6), "dy": _rounded(shifts[:, 0]), "dx": _rounded(shifts[:, 1]),
                "confidence": None if conf is None else _rounded(np.asarray(conf)[::step]), "step": step}

    def provenance(self) -> dict:
        """The result's provenance (:func:`scopeline.pipeline.nwb.provenance`), JSON-ready."""
        from scopeline.pipeline import nwb
        from scopeline.pipeline._util import json_default

        with DB_LOCK:
            return json.loads(json.dumps(nwb.provenance(self.key), default=json_default))

    # ---------------------------------------------------------------- one unit

    def _index(self, unit_id: int) -> int:
        if unit_id not in self.rows:
            raise ViewError(f"{self.describe}: no unit {unit_id}")
        return self.unit_ids.index(unit_id)

    def _traces(self, unit_id: int) -> tuple[np.ndarray, np.ndarray, float, dict]:
        """C, S (float32 (frames,)), F0 and the unit's events, read from the store (the last 8 units'
        kept: opening a unit reads them for its traces and again for its clip)."""
        if unit_id not in self._recent:
            self._recent[unit_id] = self._read_traces(unit_id)
            while len(self._recent) > 8:
                self._recent.popitem(last=False)
        return self._recent[unit_id]

    def _read_traces(self, unit_id: int) -> tuple[np.ndarray, np.ndarray, float, dict]:
        from scopeline.pipeline._util import load_npy

        i, row = self._index(unit_id), self.rows[unit_id]
        with DB_LOCK:
            C = load_npy(row["trace"]).astype(np.float32)
            S = load_npy(row["activity"]).astype(np.float32)
        A = self.A.subset(np.array([i]))
        f0 = traces.resting_fluorescence(A, C[None], self.motion["mean_raw"], self.black) \
            if self.motion["mean_raw"] is not None else np.array([np.nan])
        ev = traces.events(S[None], np.array([float(row["sn"])]), 3.0, f0 if np.isfinite(f0[0]) else None)
        return C, S, float(f0[0]), ev

    def unit_json(self, unit_id: int) -> dict:
        """JSON of one unit: footprint patch and offset, C, S and dF/F (CNMF-E's baseline) per frame, the
        frame times (s), F0, its events (onset frame, time, amplitude) and its numbers."""
        C, S, f0, ev = self._traces(unit_id)
        i = self._index(unit_id)
        A = self.A.subset(np.array([i]))
        dff = traces.dff(A, C[None], np.array([f0]), "cnmf")[0] if np.isfinite(f0) else None
        row = self.rows[unit_id]
        return {"unit_id": unit_id, "patch": np.round(self.A.patches[i], 3).tolist(),
                "offset": [int(v) for v in self.A.offsets[i]], "time": _rounded(self.times, 7),
                "C": _rounded(C), "S": _rounded(S), "dff": None if dff is None else _rounded(dff), "F0": _number(f0),
                "events": {"onset": ev["onset"].tolist(), "time": [round(float(self.times[o]), 3) for o in ev["onset"]],
                           "amplitude": _rounded(ev["amplitude"])},
                "numbers": {n: _number(row.get(n)) for n in UNIT_NUMBERS}}

    def _open_movie(self):
        from scopeline.pipeline import motion

        if self._movie is None:
            with DB_LOCK:
                self._movie = (motion.MotionCorrection & self.key).open_movie()
        return self._movie

    def clip(self, unit_id: int, size: int = 64) -> tuple[bytes, dict]:
        """A short clip of the corrected movie around one unit at its strongest events, read lazily.

        Up to 3 events (the largest, at least 40 frames apart), each 10 frames before its onset to 30
        after; a square of ``size`` pixels (at least 1.5 x the footprint's patch) centred on the unit,
        read from the stored movie as that box only. Frames are scaled together (1st-99.9th percentile).

        Returns
        -------
        png : bytes
            One PNG sprite sheet: the frames left to right, top to bottom, ``columns`` per row.
        meta : dict
            ``frames`` (the frame of each tile), ``events`` (onset frames), ``tile`` (h, w pixels),
            ``columns``, ``box`` (y0, x0 of the tile in the frame), ``fps``.
        """
        C, S, f0, ev = self._traces(unit_id)
        order = np.argsort(-np.asarray(ev["amplitude"])) if len(ev["onset"]) else []
        onsets: list[int] = []
        for k in order:
            o = int(ev["onset"][k])
            if all(abs(o - p) >= _CLIP_BEFORE + _CLIP_AFTER for p in onsets):
                onsets.append(o)
            if len(onsets) == _CLIP_EVENTS:
                break
        if not onsets:  # no event: around the trace's peak
            onsets = [int(np.argmax(C))] if len(C) else [0]
        onsets.sort()
        side = int(min(max(size, 1.5 * max(self.A.patches.shape[1:])), *self.shape))
        cy, cx = float(self.rows[unit_id]["centroid_y"]), float(self.rows[unit_id]["centroid_x"])
        y0 = int(np.clip(round(cy - side / 2), 0, self.shape[0] - side))
        x0 = int(np.clip(round(cx - side / 2), 0, self.shape[1] - side))
        movie = self._open_movie()
        frames, tiles = [], []
        for o in onsets:
            a, b = max(0, o - _CLIP_BEFORE), min(self.n_frames, o + _CLIP_AFTER)
            tiles.append(np.asarray(movie[a:b, y0:y0 + side, x0:x0 + side], np.float32))
            frames.extend(range(a, b))
        stack = np.concatenate(tiles)
        lo, hi = np.percentile(stack, [1.0, 99.9])
        stack = (np.clip((stack - lo) / (hi - lo if hi > lo else 1.0), 0, 1) * 255).astype(np.uint8)
        columns = min(10, len(stack))
        rows = int(np.ceil(len(stack) / columns))
        sheet = np.zeros((rows * side, columns * side), np.uint8)
        for k, tile in enumerate(stack):
            r, c = divmod(k, columns)
            sheet[r * side:(r + 1) * side, c * side:(c + 1) * side] = tile
        ok, png = cv2.imencode(".png", sheet)
        return png.tobytes(), {"frames": frames, "events": onsets, "tile": [side, side], "columns": columns,
                               "box": [y0, x0], "fps": self.fps or 20.0, "unit_id": unit_id, "n": len(stack)}

    # ---------------------------------------------------------------- curation

    def save(self, change: dict, parent: Optional[int], curator: Optional[str] = None) -> int:
        """Save ``change`` as a new manual curation on top of ``parent`` (the curation in use when the
        change was made: None when there was none) and make it the one in use. Never overwrites.

        Parameters
        ----------
        change : dict
            ``accept``, ``reject`` (lists of unit ids), ``labels`` (unit id -> list of labels), ``merges``
            (lists of unit ids), ``note``: :class:`scopeline.core.curation.Edit`'s fields.
        parent : int or None
        curator : str, optional

        Returns
        -------
        int
            The new curation's id.

        Raises
        ------
        Conflict
            If the curation in use is no longer ``parent`` (reload and make the change again).
        ViewError
            If the change is empty or not a valid edit (unknown unit or label, a unit merged twice).
        """
        from pydantic import ValidationError

        from scopeline.core.curation import EditError
        from scopeline.pipeline import curation

        try:
            edit = Edit(**{k: v for k, v in change.items() if k in Edit.model_fields})
        except ValidationError as err:
            raise ViewError(f"the change is not a valid curation: {err.errors()[0]['msg']}") from None
        if not (edit.accept or edit.reject or edit.labels or edit.merges):
            raise ViewError("nothing to save: accept, reject, label or merge a unit first")
        with DB_LOCK:
            try:
                return curation.edit(self.key, edit, parent=parent, curator=curator, parent_in_use=True)
            except curation.CurationConflict as err:
                raise Conflict(str(err)) from None
            except (EditError, ScopelineError) as err:
                raise ViewError(str(err)) from None
