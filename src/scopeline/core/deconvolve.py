"""Noise, autoregressive dynamics and sparse non-negative deconvolution of calcium traces.

A unit's fluorescence trace y (frames,) is modelled as (Pnevmatikakis et al. 2016; Friedrich et al.
2017)::

    y_t = b0 + c_t + noise,    s_t = c_t - g_1 c_{t-1} - ... - g_p c_{t-p} >= 0,  c >= 0

with the calcium concentration c, the spikes (deconvolved activity) s, an autoregressive model of
order p = 1 or 2 with coefficients g, a constant baseline b0 and white noise of standard deviation sn.
The first p frames of c are free (they hold the decay of activity from before the recording, the
"initial concentration" c0) and not penalized. Deconvolution solves::

    minimize  1/2 ||y - b0 - c||^2 + lam * sum_{t > p} s_t      subject to s_t >= 0 (t > p), c >= 0

with ``lam = sparse_penal * sn * ||h||`` (h: the AR model's impulse response, so lam is in units of
the noise of the residual filtered by h and means the same for fast and slow indicators), then
rescales c and s by the least-squares amplitude (the L1 penalty shrinks them). Two backends solve the same problem:

- ``"cvxpy"``: the formulation above given to CVXPY (CLARABEL), the reference;
- ``"oasis"``: an exact active-set solver for AR(1) (the pool-adjacent-violators algorithm of
  OASIS, Friedrich et al. 2017, written here), with b0 found by coordinate descent. AR(2) falls
  back to CVXPY.

Noise is the square root of the power spectral density averaged over the high-frequency band
(Welch's method), where calcium signal is negligible; AR coefficients come from the trace's
autocovariance with the noise variance removed from lag 0 (Yule-Walker, least squares over
``p + add_lag`` lags).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import numba
import numpy as np
import scipy.fft as sfft

__all__ = ["noise_sn", "ar_coefficients", "oasis_ar1", "deconvolve", "spikes", "Deconvolved"]

#: S is set to 0 where it is under this fraction of the trace's noise sn (inside a pool of OASIS, or
#: everywhere with an interior-point solver, s is 0 up to rounding)
SPIKE_FLOOR = 1e-3


def noise_sn(y: np.ndarray, band: tuple[float, float] = (0.25, 0.5), nperseg: int = 256, axis: int = -1) -> np.ndarray:
    """Noise standard deviation of traces from their power spectral density.

    Welch's method with non-overlapping Hann-windowed segments of ``nperseg`` frames, each made
    zero-mean, in float32: the one-sided density of white noise of variance sn^2 is 2 sn^2 per
    cycle/frame at every frequency, so sn is the square root of half the mean density in ``band``.

    Parameters
    ----------
    y : numpy.ndarray
        float (..., frames): one trace or many (time along ``axis``).
    band : (float, float)
        Frequency band, cycles per frame (0.5 = Nyquist), where the signal is negligible.
    nperseg : int
        Segment length, frames (shortened to the trace length).
    axis : int
        Time axis (0 for a movie block (frames, height, width): no transposed copy).

    Returns
    -------
    numpy.ndarray
        float32, y's shape without the time axis: sn in the trace's units; 0 for constant traces.
    """
    from scipy import signal
    y = np.moveaxis(np.asarray(y, np.float32), axis, 0)
    n = y.shape[0]
    m = max(2, min(nperseg, n))
    k = max(1, n // m)
    seg = y[: k * m].reshape(k, m, *y.shape[1:])
    seg = seg - seg.mean(axis=1, keepdims=True)
    win = signal.get_window("hann", m).astype(np.float32).reshape(m, *([1] * (y.ndim - 1)))
    f = sfft.rfftfreq(m)
    sel = (f >= band[0]) & (f <= band[1])
    power = np.abs(sfft.rfft(seg * win, axis=1)[:, sel]) ** 2
    density = 2 * power.mean(axis=(0, 1)) / float((win**2).sum())
    return np.sqrt(density / 2).astype(np.float32)


def ar_coefficients(y: np.ndarray, p: int, sn: float, add_lag: int = 20) -> np.ndarray:
    """Autoregressive coefficients g of a calcium trace.

    Parameters
    ----------
    y : numpy.ndarray
        float (frames,).
    p : {1, 2}
        AR order.
    sn : float
        Noise standard deviation (:func:`noise_sn`), removed from the lag-0 autocovariance.
    add_lag : int
        Extra lags in the least-squares Yule-Walker fit.

    Returns
    -------
    numpy.ndarray
        float64 (p,): g. A stable model (roots inside the unit circle, decay in (0, 1)) is
        enforced: an unstable AR(2) fit falls back to AR(1) with g_2 = 0, and g_1 is clipped to
        [0, 0.999].
    """
    y = np.asarray(y, np.float64)
    y = y - y.mean()
    n = len(y)
    lags = min(p + add_lag, n - 1)
    if lags < p:
        return np.zeros(p)
    # the autocovariance at lags 0..lags only: O(frames x lags) (np.correlate's full mode is O(frames^2):
    # 0.5 s per trace at 36,000 frames, most of CNMF's temporal update on a 20-minute session)
    full = np.array([y[: n - k] @ y[k:] for k in range(lags + 1)]) / n
    full[0] -= sn**2
    rows = np.array([[full[abs(k - i)] for i in range(1, p + 1)] for k in range(1, lags + 1)])
    g = np.linalg.lstsq(rows, full[1: lags + 1], rcond=None)[0]
    if p == 2:
        roots = np.roots([1, -g[0], -g[1]])
        if not (np.all(np.abs(roots) < 1) and np.all(np.isreal(roots)) and np.all(np.real(roots) > 0)):
            return np.array([ar_coefficients(y, 1, sn, add_lag)[0], 0.0])
    g[0] = min(max(g[0], 0.0), 0.999)
    return g


def oasis_ar1(y: np.ndarray, g: float, lam: float) -> np.ndarray:
    """Exact solution of the AR(1) problem without baseline, by pooling adjacent violators.

    Solves ``minimize 1/2 ||y - c||^2 + lam * sum_{t >= 1} (c_t - g c_{t-1})`` subject to
    ``c_t - g c_{t-1} >= 0`` and ``c >= 0`` (the first frame unpenalized), as in OASIS (Friedrich
    et al. 2017): the penalty is linear in c, so it shifts y, and the constrained least-squares
    problem is solved by merging pools of frames whose values decay by g.

    Parameters
    ----------
    y : numpy.ndarray
        float (frames,).
    g : float
        AR(1) coefficient in [0, 1).
    lam : float
        Sparsity penalty (same units as y).

    Returns
    -------
    numpy.ndarray
        float64 (frames,): c.
    """
    return _pools(y, g, lam)[0]


def _pools(y: np.ndarray, g: float, lam: float) -> tuple[np.ndarray, float]:
    """:func:`oasis_ar1`'s c, and ``sum_t dc_t/dy`` along a constant shift of y for the pools found
    (c is linear in a shift of y while the pools stay the same: the baseline search's slope)."""
    y = np.ascontiguousarray(y, np.float64)
    n = len(y)
    if n == 0:
        return np.zeros(0), 0.0
    shift = np.full(n, lam * (1 - g))  # d/dc of the penalty
    shift[0] = -lam * g
    shift[-1] = lam if n > 1 else 0.0
    return _pool_kernel(y - shift, float(g))


@numba.njit(cache=True, nogil=True)
def _pool_kernel(z: np.ndarray, g: float) -> tuple:
    """Pool-adjacent-violators for AR(1) on the penalty-shifted trace z (compiled: the loop over
    frames is sequential by nature). Pools are kept on a stack: value v, weight w = sum g^2k,
    u = sum g^k, first frame t and length l."""
    n = len(z)
    gl = np.empty(2 * n + 1)  # g^k
    gl[0] = 1.0
    for k in range(1, 2 * n + 1):
        gl[k] = gl[k - 1] * g
    vs = np.empty(n)
    ws = np.empty(n)
    us = np.empty(n)
    ts = np.empty(n, np.int64)
    ls = np.empty(n, np.int64)
    top = 0
    for t in range(n):
        v, w, u, length = z[t], 1.0, 1.0, 1
        while top > 0:
            lp = ls[top - 1]
            if vs[top - 1] * gl[lp] <= v:  # no violation: the previous pool decays below v
                break
            top -= 1
            wp, glp, g2 = ws[top], gl[lp], gl[2 * lp]
            v = (wp * vs[top] + glp * w * v) / (wp + g2 * w)
            w = wp + g2 * w
            u = us[top] + glp * u
            length += lp
        vs[top], ws[top], us[top], ts[top], ls[top] = v, w, u, t - length + 1, length
        top += 1
    c = np.zeros(n)
    slope = 0.0
    for i in range(top):
        if vs[i] > 0:
            for k in range(ls[i]):
                c[ts[i] + k] = vs[i] * gl[k]
            slope += us[i] * us[i] / ws[i]
    return c, slope


@dataclass
class Deconvolved:
    """One trace's deconvolution.

    Attributes
    ----------
    c : numpy.ndarray
        float32 (frames,): calcium concentration (the denoised trace, baseline removed).
    s : numpy.ndarray
        float32 (frames,): deconvolved activity (spikes); 0 in the first p frames.
    b0 : float
        Baseline, trace units.
    c0 : float
        Initial concentration: c at the first frame, trace units.
    g : numpy.ndarray
        float64 (p,): AR coefficients.
    sn : float
        Noise standard deviation, trace units.
    """

    c: np.ndarray
    s: np.ndarray
    b0: float
    c0: float
    g: np.ndarray
    sn: float


def _kernel_norm(g: np.ndarray, n: int = 5000) -> float:
    """L2 norm of the AR model's impulse response (1 / sqrt(1 - g^2) for AR(1)): the noise of a
    residual filtered by the kernel is ``sn`` times this, so a penalty in these units does not
    depend on the indicator's decay time."""
    from scipy import signal
    impulse = np.zeros(n)
    impulse[0] = 1.0
    h = signal.lfilter([1.0], np.concatenate([[1.0], -np.asarray(g, np.float64)]), impulse)
    return float(np.sqrt(np.sum(h**2)))


def _order(g: np.ndarray) -> np.ndarray:
    """The AR coefficients the model uses: an AR(2) whose second coefficient is 0 is an AR(1)."""
    g = np.asarray(g, np.float64)
    return g if len(g) == 2 and g[1] != 0 else g[:1]


def spikes(C: np.ndarray, g: np.ndarray, sn: np.ndarray) -> np.ndarray:
    """Deconvolved activity S of traces from their AR model: ``s_t = c_t - sum_i g_i c_(t-i)``, 0 in the
    first p frames and where under ``SPIKE_FLOOR * sn`` (what :func:`deconvolve` returns as ``s``).

    Parameters
    ----------
    C : numpy.ndarray
        float (units, frames): denoised traces (:func:`deconvolve`'s ``c``, baseline removed).
    g : numpy.ndarray
        float (units, p): AR coefficients, p 1 or 2 (a 0 second coefficient: AR(1)).
    sn : numpy.ndarray
        float (units,): noise standard deviations, the traces' units.

    Returns
    -------
    numpy.ndarray
        float32 (units, frames).
    """
    C = np.asarray(C)
    out = np.empty(C.shape, np.float32)
    for i, c in enumerate(C):  # a row at a time: a float64 copy of C would grow with the recording
        out[i] = _spikes(np.asarray(c, np.float64), _order(g[i]), SPIKE_FLOOR * float(sn[i]))
    return out


def _spikes(c: np.ndarray, g: np.ndarray, floor: float) -> np.ndarray:
    """s = G c, with values under ``floor`` set to 0 (inside a pool s is 0 up to rounding; an
    interior-point solver leaves small positive values everywhere)."""
    s = c.copy()
    for i, gi in enumerate(g, start=1):
        s[i:] -= gi * c[:-i]
    s[: len(g)] = 0
    s[s < floor] = 0
    return s


def _solve_cvxpy(y: np.ndarray, g: np.ndarray, lam: float) -> tuple[np.ndarray, float]:
    import cvxpy as cp

    n, p = len(y), len(g)
    c = cp.Variable(n)
    b0 = cp.Variable()
    s = c[p:] - sum(g[i] * c[p - 1 - i: n - 1 - i] for i in range(p))
    problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(y - b0 - c) + lam * cp.sum(s)), [s >= 0, c >= 0])
    try:
        problem.solve(solver=cp.CLARABEL)
    except cp.error.SolverError:
        problem.solve(solver=cp.SCS)
    if c.value is None:
        raise RuntimeError(f"CVXPY could not solve the deconvolution ({problem.status})")
    return np.maximum(np.asarray(c.value), 0), float(b0.value)


