"""core.motion: shift accuracy on simulated and real data, piecewise vs rigid, summaries, bad input, memory."""

from __future__ import annotations

import tracemalloc

import cv2
import numpy as np
import pytest
import zarr
from conftest import shared_data

from scopeline import executor
from scopeline.core import io, motion
from scopeline.core import preprocess as pp
from scopeline.core import simulate as sim


def _rmse(est: np.ndarray, true: np.ndarray) -> float:
    """RMSE after removing the constant offset between the template and the simulator's reference."""
    d = est - true
    d = d - np.median(d, axis=0)
    return float(np.sqrt((d**2).sum(axis=-1).mean()))


@pytest.fixture(scope="module")
def sims(tmp_path_factory):
    made = {}

    def get(level: float, **kw):
        key = (level, tuple(sorted(kw.items())))
        if key not in made:
            out = tmp_path_factory.mktemp(f"sim_{level}")
            p = sim.SimulationParams(height=256, width=256, n_frames=500, n_cells=60, signal_level=level, seed=7, **kw)
            sim.simulate(out, p)
            made[key] = out
        return made[key]

    return get


@pytest.mark.parametrize("level", [0.6, 1.4])
def test_rigid_shift_rmse_below_0_1_px(sims, level):
    """Simulator at the measured real sensor noise: RMSE < 0.1 px (Minian's own test accepts 0.25)."""
    out = sims(level)
    gt = sim.load_ground_truth(out)
    meta = io.read_metadata(io.discover(out)[0])
    res = motion.correct_motion(meta.movie(chunk_frames=100), motion.MotionParams())
    assert res.shape == (500, 256, 256) and res.corrupted == {}
    assert _rmse(res.shifts, gt["shifts"]) < 0.1


def test_piecewise_corrects_nonrigid_better_than_rigid(tmp_path):
    p = sim.SimulationParams(height=256, width=256, n_frames=240, n_cells=60, signal_level=1.0, seed=3, deform=3.0)
    sim.simulate(tmp_path, p)
    gt = sim.load_ground_truth(tmp_path)
    movie = io.read_metadata(io.discover(tmp_path)[0]).movie(chunk_frames=120)
    errors = {}
    for mode in ("rigid", "piecewise"):
        params = motion.MotionParams(registration=motion.RegistrationParams(mode=mode), block_frames=120,
                                     chunk_frames=120)
        res = motion.correct_motion(movie, params)
        boxes = motion.patch_boxes(256, 256, params.registration.patch_grid)
        centers = np.array([((y0 + y1) / 2, (x0 + x1) / 2) for y0, y1, x0, x1 in boxes])
        true = sim.true_displacement(gt, centers)
        est = res.patch_shifts if mode == "piecewise" else np.repeat(res.shifts[:, None], len(centers), 1)
        d = est - true
        d = d - np.median(d, axis=0, keepdims=True)
        errors[mode] = float(np.sqrt((d**2).sum(-1).mean()))
    assert errors["piecewise"] < 0.5 * errors["rigid"], errors


def test_real_ca1_near_zero_and_known_shift_recovered(tmp_path):
    """The CA1 movie is already registered: shifts stay within about 1 px; a known shift is recovered."""
    path = shared_data("ca1_miniscope_v3", "ca1_500x240x376_uint8.tif")
    raw = io.read_metadata(io.discover(path)[0], fps=15).movie().compute()
    params = motion.MotionParams(registration=motion.RegistrationParams(template_frames=100))
    base = motion.correct_motion(raw, params)
    centred = base.shifts - np.median(base.shifts, axis=0)
    assert np.abs(centred).max() < 1.1 and np.median(np.abs(centred)) < 0.3
    moved = raw.copy()
    for i in range(250, 500):
        moved[i] = cv2.warpAffine(raw[i], np.float32([[1, 0, -2.6], [0, 1, 3.3]]), (376, 240),
                                  flags=cv2.INTER_LANCZOS4, borderMode=cv2.BORDER_REFLECT)
    res = motion.correct_motion(moved, params)
    diff = res.shifts - base.shifts
    np.testing.assert_allclose(np.median(diff[250:], axis=0), [3.3, -2.6], atol=0.05)
    np.testing.assert_allclose(np.median(diff[:250], axis=0), [0, 0], atol=0.05)


