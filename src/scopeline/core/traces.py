"""dF/F and events of CNMF units, from their traces and the movie's resting fluorescence.

C is in movie units at the footprint's peak pixel (the fluorescence the unit adds above its baseline),
so dF/F needs the fluorescence the unit sits on, F0, which the background removal of preprocessing
took out of the movie CNMF saw. Both baselines here take F0 from the mean of the raw frames (the
motion stage's ``mean_raw``), less the sensor's black level (the dark outside the lens), averaged over
the footprint with the footprint as weights, less the unit's own mean contribution. With weights
``w = a / sum(a)`` the unit adds ``k C(t)`` to that average, ``k = sum(a^2) / sum(a)``:

- ``"cnmf"`` (CNMF-E, Zhou et al. 2018: C over the unit's resting fluorescence, its baseline and the
  background under its footprint): ``dF/F(t) = k C(t) / F0``, F0 one number per unit;
- ``"percentile"`` (the sliding-percentile baseline of CaImAn's ``detrend_df_f``, Giovannucci et al.
  2019): the unit's fluorescence ``F(t) = F0 + k C(t) + k_b (f(t) - mean f)`` with the background
  under its footprint (CNMF's b, f; ``k_b = sum(w b)``), ``F0(t)`` its ``quantile``-th percentile in a
  sliding window; ``dF/F(t) = (F(t) - F0(t)) / F0(t)``. It follows slow drifts (bleaching) that a
  constant F0 does not.

Events (:func:`events`) are S's runs of consecutive non-zero frames whose summed activity exceeds
``threshold`` times the unit's noise sn (movie units, as S): an onset frame (the run's first) and an
amplitude (the run's sum of S, movie units; divided by F0 in :func:`events` when given, i.e. dF/F).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from scopeline.core.footprints import Footprints

__all__ = ["BASELINES", "resting_fluorescence", "dff", "events", "running_percentile"]

#: The dF/F baselines :func:`dff` knows.
BASELINES = ("cnmf", "percentile")


def _weights(A: Footprints) -> tuple[np.ndarray, np.ndarray]:
    """Each unit's sum(a) and k = sum(a^2) / sum(a), float64 (units,)."""
    flat = A.patches.reshape(len(A), -1).astype(np.float64)
    total = flat.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        k = np.where(total > 0, (flat ** 2).sum(axis=1) / total, np.nan)
    return total, k


def resting_fluorescence(A: Footprints, C: np.ndarray, mean_raw: np.ndarray, black: float = 0.0) -> np.ndarray:
    """Each unit's resting fluorescence F0: the footprint-weighted mean of the raw frames' mean above
    the black level, less the unit's own mean contribution.

    Parameters
    ----------
    A : Footprints
        The units' footprints (peak 1), frame (height, width) pixels.
    C : numpy.ndarray
        float (units, frames): calcium traces, movie units.
    mean_raw : numpy.ndarray
        float (height, width): mean of the raw (downsampled, uncorrected) frames, movie units; the
        motion stage's ``mean_raw``.
    black : float
        The sensor's black level, movie units (0 where unknown: F0 is then too large by it and dF/F too
        small by the same factor for every unit).

    Returns
    -------
    numpy.ndarray
        float64 (units,): F0, movie units; NaN where it is not positive (a unit on the dark outside the
        lens, or a black level above the light) or the footprint is empty.

    Raises
    ------
    ValueError
        If ``mean_raw`` is not of the footprints' frame shape or C has another number of units.
    """
    mean_raw = np.asarray(mean_raw, np.float64)
    if mean_raw.shape != tuple(A.shape):
        raise ValueError(f"mean_raw is {mean_raw.shape}, the footprints' frame {tuple(A.shape)}")
    C = np.asarray(C)
    if len(C) != len(A):
        raise ValueError(f"C has {len(C)} units, A {len(A)}")
    total, k = _weights(A)
    with np.errstate(invalid="ignore", divide="ignore"):
        f0 = A.dot(mean_raw - black) / total - k * (C.mean(axis=1) if C.size else 0.0)
    return np.where(f0 > 0, f0, np.nan)


