"""core.simulate: the ground truth is really in the pixels, and memory does not grow with frames."""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from scipy.signal import lfilter

from scopeline.core import io
from scopeline.core import simulate as sim


def test_params_json_round_trip_and_validation():
    p = sim.SimulationParams(n_frames=123, signal_level=0.6, seed=9)
    assert sim.SimulationParams.from_json(p.to_json()) == p
    with pytest.raises(ValueError, match=r"spike_prob=1\.5"):
        sim.SimulationParams(spike_prob=1.5)
    with pytest.raises(ValueError, match="tau_rise"):
        sim.SimulationParams(tau_rise=1.0, tau_decay=0.5)


def test_ground_truth_consistent(tmp_path):
    p = sim.SimulationParams(height=96, width=96, n_frames=300, n_cells=12, signal_level=0.6, seed=4,
                             chunk_frames=70)
    sim.simulate(tmp_path, p)
    gt = sim.load_ground_truth(tmp_path)
    assert gt["A"].shape == (12, 96, 96) and gt["C"].shape == gt["S"].shape == (12, 300)
    np.testing.assert_allclose(gt["A"].max(axis=(1, 2)), 1.0, atol=0.02)
    # C is S through the double-exponential kernel, scaled to movie units, across chunk borders
    gd, gr, peak = sim._kernel_filters(p)
    expected = (lfilter([1], [1, -gd], gt["S"], axis=1) - lfilter([1], [1, -gr], gt["S"], axis=1))
    np.testing.assert_allclose(gt["C"], expected * p.signal_level * p.cell_amplitude / peak, rtol=1e-4, atol=1e-4)
    assert 0.5 * p.spike_prob < gt["S"].mean() < 2 * p.spike_prob
    assert np.abs(gt["shifts"]).max() <= p.max_shift
    steps = np.diff(gt["shifts"], axis=0)
    assert steps.std() == pytest.approx(p.motion_sd, rel=0.2)


def test_motion_is_in_the_pixels(tmp_path):
    """One bright cell, no noise: its centroid in each frame follows its centre plus the shift."""
    p = sim.SimulationParams(height=64, width=64, n_frames=80, n_cells=1, spike_prob=0.3, cell_amplitude=150,
                             cell_sigma=3.0, cell_sigma_sd=0.0, n_background=0, vignette=0, noise_sd=0,
                             tissue_level=0, n_vessels=0, cell_baseline=0,
                             motion_sd=0.6, max_shift=6, timestamp_jitter=0, seed=5)
    sim.simulate(tmp_path, p, layout="tiff")
    gt = sim.load_ground_truth(tmp_path)
    movie = io.read_metadata(io.discover(tmp_path / "movie.tif")[0], fps=20).movie().compute().astype(float)
    signal = movie - p.baseline
    yy, xx = np.mgrid[0:64, 0:64]
    active = gt["C"][0] > 40
    assert active.sum() > 10
    mass = signal[active].clip(0).sum(axis=(1, 2))
    cy = (signal[active].clip(0) * yy).sum(axis=(1, 2)) / mass
    cx = (signal[active].clip(0) * xx).sum(axis=(1, 2)) / mass
    expected = gt["centers"][0] + gt["shifts"][active]
    err = np.hypot(cy - expected[:, 0], cx - expected[:, 1])
    assert np.median(err) < 0.3, err


def test_signal_level_scales_cells(tmp_path):
    maxima = []
    for level in (0.5, 1.5):
        p = sim.SimulationParams(height=48, width=48, n_frames=100, n_cells=4, signal_level=level, seed=1)
        sim.simulate(tmp_path / str(level), p)
        maxima.append(sim.load_ground_truth(tmp_path / str(level))["C"].max())
    assert maxima[1] == pytest.approx(3 * maxima[0], rel=1e-5)


def test_memory_flat_in_frames(tmp_path):
    peaks = {}
    for n in (200, 800):
        p = sim.SimulationParams(height=96, width=96, n_frames=n, n_cells=10, chunk_frames=50, seed=0)
        tracemalloc.start()
        sim.simulate(tmp_path / str(n), p)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks[800] < 1.25 * peaks[200], peaks