def test_summary_images_show_cells(sims, tmp_path):
    out = sims(1.0)
    gt = sim.load_ground_truth(out)
    meta = io.read_metadata(io.discover(out)[0])
    stored = {}

    def create(shape, chunks, dtype):
        stored["z"] = zarr.open_array(str(tmp_path / "m.zarr"), mode="w", shape=shape, chunks=chunks, dtype=dtype)
        return stored["z"]

    res = motion.correct_motion(meta.movie(chunk_frames=100), motion.MotionParams(), create)
    assert stored["z"].shape == res.shape and stored["z"].dtype == np.float16
    offset = np.round(np.median(res.shifts - gt["shifts"], axis=0)).astype(int)
    centers = np.round(gt["centers"] - offset).astype(int)
    inside = (centers[:, 0] > 10) & (centers[:, 0] < 246) & (centers[:, 1] > 10) & (centers[:, 1] < 246)
    cy, cx = centers[inside].T
    rng = np.random.default_rng(0)
    far = gt["A"].sum(0) < 1e-3
    by, bx = np.nonzero(far)
    pick = rng.choice(len(by), 500, replace=False)
    for name in ("pnr", "max", "std"):
        img = res.summary[name]
        assert img.shape == (256, 256)
        assert np.median(img[cy, cx]) > 2 * np.median(img[by[pick], bx[pick]]), name
    corr = res.summary["correlation"]  # denoising correlates neighbouring noise: compare with its spread
    background = corr[by[pick], bx[pick]]
    assert np.median(corr[cy, cx]) > np.median(background) + 3 * background.std()
    # the stored movie is the corrected one: its mean image equals the summary mean
    np.testing.assert_allclose(np.asarray(stored["z"][:]).astype(np.float32).mean(0), res.summary["mean"], atol=0.05)


def test_drop_and_interpolate_corrupted(tmp_path):
    p = sim.SimulationParams(height=64, width=64, n_frames=150, n_cells=8, seed=4)
    sim.simulate(tmp_path, p, layout="tiff")
    movie = io.read_metadata(io.discover(tmp_path / "movie.tif")[0]).movie().compute()
    movie[[20, 99]] = 0  # dropped to black
    movie[60, 30:34] = 255  # broken rows
    params = motion.MotionParams(registration=motion.RegistrationParams(template_frames=50), block_frames=50,
                                 chunk_frames=25)
    interp = motion.correct_motion(movie, params)
    assert interp.corrupted == {20: "black", 60: "rows/blocks", 99: "black"}
    assert interp.shape[0] == 150 and interp.frame_index.tolist() == list(range(150))
    dropping = params.model_copy(deep=True)
    dropping.preprocess.corruption.action = "drop"
    stored = {}

    def create(shape, chunks, dtype, key):
        stored[key] = zarr.open_array(str(tmp_path / f"{key}.zarr"), mode="w", shape=shape, chunks=chunks, dtype=dtype)
        return stored[key]

    interp = motion.correct_motion(movie, params, lambda *a: create(*a, "interp"))
    dropped = motion.correct_motion(movie, dropping, lambda *a: create(*a, "drop"))
    assert dropped.shape[0] == 147 and len(dropped.shifts) == 147
    assert not {20, 60, 99} & set(dropped.frame_index.tolist())
    # the kept frames land at their compacted positions, equal to the interpolating run's
    keep = np.setdiff1d(np.arange(150), [20, 60, 99])
    np.testing.assert_array_equal(np.asarray(stored["drop"][:]), np.asarray(stored["interp"][:])[keep])


def test_temporal_and_spatial_downsampling(tmp_path):
    p = sim.SimulationParams(height=128, width=128, n_frames=240, n_cells=20, seed=5)
    sim.simulate(tmp_path, p, layout="tiff")
    movie = io.read_metadata(io.discover(tmp_path / "movie.tif")[0]).movie()
    params = motion.MotionParams(block_frames=60, chunk_frames=30)
    params.preprocess.temporal_downsample = 2
    params.preprocess.spatial_downsample = 2
    params.registration.template_frames = 50
    res = motion.correct_motion(movie, params)
    assert res.shape == (120, 64, 64) and res.frame_index[:3].tolist() == [0, 2, 4]
    gt = sim.load_ground_truth(tmp_path)
    pair_mean = (gt["shifts"][0::2] + gt["shifts"][1::2]) / 2  # each output frame averages two
    # shifts are in downsampled pixels: forgetting the factor 2 would leave errors of several pixels
    assert _rmse(res.shifts * 2, pair_mean) < 1.0


def test_black_block_does_not_erase_glow(tmp_path):
    """A sampled block made only of dropped-to-black frames must not pull the glow minimum to 0."""
    p = sim.SimulationParams(height=64, width=64, n_frames=250, n_cells=8, seed=4)
    sim.simulate(tmp_path, p, layout="tiff")
    movie = io.read_metadata(io.discover(tmp_path / "movie.tif")[0]).movie().compute()
    movie[240:] = 0  # the last block (10 frames) is black
    params = motion.MotionParams(registration=motion.RegistrationParams(template_frames=50), block_frames=60,
                                 chunk_frames=30, glow_samples=0,
                                 preprocess=pp.PreprocessParams(remove_glow=True, glow_sigma=0))
    res = motion.correct_motion(movie, params)
    assert sorted(res.corrupted) == list(range(240, 250))
    np.testing.assert_array_equal(res.glow, movie[:240].min(axis=0))


