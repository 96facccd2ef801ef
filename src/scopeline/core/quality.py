"""Accuracy of a CNMF result against ground truth, with the Minian paper's metrics.

Estimated units are matched to true ones by centroid distance (optimal assignment, Hungarian
algorithm, pairs farther than ``max_distance`` pixels unmatched); then precision, recall and F1 of
the detection, and for the matched pairs the Pearson correlation of footprints, of traces C, and of
deconvolved activity S with the true spikes summed in 5-frame bins (Dong et al. 2022, eLife).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

__all__ = ["Accuracy", "match_units", "accuracy", "centroids"]


def centroids(A: np.ndarray) -> np.ndarray:
    """float64 (units, 2): weighted (y, x) centre of dense footprints (units, height, width)."""
    A = np.asarray(A, np.float64)
    h, w = A.shape[1:]
    yy, xx = np.mgrid[0:h, 0:w]
    mass = A.reshape(len(A), -1).sum(axis=1)
    mass = np.where(mass > 0, mass, np.nan)
    return np.stack([(A * yy).reshape(len(A), -1).sum(1) / mass, (A * xx).reshape(len(A), -1).sum(1) / mass], axis=1)


def match_units(est_xy: np.ndarray, true_xy: np.ndarray, max_distance: float) -> tuple[np.ndarray, np.ndarray]:
    """Optimal one-to-one matching by centroid distance; returns (est index, true index) pairs."""
    if len(est_xy) == 0 or len(true_xy) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    d = np.linalg.norm(est_xy[:, None, :] - true_xy[None, :, :], axis=2)
    d = np.where(np.isfinite(d), d, 1e9)
    big = max_distance * 1e3 + 1e3
    rows, cols = linear_sum_assignment(np.where(d <= max_distance, d, big))
    ok = d[rows, cols] <= max_distance
    return rows[ok], cols[ok]


def _corr_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(den > 0, (a * b).sum(axis=1) / np.where(den > 0, den, 1), 0.0)


@dataclass
class Accuracy:
    """Detection and matched-pair accuracy.

    Attributes
    ----------
    n_true, n_est, n_matched : int
    precision, recall, f1 : float
    footprint_corr, trace_corr, spike_corr : float
        Median over matched pairs of the Pearson correlation of footprints, of C with the true
        calcium, and of S with the true spikes in 5-frame bins (NaN if nothing matched).
    """

    n_true: int
    n_est: int
    n_matched: int
    precision: float
    recall: float
    f1: float
    footprint_corr: float
    trace_corr: float
    spike_corr: float

    def as_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def accuracy(A: np.ndarray, C: np.ndarray, S: np.ndarray, A_true: np.ndarray, C_true: np.ndarray,
             S_true: np.ndarray, offset: tuple[float, float] = (0.0, 0.0), max_distance: float = 5.0,
             bin_frames: int = 5) -> Accuracy:
    """Minian-paper accuracy of estimated units against the truth.

    Parameters
    ----------
    A, A_true : numpy.ndarray
        float (units, height, width): estimated and true footprints.
    C, C_true, S, S_true : numpy.ndarray
        float (units, frames): traces and deconvolved activity / spikes (same frames).
    offset : (float, float)
        (dy, dx) pixels added to the true footprints' positions to bring them into the estimate's
        frame (the motion-corrected movie sits at the template's position).
    max_distance : float
        Centroid distance for a match, pixels.
    bin_frames : int
        Bin of the S-versus-spikes correlation, frames.

    Returns
    -------
    Accuracy
    """
    A_true = np.asarray(A_true, np.float32)
    if any(offset):
        A_true = np.stack([ndimage.shift(a, offset, order=1) for a in A_true]) if len(A_true) else A_true
    ei, ti = match_units(centroids(A), centroids(A_true), max_distance)
    n_est, n_true, m = len(A), len(A_true), len(ei)
    precision = m / n_est if n_est else 0.0
    recall = m / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    if m == 0:
        nan = float("nan")
        return Accuracy(n_true, n_est, 0, precision, recall, f1, nan, nan, nan)
    fc = _corr_rows(np.asarray(A, np.float64)[ei].reshape(m, -1), A_true[ti].reshape(m, -1).astype(np.float64))
    tc = _corr_rows(np.asarray(C, np.float64)[ei], np.asarray(C_true, np.float64)[ti])
    t = (S.shape[1] // bin_frames) * bin_frames

    def binned(x: np.ndarray) -> np.ndarray:
        return np.asarray(x, np.float64)[:, :t].reshape(len(x), -1, bin_frames).sum(axis=2)

    sc = _corr_rows(binned(np.asarray(S)[ei]), binned(np.asarray(S_true)[ti]))
    return Accuracy(n_true, n_est, m, precision, recall, f1, float(np.median(fc)), float(np.median(tc)),
                    float(np.median(sc)))
