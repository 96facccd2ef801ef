"""core.deconvolve: noise, AR coefficients, and the two backends solving the same problem."""

from __future__ import annotations

import numpy as np
import pytest

from scopeline.core import deconvolve as dc


def _trace(n=1500, g=0.9, rate=0.03, sd=0.3, b=5.0, c0=2.0, seed=0):
    rng = np.random.default_rng(seed)
    s = (rng.random(n) < rate) * rng.uniform(0.5, 2.0, n)
    c = np.zeros(n)
    c[0] = c0
    for t in range(1, n):
        c[t] = g * c[t - 1] + s[t]
    return b + c + rng.normal(0, sd, n), c, s


def test_noise_of_white_noise_and_many_traces():
    rng = np.random.default_rng(1)
    assert dc.noise_sn(rng.normal(0, 2.0, 4000)) == pytest.approx(2.0, rel=0.05)
    block = rng.normal(0, 0.5, (2048, 8, 9)).astype(np.float32)
    sn = dc.noise_sn(block, axis=0)
    assert sn.shape == (8, 9) and np.allclose(sn, 0.5, rtol=0.1)


def test_ar1_coefficient_recovered():
    y, _, _ = _trace(n=5000, g=0.9, sd=0.2)
    g = dc.ar_coefficients(y, 1, float(dc.noise_sn(y)))
    assert g[0] == pytest.approx(0.9, abs=0.03)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_backends_agree_on_the_same_problem(seed):
    """OASIS (exact active set, baseline by root finding) and CVXPY solve the same AR(1) problem."""
    y, c_true, s_true = _trace(seed=seed)
    sn = float(dc.noise_sn(y))
    g = dc.ar_coefficients(y, 1, sn)
    fast = dc.deconvolve(y, backend="oasis", g=g, sn=sn)
    ref = dc.deconvolve(y, backend="cvxpy", g=g, sn=sn)
    assert np.abs(fast.c - ref.c).max() / np.abs(ref.c).max() < 1e-3
    assert fast.b0 == pytest.approx(ref.b0, abs=1e-3)
    # and both recover the truth
    assert np.corrcoef(fast.c, c_true)[0, 1] > 0.95
    assert np.corrcoef(fast.s, s_true)[0, 1] > 0.7
    # the non-negative fit lifts quiet periods a little (by under one noise sd): b0 sits slightly low
    assert 5.0 - 0.3 < fast.b0 < 5.0 + 0.1 and fast.c0 == pytest.approx(2.0, abs=0.5)


def test_oasis_without_baseline_matches_a_brute_force_check():
    """The pooled solution satisfies the constraints and no feasible perturbation lowers the objective."""
    y, _, _ = _trace(n=300, seed=4)
    y = y - 5.0
    g, lam = 0.9, 0.3
    c = dc.oasis_ar1(y, g, lam)
    s = c[1:] - g * c[:-1]
    assert (c >= -1e-12).all() and (s >= -1e-9).all()

    def objective(x):
        return 0.5 * np.sum((y - x) ** 2) + lam * np.sum(x[1:] - g * x[:-1])

    rng = np.random.default_rng(0)
    base = objective(c)
    for _ in range(200):
        trial = c + rng.normal(0, 0.01, len(c)) * (rng.random(len(c)) < 0.05)
        if (trial >= 0).all() and (trial[1:] - g * trial[:-1] >= 0).all():
            assert objective(trial) >= base - 1e-9


def test_ar2_runs_through_cvxpy_and_models_the_rise():
    rng = np.random.default_rng(3)
    n = 1200
    s = (rng.random(n) < 0.02) * 1.0
    # double exponential: AR(2) with roots 0.9 and 0.5
    g1, g2 = 0.9 + 0.5, -0.9 * 0.5
    c = np.zeros(n)
    for t in range(2, n):
        c[t] = g1 * c[t - 1] + g2 * c[t - 2] + s[t]
    y = 1.0 + c + rng.normal(0, 0.1, n)
    res = dc.deconvolve(y, p=2, backend="oasis")
    assert res.g.shape == (2,) and res.g[1] != 0
    assert np.corrcoef(res.c, c)[0, 1] > 0.97


def test_bad_input():
    with pytest.raises(ValueError, match="p must be 1 or 2"):
        dc.deconvolve(np.ones(10), p=3)
    with pytest.raises(ValueError, match="NaN or infinite"):
        dc.deconvolve(np.array([1.0, np.nan, 2.0] * 10))
    with pytest.raises(ValueError, match="unknown deconvolution backend"):
        dc.deconvolve(np.ones(10), backend="magic")
    flat = dc.deconvolve(np.full(100, 3.0))
    assert not flat.c.any() and not flat.s.any() and flat.b0 == 3.0


@pytest.mark.parametrize("p", [1, 2])
def test_spikes_of_c_and_g_are_the_deconvolutions_s(p):
    """spikes() rebuilds S from the stored C, g and sn (CNMF keeps no S while it works), AR(1) and AR(2),
    and an AR(2) whose second coefficient is 0 as an AR(1)."""
    rows = [dc.deconvolve(_trace(seed=seed)[0], p=p, backend="oasis" if p == 1 else "cvxpy") for seed in range(3)]
    C = np.stack([r.c for r in rows])
    g = np.stack([np.pad(r.g, (0, 2 - len(r.g))) for r in rows])  # as CNMF stores them: (units, 2)
    S = dc.spikes(C, g, np.array([r.sn for r in rows]))
    assert S.dtype == np.float32 and S.shape == C.shape
    for r, s in zip(rows, S):
        assert np.count_nonzero(r.s) > 20
        np.testing.assert_allclose(s, r.s, atol=1e-5 * float(r.s.max()))