def _solve_oasis(y: np.ndarray, g: float, lam: float, tol: float,
                 b0: Optional[float] = None) -> tuple[np.ndarray, float]:
    """AR(1) with a free baseline: b0 is the root of h(b0) = sum(y - b0 - c(b0)), the derivative of the
    convex objective minimized over c (non-increasing, piecewise linear in b0). Newton steps with the
    exact local slope (c is linear in b0 while the pools stay the same), kept inside a bracket:
    usually 2-4 solves, from ``b0`` (a previous estimate) or the 10th percentile of y."""
    n = len(y)
    spread = max(float(np.ptp(y)), 1e-12)
    lo, hi = -np.inf, float(np.max(y)) + lam * g  # at hi every shifted value is <= 0: c = 0, h < 0
    b = float(np.percentile(y, 10)) if b0 is None or not np.isfinite(b0) else min(float(b0), hi)
    c = np.zeros(n)
    for _ in range(60):
        c, dsum = _pools(y - b, g, lam)
        f = float(np.sum(y - b - c))
        if abs(f) <= tol * spread * n**0.5:
            break
        if f > 0:
            lo = b
        else:
            hi = b
        slope = n - dsum
        step = b + f / slope if slope > 1e-12 else np.nan
        if lo < step < hi:
            new = step
        elif np.isfinite(lo):
            new = 0.5 * (lo + hi)
        else:
            new = b - spread  # no lower end yet: step down
        if abs(new - b) <= tol * spread:
            b = new
            c = _pools(y - b, g, lam)[0]
            break
        b = new
    return c, b


