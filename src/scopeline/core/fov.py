"""The field of view: the part of the frame that shows tissue through the lens in every frame.

A head-mounted miniscope images the brain through a GRIN lens that is fixed to the optics: outside
its disk the sensor sees (almost) no light, inside it the light falls off towards the edge
(vignetting). A movie that was registered before it reached scopeline has a similar dim band
along its edges, where the earlier shifts moved the frame border. Neither region holds cells, and
both hold artifacts that look like cells (edges that move against every shift of the registered
movie, line noise on a dark background).

Two masks:

1. :func:`lens_mask`, in the raw (sensor) frame: from the mean image of raw frames, the region inside
   its steepest brightness contour, when that contour is steep (a lens edge or a registered movie's
   border; the slow fall-off of vignetting is not), made convex and shrunk past the edge's soft part.
   A recording cropped inside the lens has no such edge and keeps the whole frame.
2. :func:`registered_fov`, in the motion-corrected frame: pixel ``p`` of the corrected movie shows raw
   pixel ``p + shift_t`` in frame ``t``; it is in the field of view when that raw pixel is inside the
   lens in every frame (at most ``max_outside`` of them outside). The lens stays put on the sensor, so
   in the corrected movie its edge moves against every shift, and only this common part is safe.

Everything is in pixels of the frame after cropping and downsampling.
"""

from __future__ import annotations

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage

__all__ = ["FOVParams", "lens_mask", "registered_fov"]