def test_search_window_never_wraps():
    """A shift of +12 px on a 32-px frame with max_shift 20 must not come back as -20."""
    rng = np.random.default_rng(1)
    img = cv2.GaussianBlur(rng.random((32, 32)).astype(np.float32), (0, 0), 1.5)
    moved = np.roll(img, 12, axis=1)
    filt = motion.Filter((32, 32), 0.5, 3.0)
    dy, dx = motion.register(filt.spectrum(filt.highpass(moved)), np.conj(filt.spectrum(filt.highpass(img))),
                             filt, 20, 1)
    assert abs(dx) <= 15 and dy == 0


def test_constant_movie_refused():
    with pytest.raises(motion.MotionError, match="constant movie"):
        motion.correct_motion(np.full((300, 32, 32), 7, np.uint8), motion.MotionParams())


def test_recording_shorter_than_template_refused():
    with pytest.raises(motion.MotionError, match="fewer than the template window of 200 frames"):
        motion.correct_motion(np.zeros((150, 32, 32), np.uint8), motion.MotionParams())


def test_nan_refused():
    movie = np.random.default_rng(0).random((250, 32, 32)).astype(np.float32)
    movie[3, 4, 5] = np.nan
    with pytest.raises(motion.MotionError, match="NaN"):
        motion.correct_motion(movie, motion.MotionParams())


def test_memory_flat_in_frames(tmp_path):
    """Python-allocated peak of the motion stage on 400 and 1,600 frames (96 x 96): it does not grow
    with the frames, and stays far below the movie. A first, unmeasured run takes the one-time
    allocations (imports, caches)."""
    # the raw blocks kept from the glow sample (up to glow_samples frames) are decoded once and
    # reused: at 400 frames the default sample would be the whole movie, so both lengths sample 200
    params = motion.MotionParams(registration=motion.RegistrationParams(template_frames=100), glow_samples=200)
    peaks = {}
    for run, n in enumerate((400, 400, 1600)):
        p = sim.SimulationParams(height=96, width=96, n_frames=n, n_cells=10, seed=6, frames_per_file=400)
        if not (tmp_path / str(n)).exists():
            sim.simulate(tmp_path / str(n), p)
        movie = io.read_metadata(io.discover(tmp_path / str(n))[0]).movie(chunk_frames=100)

        def create(shape, chunks, dtype, run=run):
            return zarr.open_array(str(tmp_path / f"out{run}.zarr"), mode="w", shape=shape, chunks=chunks, dtype=dtype)

        tracemalloc.start()
        motion.correct_motion(movie, params, create)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    frame = 96 * 96 * 4  # bytes of a float32 frame
    # 1,200 more frames add a little bookkeeping per block (dask's task records: ~30 kB), not frames:
    # holding even the added frames as uint8 would add 11 MB
    assert peaks[1600] - peaks[400] < 0.1 * 1200 * frame, peaks
    assert peaks[1600] < 0.25 * 1600 * frame, peaks


def test_params_round_trip_and_validation():
    p = motion.PRESETS["minian"]
    assert motion.MotionParams.model_validate_json(p.canonical_json()) == p
    with pytest.raises(ValueError, match="filter_low"):
        motion.RegistrationParams(filter_low=5, filter_high=3)
    with pytest.raises(ValueError, match="block_frames"):
        motion.MotionParams(block_frames=150, chunk_frames=100)


def test_register_subpixel_exact():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:128, 0:128]
    img = np.zeros((128, 128), np.float32)
    for y, x in rng.uniform(10, 118, (30, 2)):
        img += np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 8).astype(np.float32)
    moved = cv2.warpAffine(img, np.float32([[1, 0, 3.3], [0, 1, -2.6]]), (128, 128), flags=cv2.INTER_LANCZOS4)
    filt = motion.Filter((128, 128), 1.0, 4.0)
    tconj = np.conj(filt.spectrum(filt.highpass(img)))
    dy, dx = motion.register(filt.spectrum(filt.highpass(moved)), tconj, filt, 20, 20)
    assert (dy, dx) == pytest.approx((-2.6, 3.3), abs=0.06)
    # the border taper keeps small shifts from being pulled towards zero
    small = cv2.warpAffine(img, np.float32([[1, 0, 0.4], [0, 1, 0.25]]), (128, 128), flags=cv2.INTER_LANCZOS4)
    assert motion.register(filt.spectrum(filt.highpass(small)), tconj, filt, 20, 20) == pytest.approx((0.25, 0.4), abs=0.06)