def test_multi_session_same_cells(tmp_path):
    """Sessions of one animal see the same world cells through views shifted, turned (up to 5 degrees) and
    bent: a shared cell's world position is the same from every session, and the true alignment of a
    session onto the first maps its cells onto the first's within the non-rigid field's amplitude."""
    from scopeline.core.registration import rotation_matrix

    p = sim.SimulationParams(height=64, width=64, n_frames=60, n_cells=30, seed=11)
    folders = sim.simulate_sessions(tmp_path, p, n_sessions=3, fov_shift=6, presence=0.8, max_rotation=5,
                                    deformation=0.8)
    assert [f.name for f in folders] == ["My_V4_Miniscope"] * 3
    truths = [sim.load_ground_truth(tmp_path / f"session_{k}") for k in (1, 2, 3)]
    offsets = {t["fov_offset"] for t in truths}
    assert len(offsets) == 3
    views = [t["view"] for t in truths]
    assert views[0].rotation == 0 and all(0 < abs(v.rotation) <= 5 for v in views[1:])
    common = set(truths[0]["cell_ids"]) & set(truths[1]["cell_ids"])
    assert len(common) >= 10
    assert set(truths[0]["cell_ids"]) != set(truths[1]["cell_ids"])  # some cells come and go
    at = lambda t, cid: t["centers"][list(t["cell_ids"]).index(cid)]  # noqa: E731
    theta, shift = sim.session_alignment(views[0], views[1])
    c = (np.array([64, 64]) - 1) / 2
    for cid in sorted(common):
        w0, w1 = (t["view"].to_world(at(t, cid), (64, 64)) for t in truths[:2])
        np.testing.assert_allclose(w0, w1, atol=1e-6)
        moved = (at(truths[1], cid) - c) @ rotation_matrix(theta).T + c + np.asarray(shift)
        assert np.hypot(*(moved - at(truths[0], cid))) <= 0.8 * np.sqrt(2) + 1e-6
    starts = [io.read_metadata(io.discover(f)[0]).start_time.day for f in folders]
    assert starts == [5, 6, 7]


def test_output_folder_must_be_empty(tmp_path):
    (tmp_path / "x").write_text("keep me")
    with pytest.raises(ValueError, match="not empty"):
        sim.simulate(tmp_path, sim.SimulationParams(n_frames=10))
    assert (tmp_path / "x").read_text() == "keep me"


def test_shift_bound_holds_for_long_steps(tmp_path):
    p = sim.SimulationParams(height=32, width=32, n_frames=200, n_cells=2, motion_sd=3.0, max_shift=1.0)
    sim.simulate(tmp_path, p)
    assert np.abs(sim.load_ground_truth(tmp_path)["shifts"]).max() <= 1.0


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "scopeline.cli", *map(str, args)], capture_output=True, text=True,
                          env=dict(os.environ), timeout=300)


def test_cli_simulates_realistic_recordings_and_named_artifacts(tmp_path):
    """`scopeline simulate --realistic` turns every artifact on at its measured strength; `--artifact`
    (repeatable) only the named ones; an unknown name is an error that lists the known ones."""
    small = ("--frames", 30, "--height", 48, "--width", 48, "--cells", 3)
    assert _cli("simulate", tmp_path / "real", *small, "--realistic").returncode == 0
    p = sim.load_ground_truth(tmp_path / "real")["params"]
    assert p.has_artifacts and p.line_noise_sd == 4.0 and p.lens_radius > 0 and p.noise_sd == 3.5
    assert _cli("simulate", tmp_path / "two", *small, "--artifact", "lens", "--artifact", "warmup").returncode == 0
    p = sim.load_ground_truth(tmp_path / "two")["params"]
    assert p.lens_radius > 0 and p.warmup_depth > 0 and p.line_noise_sd == 0 and p.hot_pixels == 0
    assert _cli("simulate", tmp_path / "plain", *small).returncode == 0
    plain = sim.load_ground_truth(tmp_path / "plain")["params"]
    assert not plain.has_artifacts and p.noise_sd == plain.noise_sd  # pixel noise is lowered only with line noise
    bad = _cli("simulate", tmp_path / "bad", "--artifact", "glare")
    assert bad.returncode == 1 and "unknown artifact" in bad.stderr + bad.stdout and "line_noise" in bad.stderr + bad.stdout