def deconvolve(y: np.ndarray, p: int = 1, sparse_penal: float = 1.0, backend: Literal["oasis", "cvxpy"] = "oasis",
               g: np.ndarray | None = None, sn: float | None = None, add_lag: int = 20,
               noise_band: tuple[float, float] = (0.25, 0.5), rescale: bool = True, tol: float = 1e-5) -> Deconvolved:
    """Sparse non-negative deconvolution of one trace (see the module docstring for the problem).

    Parameters
    ----------
    y : numpy.ndarray
        float (frames,): a unit's trace (YrA in CNMF).
    p : {1, 2}
        AR order.
    sparse_penal : float
        Sparsity penalty in units of the kernel-filtered noise: lam = sparse_penal * sn * ||h||.
    backend : {"oasis", "cvxpy"}
        Solver; ``"oasis"`` with p = 2 uses CVXPY.
    g : numpy.ndarray, optional
        AR coefficients (p,); estimated with :func:`ar_coefficients` when None.
    sn : float, optional
        Noise standard deviation; estimated with :func:`noise_sn` when None.
    add_lag : int
        Extra autocovariance lags for the AR fit.
    noise_band : (float, float)
        Band for the noise estimate, cycles per frame.
    rescale : bool
        Multiply c and s by the least-squares amplitude of c in y - b0 (undoes the L1 shrinkage).
    tol : float
        Baseline convergence of the OASIS backend, relative to the trace's standard deviation.

    Returns
    -------
    Deconvolved

    Raises
    ------
    ValueError
        If ``p`` is not 1 or 2, the backend is unknown, or y holds non-finite values.
    """
    if p not in (1, 2):
        raise ValueError(f"p must be 1 or 2, not {p}")
    if backend not in ("oasis", "cvxpy"):
        raise ValueError(f"unknown deconvolution backend {backend!r}: use 'oasis' or 'cvxpy'")
    y = np.asarray(y, np.float64)
    if not np.all(np.isfinite(y)):
        raise ValueError("the trace holds NaN or infinite values")
    if sn is None:
        sn = float(noise_sn(y, noise_band))
    if g is None:
        g = ar_coefficients(y, p, sn, add_lag)
    g = np.asarray(g, np.float64)
    if np.ptp(y) == 0:
        z = np.zeros(len(y), np.float32)
        return Deconvolved(z, z.copy(), float(y[0]) if len(y) else 0.0, 0.0, g, float(sn))
    lam = sparse_penal * sn * _kernel_norm(g)
    if backend == "oasis" and (p == 1 or g[1] == 0):
        c, b0 = _solve_oasis(y, float(g[0]), lam, tol)
    else:
        c, b0 = _solve_cvxpy(y, _order(g), lam)
    if rescale and c.any():
        alpha = float(np.dot(y - b0, c) / np.dot(c, c))
        if alpha > 0:
            c = c * alpha
            b0 = float(np.mean(y - c))
    s = _spikes(c, _order(g), floor=SPIKE_FLOOR * sn)
    return Deconvolved(c.astype(np.float32), s.astype(np.float32), b0, float(c[0]), g, float(sn))