def _by_scheduler(tmp_path, schedulers) -> dict:
    """Motion correction of one small simulated recording on each scheduler: scheduler -> (result, movie)."""
    from scopeline.pipeline._objects import create_zarr

    p = sim.SimulationParams(height=64, width=64, n_frames=240, n_cells=8, seed=9, frames_per_file=120)
    sim.simulate(tmp_path / "rec", p)
    movie = io.read_metadata(io.discover(tmp_path / "rec")[0]).movie(chunk_frames=60)
    params = motion.MotionParams(registration=motion.RegistrationParams(template_frames=60), block_frames=60,
                                 chunk_frames=30)
    results = {}
    for k, scheduler in enumerate(schedulers):
        out = str(tmp_path / f"{k}.zarr")
        res = motion.correct_motion(movie, params, lambda s, c, d, out=out: create_zarr(out, s, c, d),
                                    scheduler=scheduler)
        results[scheduler] = (res, np.asarray(zarr.open_array(out, mode="r")[:]))
    return results


def test_worker_processes_match_threads(tmp_path):
    """Blocks on dask.distributed worker processes give the same result, and their writes land."""
    results = _by_scheduler(tmp_path, ("threads", "processes"))
    (rt, zt), (rp, zp) = results["threads"], results["processes"]
    np.testing.assert_array_equal(rt.shifts, rp.shifts)
    np.testing.assert_array_equal(zt, zp)
    np.testing.assert_allclose(rt.summary["correlation"], rp.summary["correlation"], atol=1e-5)
    assert np.abs(zp.astype(np.float32)).sum() > 0


def test_block_order_runs_per_thread():
    """Blocks are handed out as one contiguous run per thread, interleaved: every block once, and the
    block after each one (in its run) comes exactly one round later."""
    starts = list(range(0, 2300, 100))
    for n in (1, 2, 3, 30):
        order = executor.runs(starts, n)
        assert sorted(order) == starts
        k = min(n, len(starts))
        size = -(-len(starts) // k)
        runs = [starts[r * size:(r + 1) * size] for r in range(k)]
        for run in runs:
            pos = [order.index(a) for a in run]
            assert pos == sorted(pos)
    assert executor.runs(starts, 2)[:4] == [0, 1200, 100, 1300]


def test_highpass_of_8_bit_frames_and_small_medians():
    """The 8-bit high pass (box filters in 8 bits) stays within the rounding of its low-passed copy
    (two roundings to whole units: under 1 unit, 0.29 sd) of the float one; the confidence's median
    by partition is numpy's, for odd and even sizes."""
    filt = motion.Filter((96, 128), 1.0, 4.0)
    frame = np.random.default_rng(0).integers(0, 256, (96, 128)).astype(np.uint8)
    fast, slow = filt.highpass(frame), filt.highpass(frame.astype(np.float32))
    assert fast.dtype == np.float32 and np.abs(fast - slow).max() < 1.0 and (fast - slow).std() < 0.35
    for n in (11, 12, 841):
        x = np.random.default_rng(n).normal(size=n).astype(np.float32)
        assert motion._median(x) == pytest.approx(float(np.median(x)), abs=1e-6)


def test_an_external_dask_scheduler_and_worker_give_the_same_result(tmp_path):
    """The documented cluster set-up, on this machine: a `dask scheduler` and a `dask worker` started apart
    (as dask-jobqueue or Kubernetes would), scopeline given the scheduler's address: the same result as
    local threads, written by the remote worker."""
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    from distributed import Client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    dask_cli = str(Path(sys.executable).with_name("dask"))
    procs = [subprocess.Popen([dask_cli, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        procs.append(subprocess.Popen([dask_cli, "worker", address, "--nworkers", "1", "--nthreads", "2",
                                       "--no-dashboard", "--local-directory", str(tmp_path / "dask")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 60
        while True:
            try:
                with Client(address, timeout=5) as c:
                    if c.scheduler_info()["workers"]:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the dask worker did not join its scheduler"
            time.sleep(0.5)
        results = _by_scheduler(tmp_path, ("threads", address))
        (rt, zt), (rx, zx) = results["threads"], results[address]
        np.testing.assert_array_equal(rt.shifts, rx.shifts)
        np.testing.assert_array_equal(zt, zx)
        assert np.abs(zx.astype(np.float32)).sum() > 0
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(timeout=30)


def test_template_map_computes_at_most_threads_results_ahead_and_drain_frees_the_list():
    started, got = [], []

    def square(i):
        started.append(i)
        return i * i

    for r in motion._bounded_map(2)(square, range(20)):
        got.append(r)
        assert len(started) - len(got) <= 2  # a thread pool's map would have computed all 20 by now
    assert got == [i * i for i in range(20)]
    items = [np.zeros(3), np.ones(3)]
    drained = motion._drain(items)
    assert next(drained)[0] == 0 and len(items) == 1  # the list no longer holds what was handed out
    assert next(drained)[0] == 1 and items == []