def running_percentile(x: np.ndarray, window: int, quantile: float) -> np.ndarray:
    """The ``quantile``-th percentile of each row of ``x`` in a centred window of ``window`` frames.

    Evaluated every ``window // 10`` frames (at least 1) and interpolated linearly between: the
    baseline changes slowly next to the window, and the cost is ``frames * 10`` instead of
    ``frames * window`` per row.

    Parameters
    ----------
    x : numpy.ndarray
        float (rows, frames).
    window : int
        Window, frames (clipped to the number of frames; at least 1).
    quantile : float
        Percentile, 0-100.

    Returns
    -------
    numpy.ndarray
        float64 (rows, frames).
    """
    x = np.atleast_2d(np.asarray(x, np.float64))
    n = x.shape[1]
    if n == 0:
        return x.copy()
    window = int(min(max(window, 1), n))
    step = max(window // 10, 1)
    centres = np.unique(np.r_[np.arange(0, n, step), n - 1])
    half = window // 2
    at = np.empty((x.shape[0], len(centres)))
    for j, c in enumerate(centres):
        a = min(max(c - half, 0), n - window)
        at[:, j] = np.percentile(x[:, a: a + window], quantile, axis=1)
    return np.stack([np.interp(np.arange(n), centres, row) for row in at]) if len(x) else np.zeros((0, n))


def dff(A: Footprints, C: np.ndarray, f0: np.ndarray, baseline: str = "cnmf", *,
        b: Optional[np.ndarray] = None, f: Optional[np.ndarray] = None, fps: float = 20.0, window_s: float = 30.0,
        quantile: float = 8.0) -> np.ndarray:
    """dF/F of each unit (see the module's text for the two baselines).

    Parameters
    ----------
    A : Footprints
        The units' footprints (peak 1), frame (height, width) pixels.
    C : numpy.ndarray
        float (units, frames): calcium traces, movie units.
    f0 : numpy.ndarray
        float (units,): resting fluorescence, movie units (:func:`resting_fluorescence`).
    baseline : str
        ``"cnmf"`` (C over a constant F0) or ``"percentile"`` (a sliding percentile of the unit's
        fluorescence).
    b, f : numpy.ndarray, optional
        CNMF's background: float (height, width) footprint and float (frames,) trace, movie units; used
        by ``"percentile"`` (left out when not given).
    fps : float
        Frame rate, Hz (turns ``window_s`` into frames).
    window_s : float
        ``"percentile"``'s window, s.
    quantile : float
        ``"percentile"``'s percentile, 0-100.

    Returns
    -------
    numpy.ndarray
        float32 (units, frames): dF/F (dimensionless; 0.5 is a 50 % rise); rows of units whose F0 is NaN
        are NaN.

    Raises
    ------
    ValueError
        For an unknown baseline, a non-positive fps or window, a quantile outside 0-100, or shapes that
        do not agree.
    """
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {', '.join(BASELINES)}, not {baseline!r}")
    if baseline == "percentile" and (not fps > 0 or not window_s > 0 or not 0 <= quantile <= 100):
        raise ValueError(f"percentile baseline: fps ({fps}) and window_s ({window_s}) must be positive and "
                         f"quantile ({quantile}) within 0-100")
    C = np.asarray(C, np.float64)
    f0 = np.asarray(f0, np.float64).ravel()
    if len(C) != len(A) or len(f0) != len(A):
        raise ValueError(f"A has {len(A)} units, C {len(C)}, f0 {len(f0)}")
    total, k = _weights(A)
    delta = k[:, None] * C
    if baseline == "cnmf":
        with np.errstate(invalid="ignore"):
            return (delta / f0[:, None]).astype(np.float32)
    F = f0[:, None] + delta
    if b is not None and f is not None:
        f = np.asarray(f, np.float64).ravel()
        if f.shape[0] != C.shape[1]:
            raise ValueError(f"f has {f.shape[0]} frames, C {C.shape[1]}")
        kb = A.dot(np.asarray(b, np.float64)) / total
        F = F + kb[:, None] * (f - f.mean())[None, :]
    F0 = running_percentile(F, int(round(window_s * fps)), quantile)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (F - F0) / F0
    out[~np.isfinite(f0)] = np.nan
    return out.astype(np.float32)


def events(S: np.ndarray, sn: np.ndarray, threshold: float = 3.0, f0: Optional[np.ndarray] = None) -> dict:
    """Events of each unit: runs of consecutive frames of non-zero S whose sum exceeds ``threshold`` sn.

    Parameters
    ----------
    S : numpy.ndarray
        float (units, frames): deconvolved activity, movie units.
    sn : numpy.ndarray
        float (units,): each unit's noise, movie units.
    threshold : float
        In noise units (an event must add at least ``threshold * sn`` of calcium).
    f0 : numpy.ndarray, optional
        float (units,): resting fluorescence (:func:`resting_fluorescence`); when given, ``amplitude_dff``
        is the amplitude over it.

    Returns
    -------
    dict
        ``unit`` int64 (events,) row of S, ``onset`` int64 (events,) frame, ``frames`` int64 (events,) length
        of the run, ``amplitude`` float64 (events,) movie units, and ``amplitude_dff`` (NaN without f0), in
        unit then onset order.

    Raises
    ------
    ValueError
        If ``threshold`` is negative or sn / f0 have another number of units than S.
    """
    S = np.atleast_2d(np.asarray(S, np.float64))
    sn = np.asarray(sn, np.float64).ravel()
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0 noise units, not {threshold}")
    if len(sn) != len(S) or (f0 is not None and len(np.ravel(f0)) != len(S)):
        raise ValueError(f"S has {len(S)} units, sn {len(sn)}" + ("" if f0 is None else f", f0 {len(np.ravel(f0))}"))
    units, onsets, lengths, amps = [], [], [], []
    for i, s in enumerate(S):
        active = np.r_[False, s > 0, False]
        edges = np.flatnonzero(np.diff(active.astype(np.int8)))
        starts, stops = edges[0::2], edges[1::2]
        if not len(starts):
            continue
        sums = np.array([s[a:z].sum() for a, z in zip(starts, stops)])
        keep = sums > threshold * sn[i]
        units.append(np.full(int(keep.sum()), i))
        onsets.append(starts[keep])
        lengths.append((stops - starts)[keep])
        amps.append(sums[keep])
    cat = (lambda parts, dtype: np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype))
    out = {"unit": cat(units, np.int64), "onset": cat(onsets, np.int64), "frames": cat(lengths, np.int64),
           "amplitude": cat(amps, np.float64)}
    with np.errstate(invalid="ignore", divide="ignore"):
        out["amplitude_dff"] = (out["amplitude"] / np.asarray(f0, np.float64).ravel()[out["unit"]] if f0 is not None
                                else np.full(len(out["unit"]), np.nan))
    return out
