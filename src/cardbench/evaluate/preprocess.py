"""Bringing image slices to a model's input and its scores back (numpy only, no torch).

Arrays: a slice is ``(h, w)`` = NIfTI ``(x, y)`` (``spatial_order: xy``); scores are ``(C, S_h, S_w)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@lru_cache(maxsize=256)
def resize_matrix(n_in: int, n_out: int, interpolation: str = "bilinear") -> np.ndarray:
    """``(n_out, n_in)`` matrix resampling one axis (``out = M @ in``).

    bilinear: the triangle filter with support ``max(n_in / n_out, 1)`` and weights normalised over the
    pixels inside the image, as Pillow's ``Image.resize(BILINEAR)`` and torch's ``interpolate(mode=
    "bilinear", align_corners=False, antialias=True)``; when enlarging it equals plain bilinear
    interpolation with ``align_corners=False`` (edge pixels repeated). nearest: input pixel
    ``floor(i * n_in / n_out)`` (torch's ``mode="nearest"``).
    """
    m = np.zeros((n_out, n_in), dtype=np.float64)
    scale = n_in / n_out
    if interpolation == "nearest":
        src = np.minimum(np.floor(np.arange(n_out) * scale).astype(int), n_in - 1)
        m[np.arange(n_out), src] = 1.0
        return m
    support = max(scale, 1.0)
    inv = 1.0 / scale if scale >= 1.0 else 1.0
    for i in range(n_out):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        j = np.arange(lo, hi)
        w = np.maximum(0.0, 1.0 - np.abs((j - center + 0.5) * inv))
        s = w.sum()
        m[i, lo:hi] = w / s if s > 0 else 0.0
    m.setflags(write=False)
    return m


def resize(a: np.ndarray, shape: tuple[int, int], interpolation: str = "bilinear") -> np.ndarray:
    """Resize the last two axes of ``a`` (``(..., h, w)``) to ``shape`` (float32 out)."""
    h, w = a.shape[-2:]
    if (h, w) == tuple(shape):
        return a.astype(np.float32, copy=False)
    my = resize_matrix(h, shape[0], interpolation)
    mx = resize_matrix(w, shape[1], interpolation)
    out = np.einsum("ih,...hw,jw->...ij", my, a.astype(np.float64), mx, optimize=True)
    return out.astype(np.float32)


@dataclass(frozen=True)
class Placement:
    """Where the (resized) slice sits in the network canvas: the slice is resized to ``(nh, nw)``;
    rows ``src_r0:src_r0+n_r`` of it go to canvas rows ``dst_r0:dst_r0+n_r`` (same for columns)."""

    h: int
    w: int
    nh: int
    nw: int
    src_r0: int
    dst_r0: int
    n_r: int
    src_c0: int
    dst_c0: int
    n_c: int


def _axis(n: int, size: int) -> tuple[int, int, int]:
    if n <= size:
        return 0, (size - n) // 2, n
    return (n - size) // 2, 0, size


def placement(h: int, w: int, size: tuple[int, int], fit: str) -> Placement:
    """Geometry of one ``(h, w)`` slice in a ``size`` canvas under ``fit`` (see modelcard).

    resize-pad: ``scale = min(S_h / h, S_w / w)``, ``(nh, nw) = (round(h * scale), round(w * scale))``,
    centred (offset ``(S - n) // 2``), as cardbench's baseline (``baselines.data.fit_geometry``).

    Raises:
        ValueError: ``pad`` with a slice larger than the canvas.
    """
    sh, sw = size
    if fit == "resize":
        nh, nw = sh, sw
    elif fit == "resize-pad":
        scale = min(sh / h, sw / w)
        nh = max(1, min(sh, int(round(h * scale))))
        nw = max(1, min(sw, int(round(w * scale))))
    else:
        if fit == "pad" and (h > sh or w > sw):
            raise ValueError(f"slice {h}x{w} is larger than the model's input {sh}x{sw} and fit is pad; "
                             "declare fit: crop, resize or resize-pad in model.yaml")
        nh, nw = h, w
    sr, dr, nr = _axis(nh, sh)
    sc, dc, nc = _axis(nw, sw)
    return Placement(h, w, nh, nw, sr, dr, nr, sc, dc, nc)


def intensity_params(volume: np.ndarray, method: str, p_low: float, p_high: float) -> tuple[float, float]:
    """(offset, scale) so that ``(x - offset) / scale`` is the normalised image.

    none: (0, 1); min-max: (min, max - min); percentile: (P_low, P_high - P_low) (numpy's linear
    percentile; the result is clipped to [0, 1] afterwards); z-score: (mean, std). A zero scale becomes 1.
    """
    x = np.asarray(volume, dtype=np.float32)
    if method == "none":
        return 0.0, 1.0
    if method == "min-max":
        lo, hi = float(x.min()), float(x.max())
        return lo, (hi - lo) or 1.0
    if method == "percentile":
        lo, hi = np.percentile(x, [p_low, p_high])
        return float(lo), (float(hi) - float(lo)) if hi > lo else 1.0
    if method == "z-score":
        return float(x.mean()), float(x.std()) or 1.0
    raise ValueError(f"unknown intensity method {method!r}")


def prepare_slices(volume: np.ndarray, card) -> tuple[np.ndarray, Placement]:
    """All slices of one ``(x, y, slice)`` volume as the model's input.

    Returns:
        (batch ``(n_slices, C, S_h, S_w)`` float32, or ``(n, S_h, S_w, C)`` for NHWC; the
        :class:`Placement` shared by the slices).
    """
    vol = np.asarray(volume, dtype=np.float32)
    if card.spatial_order == "yx":
        vol = vol.transpose(1, 0, 2)
    h, w, n = vol.shape
    g = placement(h, w, card.size, card.fit)
    if card.over == "stack":
        params = [intensity_params(vol, card.intensity, card.p_low, card.p_high)] * n
    else:
        params = [intensity_params(vol[:, :, k], card.intensity, card.p_low, card.p_high) for k in range(n)]
    sl = np.stack([(vol[:, :, k] - o) / s for k, (o, s) in enumerate(params)])  # (n, h, w)
    sl = sl.astype(np.float32)
    if card.intensity == "percentile":
        sl = np.clip(sl, 0.0, 1.0)
    if (g.nh, g.nw) != (h, w):
        sl = resize(sl, (g.nh, g.nw), card.interpolation)
        if card.intensity == "percentile":
            sl = np.clip(sl, 0.0, 1.0)
    canvas = np.zeros((n, *card.size), dtype=np.float32)
    canvas[:, g.dst_r0:g.dst_r0 + g.n_r, g.dst_c0:g.dst_c0 + g.n_c] = \
        sl[:, g.src_r0:g.src_r0 + g.n_r, g.src_c0:g.src_c0 + g.n_c]
    x = np.repeat(canvas[:, None], card.channels, axis=1)
    if card.channel_mean is not None:
        mean = np.asarray(card.channel_mean, np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(card.channel_std, np.float32).reshape(1, -1, 1, 1)
        x = (x - mean) / std
    if card.axis_order == "NHWC":
        x = x.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x, dtype=np.float32), g


def scores_to_labels(scores: np.ndarray, g: Placement, card, lut: np.ndarray) -> np.ndarray:
    """Model scores of n slices back to label slices on the original grid.

    Args:
        scores: ``(n, C, S_h, S_w)`` (NCHW) or ``(n, S_h, S_w, C)`` (NHWC), finite.
        g: the slices' :class:`Placement`.
        card: the model card.
        lut: output channel -> cardbench value (uint8).

    Returns:
        uint8 ``(h, w, n)`` in the volume's ``(x, y, slice)`` order, cardbench values.
    """
    s = scores if card.axis_order == "NCHW" else scores.transpose(0, 3, 1, 2)
    n, C = s.shape[:2]
    region = s[:, :, g.dst_r0:g.dst_r0 + g.n_r, g.dst_c0:g.dst_c0 + g.n_c].astype(np.float32)
    full = np.full((n, C, g.nh, g.nw), -np.inf if card.output_kind == "logits" else 0.0, dtype=np.float32)
    full[:, 0] = np.inf if card.output_kind == "logits" else 1.0  # cropped-away pixels: background
    full[:, :, g.src_r0:g.src_r0 + g.n_r, g.src_c0:g.src_c0 + g.n_c] = region
    if (g.nh, g.nw) != (g.h, g.w):
        if card.fit in ("pad", "crop") or not np.isfinite(full).all():
            full = np.where(np.isfinite(full), full, np.sign(full) * 1e30).astype(np.float32)
        full = resize(full, (g.h, g.w), card.interpolation)
    lab = lut[full.argmax(axis=1)]  # (n, h, w)
    out = lab.transpose(1, 2, 0)
    if card.spatial_order == "yx":
        out = out.transpose(1, 0, 2)
    return np.ascontiguousarray(out, dtype=np.uint8)


def largest_component(labels: np.ndarray, values) -> np.ndarray:
    """Keep only the largest 3D connected component (face connectivity, :func:`scipy.ndimage.label`)
    of each class value in ``values``; the rest becomes background (0). ``labels``: ``(x, y, slice)``."""
    from scipy import ndimage

    out = labels.copy()
    for v in values:
        comp, n = ndimage.label(labels == v)
        if n > 1:
            sizes = np.bincount(comp.ravel())
            sizes[0] = 0
            out[(comp != 0) & (comp != int(sizes.argmax()))] = 0
    return out