class FOVParams(BaseModel):
    """Field-of-view detection (pixels after cropping and downsampling)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Find the lens' field of view (off: the whole frame).")
    dark_ratio: float = Field(0.5, gt=0, lt=1, description="The frame may have a region outside the lens when the "
                              "darkest 1% of the (smoothed) mean image is below this fraction of its bright level "
                              "(90th percentile).")
    min_steepness: float = Field(0.025, gt=0, le=1, description="... and it has one when the steepest brightness "
                                 "contour changes by at least this fraction of (bright - dark) per pixel: a lens edge "
                                 "or a registered movie's dim border, not the slow fall-off of vignetting or "
                                 "background (measured: 0.06 on a simulated lens edge, 0.057 on the real CA1 "
                                 "recording's border, 0.009 on simulated vignetting, 0.018 on the real wireless "
                                 "recording's illumination).")
    smooth: float = Field(2.0, ge=0, le=20, description="Gaussian smoothing of the mean image, pixels.")
    margin: int = Field(0, ge=0, le=50, description="Pixels left out inside the edge, beyond the half-width of its "
                        "soft part.")
    edge_ratio: float = Field(1.5, ge=0, description="... and that contour is at least this many times steeper than "
                              "the image's typical gradient (75th percentile): an edge, not texture (measured: 6-9 on "
                              "simulated lenses, 1.7 on the CA1 border, 1.0-1.2 on simulated vignetting and the "
                              "wireless recording's illumination).")
    min_area: float = Field(0.5, gt=0, le=1, description="A field of view smaller than this fraction of the frame is "
                            "not a lens (the lens fills most of a miniscope's frame): the whole frame is kept.")


#: fractions of the way from the dark to the bright level at which the edge is looked for
_LEVELS = np.linspace(0.05, 0.7, 14)


def lens_mask(mean_image: np.ndarray, p: FOVParams | None = None) -> tuple[np.ndarray, dict]:
    """The lens' field of view on the sensor, from the mean image of raw frames.

    The edge is the brightness contour (at a level between the dark level, the 1st percentile of the
    smoothed mean image, and the bright level, its 90th percentile) along which the image is steepest;
    there is a lens (or a registered movie's dim border) when that contour is steep enough
    (``min_steepness``; vignetting and background fall off far more slowly). The field of view is
    the largest bright region inside that contour, its holes filled, made convex (a lens disk cut by
    the frame, or a rectangle, is convex: dim tissue near the edge is not cut into), and shrunk by half
    the width of the edge's ramp (from the outside level to the level 8-12 pixels inside, at the
    contour's steepness) plus ``margin``, so that the dim, soft part of the edge is left out.

    Parameters
    ----------
    mean_image : numpy.ndarray
        float (height, width): mean of raw frames (cropped, downsampled, defective pixels repaired),
        intensity units of the movie.
    p : FOVParams, optional

    Returns
    -------
    mask : numpy.ndarray
        bool (height, width): True inside the field of view (all True when no lens is found or
        detection is off).
    info : dict
        ``found`` (bool), ``dark``, ``bright`` (levels of the smoothed mean image), ``steepness`` (of the
        steepest contour, per pixel, as a fraction of bright - dark), ``edge_ratio`` (that over the
        image's typical gradient), ``edge`` (its level), ``shrink`` (pixels taken off inside it),
        ``fraction`` (of the frame inside the mask).
    """
    p = p or FOVParams()
    img = np.asarray(mean_image, np.float32)
    h, w = img.shape
    full = np.ones((h, w), bool)
    if p.smooth > 0:
        img = cv2.GaussianBlur(img, (0, 0), p.smooth, borderType=cv2.BORDER_REFLECT)
    dark, bright = (float(v) for v in np.percentile(img, [1, 90]))
    info = {"found": False, "dark": dark, "bright": bright, "steepness": 0.0, "edge_ratio": 0.0, "edge": None,
            "shrink": 0, "fraction": 1.0}
    if not p.enabled or bright <= 0 or dark >= p.dark_ratio * bright or min(h, w) < 16:
        return full, info
    gy, gx = np.gradient(img)
    grad = np.hypot(gy, gx)
    best = (0.0, None)
    for f in _LEVELS:
        inside = img >= dark + f * (bright - dark)
        rim = inside ^ ndimage.binary_erosion(inside)
        rim[0, :] = rim[-1, :] = rim[:, 0] = rim[:, -1] = False  # the frame's own edge is no contour
        if rim.sum() >= 20:
            steep = float(np.median(grad[rim])) / (bright - dark)
            if steep > best[0]:
                best = (steep, dark + f * (bright - dark))
    steep, level = best
    typical = float(np.percentile(grad, 75)) / (bright - dark)
    info.update(steepness=steep, edge=level, edge_ratio=steep / typical if typical > 0 else 0.0)
    if level is None or steep < p.min_steepness or info["edge_ratio"] < p.edge_ratio:
        return full, info
    labels, n = ndimage.label(img >= level)
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, n + 1))
    region = ndimage.binary_fill_holes(labels == (1 + int(np.argmax(sizes))))
    hull = _convex(region)
    # beyond the frame: outside where the frame's own edge is dim (the dark region runs off the frame,
    # as along a registered movie's border), inside where it is bright (the field of view goes on)
    padded = np.pad(hull, 1, mode="edge")
    edge_bright = np.pad(img >= level + 0.5 * (bright - level), 1, mode="edge")
    rim = np.ones(padded.shape, bool)
    rim[1:-1, 1:-1] = False
    padded[rim] &= edge_bright[rim]
    d_in = ndimage.distance_transform_edt(padded)[1:-1, 1:-1]
    d_out = ndimage.distance_transform_edt(~hull)
    ring_in = img[(d_in > 8) & (d_in <= 12)]
    ring_out = img[(d_out > 8) & (d_out <= 12)]
    inner = float(np.median(ring_in)) if ring_in.size else bright
    outer = float(np.median(ring_out)) if ring_out.size >= 20 else min(dark, level)
    ramp = max(0.0, inner - outer) / max(steep * (bright - dark), 1e-6)
    shrink = int(min(np.ceil(ramp / 2), 25)) + p.margin
    mask = d_in > shrink
    if mask.mean() < p.min_area:
        return full, info
    info.update(found=True, shrink=shrink, fraction=float(mask.mean()))
    return mask, info


def _convex(mask: np.ndarray) -> np.ndarray:
    """The convex hull of a bool mask, as a bool mask."""
    pts = cv2.findNonZero(mask.astype(np.uint8))
    out = np.zeros(mask.shape, np.uint8)
    if pts is not None:
        cv2.fillConvexPoly(out, cv2.convexHull(pts), 1)
    return (out > 0) | mask


def registered_fov(lens: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """The field of view in the motion-corrected frame: pixels whose raw position stays in the lens.

    Parameters
    ----------
    lens : numpy.ndarray
        bool (height, width): :func:`lens_mask` (raw, sensor coordinates).
    shifts : numpy.ndarray
        float (frames, 2): the rigid (dy, dx) of each frame (corrected pixel ``p`` shows raw pixel
        ``p + shift``; see :mod:`scopeline.core.motion`), pixels.

    Returns
    -------
    numpy.ndarray
        bool (height, width). All True when ``lens`` is (no lens seen): the frame border that motion
        correction pads is :func:`scopeline.core.initialize.valid_region`'s business. Where the lens
        mask touches the frame edge, beyond the frame counts as outside. Bilinear interpolation reads
        the 2 x 2 raw pixels around ``p + shift``: all of them must be inside.
    """
    lens = np.asarray(lens, bool)
    if lens.all() or len(shifts) == 0:
        return np.ones(lens.shape, bool)
    outside = _outside_counts(lens, np.asarray(shifts, np.float64))
    return outside == 0


def _outside_counts(lens: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """float (height, width): frames in which each corrected pixel reads raw pixels outside ``lens``."""
    h, w = lens.shape
    lo = np.floor(shifts).astype(int)
    pairs, counts = np.unique(lo, axis=0, return_counts=True)
    # frame t reads raw pixels p + lo_t + (0 or 1, 0 or 1): inside when all four are
    L = np.pad(lens, ((0, 1), (0, 1)), constant_values=False)
    inside2 = L[:-1, :-1] & L[1:, :-1] & L[:-1, 1:] & L[1:, 1:]
    padded = np.pad(inside2, ((h, h), (w, w)), constant_values=False)
    out = np.zeros((h, w), np.float64)
    for (dy, dx), c in zip(pairs, counts):
        if abs(dy) >= h or abs(dx) >= w:
            out += c
            continue
        out += c * ~padded[h + dy: 2 * h + dy, w + dx: 2 * w + dx]
    return out
