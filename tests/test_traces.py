"""dF/F and events (scopeline.core.traces): exact on constructed units, and against the simulator's ground
truth through motion correction, initialization and CNMF."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import process_simulated

from scopeline.core import io, quality, traces
from scopeline.core import simulate as sim
from scopeline.core.footprints import Footprints


def _one_unit(C: np.ndarray, rest: float, black: float):
    """A Gaussian footprint (peak 1) in a 32 x 32 frame whose raw mean is ``rest`` + black + the unit's mean."""
    yy, xx = np.mgrid[:11, :11]
    a = np.exp(-((yy - 5) ** 2 + (xx - 5) ** 2) / 8.0).astype(np.float32)
    A = Footprints(a[None], [(10, 12)], (32, 32))
    mean_raw = np.full((32, 32), rest + black, np.float64)
    mean_raw[10:21, 12:23] += a * C.mean()
    return A, mean_raw, float((a.astype(np.float64) ** 2).sum() / a.sum())


def test_cnmf_baseline_is_the_weighted_rise_over_the_resting_fluorescence():
    C = np.zeros(200)
    C[50:60] = 30.0
    A, mean_raw, k = _one_unit(C, rest=40.0, black=12.0)
    f0 = traces.resting_fluorescence(A, C[None], mean_raw, black=12.0)
    np.testing.assert_allclose(f0, [40.0], rtol=1e-9)
    d = traces.dff(A, C[None], f0)
    np.testing.assert_allclose(d[0], k * C / 40.0, rtol=1e-6)
    # an unknown black level (0) gives a larger F0: dF/F smaller by the same factor for every unit
    unknown_black = traces.resting_fluorescence(A, C[None], mean_raw)
    np.testing.assert_allclose(traces.dff(A, C[None], unknown_black)[0], k * C / 52.0, rtol=1e-6)
    # a unit on the dark outside the lens has no resting fluorescence: NaN, not a huge dF/F
    dark = traces.resting_fluorescence(A, C[None], mean_raw, black=200.0)
    assert np.isnan(dark).all() and np.isnan(traces.dff(A, C[None], dark)).all()


def test_percentile_baseline_follows_a_slow_drift():
    n = 3000
    C = np.zeros(n)
    C[::300] = 20.0  # sparse transients
    C = np.convolve(C, np.exp(-np.arange(40) / 8.0))[:n]
    A, mean_raw, k = _one_unit(C, rest=50.0, black=0.0)
    drift = np.linspace(0, -15, n)  # bleaching under the footprint, through CNMF's background
    b = np.zeros((32, 32))
    b[10:21, 12:23] = 1.0
    f0 = traces.resting_fluorescence(A, C[None], mean_raw)
    d = traces.dff(A, C[None], f0, baseline="percentile", b=b, f=drift, fps=20.0, window_s=10.0)[0]
    quiet = C < 1e-3
    assert np.abs(d[quiet]).max() < 0.02  # the baseline follows the drift: rest stays at 0
    constant = traces.dff(A, C[None], f0)[0]
    assert np.corrcoef(d, constant)[0, 1] > 0.99
    with pytest.raises(ValueError, match="baseline must be one of cnmf, percentile"):
        traces.dff(A, C[None], f0, baseline="median")
    with pytest.raises(ValueError, match="f has 10 frames, C 3000"):
        traces.dff(A, C[None], f0, baseline="percentile", b=b, f=np.zeros(10))
    with pytest.raises(ValueError, match="A has 1 units, C 1, f0 2"):
        traces.dff(A, C[None], np.ones(2))


def test_events_are_runs_of_activity_above_the_noise():
    S = np.zeros((2, 50))
    S[0, [5, 6]] = [2.0, 1.5]  # one event of 3.5 from frame 5
    S[0, 20] = 0.5  # below 3 x sn = 0.9: not an event
    S[0, 30] = 4.0
    S[1, 40:43] = 1.0
    ev = traces.events(S, sn=np.array([0.3, 0.5]), threshold=3.0, f0=np.array([10.0, 20.0]))
    assert ev["unit"].tolist() == [0, 0, 1] and ev["onset"].tolist() == [5, 30, 40]
    assert ev["frames"].tolist() == [2, 1, 3]
    np.testing.assert_allclose(ev["amplitude"], [3.5, 4.0, 3.0])
    np.testing.assert_allclose(ev["amplitude_dff"], [0.35, 0.4, 0.15])
    assert len(traces.events(np.zeros((3, 10)), np.ones(3))["onset"]) == 0
    with pytest.raises(ValueError, match="S has 2 units, sn 1"):
        traces.events(S, np.ones(1))


def _onset_scores(onsets_by_unit: list, spikes_by_unit: list, tolerance: int = 2) -> tuple[float, float]:
    """Precision and recall of event onsets against true spikes (spikes closer than ``tolerance`` frames to the
    one before are one event)."""
    tp_p = n_p = tp_r = n_r = 0
    for on, spikes in zip(onsets_by_unit, spikes_by_unit):
        true = spikes[np.r_[True, np.diff(spikes) > tolerance]] if len(spikes) else spikes
        n_p += len(on)
        tp_p += sum(bool(np.any(np.abs(true - o) <= tolerance)) for o in on)
        n_r += len(true)
        tp_r += sum(bool(np.any(np.abs(on - s) <= tolerance)) for s in true)
    return tp_p / max(n_p, 1), tp_r / max(n_r, 1)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """256 x 256 x 600 frames, 60 cells (test_cnmf's recording), through motion correction, initialization
    and CNMF."""
    out = tmp_path_factory.mktemp("traces_sim")
    sim.simulate(out, sim.SimulationParams(height=256, width=256, n_frames=600, n_cells=60, seed=1))
    res, _, units = process_simulated(out)
    return res, units, sim.load_ground_truth(out), io.read_metadata(io.discover(out)[0]).fps


def test_dff_and_events_of_simulated_units_match_the_truth(simulated):
    """dF/F against the true dF/F (the true calcium over the cell's constant resting fluorescence: the
    correlation is that of the traces), events against the true spikes within 2 frames."""
    res, units, gt, fps = simulated
    offset = -np.median(res.shifts - gt["shifts"], axis=0)
    ei, ti = quality.match_units(units.A.centroids(), gt["centers"] + offset, 4.0)
    assert len(ei) >= 50
    black = float(res.fov_info["dark"]) if res.fov_info.get("found") else 0.0
    f0 = traces.resting_fluorescence(units.A, units.C, res.mean_raw, black)
    for baseline in traces.BASELINES:
        d = traces.dff(units.A, units.C, f0, baseline, b=units.b, f=units.f, fps=fps)
        r = [np.corrcoef(d[i], gt["C"][t])[0, 1] for i, t in zip(ei, ti)]
        # measured: median 0.97 (cnmf) and 0.97 (percentile)
        print(f"dF/F ({baseline}): median r {np.median(r):.3f}")
        assert np.median(r) >= 0.95, (baseline, np.median(r))
        assert np.isfinite(d[ei]).all() and np.nanmedian(d[ei].max(axis=1)) > 0.02
    ev = traces.events(units.S, units.sn, 3.0, f0)
    precision, recall = _onset_scores([ev["onset"][ev["unit"] == i] for i in ei],
                                      [np.flatnonzero(gt["S"][t] > 0) for t in ti])
    print(f"events: precision {precision:.3f}, recall {recall:.3f}")
    assert precision >= 0.75 and recall >= 0.85, (precision, recall)
