"""core.preprocess: corrupted frames on real data, downsampling, glow, denoising, background."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import shared_data

from scopeline.core import io
from scopeline.core import preprocess as pp

WIRELESS_CORRUPTED = [7, 21, 23, 24, 32, 33, 34, 35]  # labels.yaml: rows 7,21,23,24,32,34; blocks 33,35


@pytest.mark.parametrize("block", [60, 20, 7])
def test_real_wireless_corrupted_frames_exactly(block):
    """Exactly the labelled frames are flagged, however the movie is cut into blocks."""
    path = shared_data("wireless_corrupted_frames", "wireless_corrupted.avi")
    movie = io.read_metadata(io.discover(path)[0]).movie().compute()  # uint8: the 8-bit scoring path
    parts = [pp.frame_scores(movie[a:a + block]) for a in range(0, len(movie), block)]
    scores = np.concatenate([p[0] for p in parts])
    means = np.concatenate([p[1] for p in parts])
    assert sorted(pp.flag_corrupted(scores, means, pp.CorruptionParams())) == WIRELESS_CORRUPTED


def test_scores_same_on_8bit_and_float_paths():
    path = shared_data("wireless_corrupted_frames", "wireless_corrupted.avi")
    movie = io.read_metadata(io.discover(path)[0]).movie().compute()
    s8, m8 = pp.frame_scores(movie)
    sf, mf = pp.frame_scores(movie.astype(np.float32))
    np.testing.assert_allclose(s8, sf, rtol=1e-5)
    np.testing.assert_allclose(m8, mf, rtol=1e-6)


def test_real_ca1_has_no_corrupted_frames():
    path = shared_data("ca1_miniscope_v3", "ca1_500x240x376_uint8.tif")
    movie = io.read_metadata(io.discover(path)[0], fps=15).movie().compute().astype(np.float32)
    scores, means = pp.frame_scores(movie)
    assert pp.flag_corrupted(scores, means, pp.CorruptionParams()) == {}


def test_black_frames_and_repair():
    rng = np.random.default_rng(0)
    block = (100 + rng.normal(0, 3, (12, 32, 32))).astype(np.float32)
    block[5] = 0  # dropped to black
    block[8, 10:14] = 255  # broken rows
    scores, means = pp.frame_scores(block)
    flags = pp.flag_corrupted(scores, means, pp.CorruptionParams())
    assert flags == {5: "black", 8: "rows/blocks"}
    bad = np.zeros(12, bool)
    bad[[5, 8]] = True
    fixed = pp.repair(block, bad)
    np.testing.assert_allclose(fixed[5], (block[4] + block[6]) / 2)
    np.testing.assert_allclose(fixed[8], (block[7] + block[9]) / 2)
    np.testing.assert_array_equal(fixed[~bad], block[~bad])


def test_a_block_dimmed_as_a_whole_is_not_black_but_a_dropout_inside_it_is():
    """Black is a frame that lost its light, not a stretch of the recording whose light fell slowly: a
    block at 40% of the movie's brightness keeps its frames; a dropped frame inside a bright block, or
    inside the dim one, is still black."""
    rng = np.random.default_rng(0)
    dim = (40 + rng.normal(0, 3, (12, 32, 32))).astype(np.float32)  # the movie's frames average 100
    dim[7] = 0
    scores, means = pp.frame_scores(dim)
    assert pp.flag_corrupted(scores, means, pp.CorruptionParams(), brightness=100.0) == {7: "black"}
    bright = (100 + rng.normal(0, 3, (12, 32, 32))).astype(np.float32)
    bright[3:6] = 30  # a three-frame dropout to near black
    scores, means = pp.frame_scores(bright)
    assert pp.flag_corrupted(scores, means, pp.CorruptionParams(), brightness=100.0) == {i: "black" for i in (3, 4, 5)}
    lost = np.full((6, 32, 32), 11.0, np.float32)  # a whole block at the sensor's black level (10)
    scores, means = pp.frame_scores(lost)
    assert pp.flag_corrupted(scores, means, pp.CorruptionParams(), brightness=100.0, black=10.0) == \
        {i: "black" for i in range(6)}
    assert pp.flag_corrupted(scores, means + 10, pp.CorruptionParams(), brightness=100.0, black=10.0) == {}


def test_crop_and_downsample():
    block = np.arange(4 * 6 * 8, dtype=np.float32).reshape(4, 6, 8)
    p = pp.PreprocessParams(crop=(1, 5, 2, 8), spatial_downsample=2, temporal_downsample=2)
    out = pp.crop_downsample(block, p)
    assert out.shape == (2, 2, 3) == pp.output_shape(4, 6, 8, p)
    np.testing.assert_allclose(out[0, 0, 0], block[0:2, 1:3, 2:4].mean())
    sub = pp.crop_downsample(block, p.model_copy(update={"downsample_method": "subset"}))
    assert sub[1, 1, 2] == block[2, 3, 6]
    with pytest.raises(ValueError, match="does not fit"):
        pp.output_shape(4, 6, 8, pp.PreprocessParams(crop=(0, 10, 0, 8)))


def test_invalid_params_name_the_field():
    with pytest.raises(ValueError, match="denoise_window"):
        pp.PreprocessParams(denoise="median", denoise_window=4)
    with pytest.raises(ValueError, match="crop"):
        pp.PreprocessParams(crop=(5, 2, 0, 3))


@pytest.mark.parametrize("method", ["median", "gaussian", "bilateral", "anisotropic"])
def test_denoise_reduces_noise(method):
    rng = np.random.default_rng(1)
    clean = np.zeros((64, 64), np.float32)
    clean[20:44, 20:44] = 50
    noisy = (clean + rng.normal(0, 5, clean.shape)).astype(np.float32)
    out = pp.denoise(noisy, method, 5)
    inner = (slice(24, 40), slice(24, 40))
    assert out[inner].std() < 0.6 * noisy[inner].std()


def test_median_large_window_exact_on_8bit():
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 200, (40, 40)).astype(np.float32)
    import scipy.ndimage as ndi

    np.testing.assert_array_equal(pp.denoise(frame, "median", 7)[5:-5, 5:-5],
                                  ndi.median_filter(frame, 7)[5:-5, 5:-5])


def test_tophat_keeps_cells_removes_background():
    yy, xx = np.mgrid[0:96, 0:96].astype(np.float32)
    background = 50 + 0.5 * xx  # smooth ramp
    cell = 30 * np.exp(-((yy - 48) ** 2 + (xx - 48) ** 2) / (2 * 3.0**2))
    out = pp.remove_background((background + cell).astype(np.float32), "tophat", 10)
    assert out[48, 48] == pytest.approx(30, abs=3)
    assert np.abs(out[10:30, 10:30]).max() < 1.0
    uni = pp.remove_background((background + cell).astype(np.float32), "uniform", 10)
    assert uni[48, 48] > 20 and np.abs(uni[10:30, 10:30]).max() < 1.0


def test_glow_removal_subtracts_minimum():
    block = np.stack([np.full((16, 16), v, np.float32) for v in (10, 12, 15)])
    block[:, 0, 0] += 40
    p = pp.PreprocessParams(remove_glow=True, denoise="none", background="none")
    out = np.stack([pp.preprocess_frame(f, p, block.min(axis=0)) for f in block])
    np.testing.assert_allclose(out[:, 3, 3], [0, 2, 5])
    np.testing.assert_allclose(out[:, 0, 0], [0, 2, 5])


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_smoothed_glow_keeps_the_vignette_and_drops_the_texture(dtype):
    """The glow is the smooth part of the minimum, never above it (no clipping after subtraction)."""
    yy, xx = np.mgrid[0:128, 0:128].astype(np.float32)
    vignette = 60 + 40 * np.exp(-((yy - 64) ** 2 + (xx - 64) ** 2) / (2 * 40.0**2))
    texture = np.where((xx.astype(int) % 16) < 2, -20, 0) + 15 * np.exp(-((yy - 30) ** 2 + (xx - 90) ** 2) / 8)
    minimum = (vignette + texture).astype(dtype)
    glow = pp.glow_image(minimum, 10.0)
    assert glow.dtype == minimum.dtype and (glow <= minimum).all()
    # what is left after subtraction: the texture plus a constant, not the vignette
    rest = minimum.astype(np.float32) - glow
    assert np.ptp(rest[texture == 0]) < 0.25 * np.ptp(vignette)
    assert pp.glow_image(minimum, 0) is minimum


@pytest.mark.parametrize("window,radius", [(3, 5), (7, 15)])
def test_8bit_path_equals_float_path(window, radius):
    """The fast uint8 path (glow, median, top-hat) gives exactly what the float path gives."""
    rng = np.random.default_rng(3)
    frame = rng.integers(20, 220, (64, 80)).astype(np.uint8)
    minimum = rng.integers(0, 40, (64, 80)).astype(np.uint8)
    minimum[0, 0] = 250  # above the frame: both paths clip at 0
    p = pp.PreprocessParams(denoise_window=window, background_radius=radius)
    fast = pp.preprocess_frame(frame, p, minimum)
    slow = pp.preprocess_frame(frame.astype(np.float32), p, minimum.astype(np.float32))
    np.testing.assert_array_equal(fast, slow)


@pytest.mark.parametrize("radius", [1, 3, 10, 15])
@pytest.mark.parametrize("shape", [(512, 512), (240, 376), (9, 40), (40, 7)])
def test_decomposed_tophat_equals_opencv(radius, shape):
    rng = np.random.default_rng(radius)
    frame = cv2.GaussianBlur((rng.random(shape) * 255).astype(np.uint8), (0, 0), 1.5)
    expected = cv2.morphologyEx(frame, cv2.MORPH_TOPHAT, pp._disk(radius))
    np.testing.assert_array_equal(pp.tophat_uint8(frame, radius), expected)


def test_defect_repair_of_a_block_equals_frame_by_frame_and_fills_isolated_clusters():
    rng = np.random.default_rng(3)
    defects = np.zeros((40, 50), int)
    defects[5, 7] = 1
    defects[20:23, 30:33] = 1  # a cluster: its centre has no good 3 x 3 neighbour
    defects[0, 0] = 1  # a corner
    repair = pp.DefectRepair(defects)
    for dtype in (np.uint8, np.float32):
        block = (rng.random((6, 40, 50)) * 200).astype(dtype)
        one = block.copy()
        for f in one:
            repair(f)
        whole = repair(block.copy())
        np.testing.assert_array_equal(whole, one)
        assert np.array_equal(whole[:, defects == 0], block[:, defects == 0])  # good pixels untouched
        assert not np.array_equal(whole[:, defects != 0], block[:, defects != 0])
    with pytest.raises(ValueError, match="defect map"):
        repair(np.zeros((2, 40, 51), np.uint8))
