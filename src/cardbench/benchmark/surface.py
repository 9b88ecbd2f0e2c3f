"""Surface distances between a reference and a predicted mask: HD, HD95, ASSD, MASD (mm) and NSD.

Definitions (per class; the same in 2D, per image, and in 3D, per volume):

Boundary
    The boundary of a binary mask is the set of its foreground voxels that have at least one
    face neighbour (4-neighbourhood in 2D, 6 in 3D) in the background; voxels outside the array
    count as background, so a mask touching the edge of the array has a boundary there. For a
    label map, a voxel of class k is on the boundary of k when a face neighbour holds another
    label (background or another class). This is MONAI's ``get_mask_edges`` (``binary_erosion``
    XOR the mask, scipy's default face-connected structure and ``border_value=0``) and MedPy's
    ``__surface_distances`` (``connectivity=1``).

Directed distances
    For each boundary voxel of A, the Euclidean distance in mm from its centre to the centre of
    the nearest boundary voxel of B, with the voxel spacing of each array axis (anisotropic
    spacing is exact; ``d = sqrt(sum_i (delta_i * spacing_i)^2)``). ``d(A->B)`` is the list of
    these distances (one per boundary voxel of A).

HD (Hausdorff distance)
    ``max(max d(P->R), max d(R->P))``.
HD95
    ``max(p95 d(P->R), p95 d(R->P))``: the larger of the two *directed* 95th percentiles, the
    percentile interpolated linearly between order statistics (``numpy.percentile``'s default
    ``linear`` method, the same as ``torch.quantile`` used by MONAI). This is the definition of
    MONAI ``HausdorffDistanceMetric(percentile=95)`` and of Metrics Reloaded (Maier-Hein et al.,
    Nat Methods 2024;21:195). It is *not* MedPy's ``hd95``, which takes the 95th percentile of
    both directions pooled into one list.
ASSD (average symmetric surface distance)
    The mean over the pooled directed distances: ``(sum d(P->R) + sum d(R->P)) / (n_P + n_R)``
    (Heimann et al., IEEE TMI 2009;28:1251; MONAI ``SurfaceDistanceMetric(symmetric=True)``;
    MedPy >= 0.5 ``assd``).
MASD (mean average surface distance)
    The mean of the two directed means: ``(mean d(P->R) + mean d(R->P)) / 2`` (Metrics Reloaded's
    MASD; older MedPy ``assd``). It weighs both surfaces equally however many voxels each has.

NSD (normalized surface Dice) at tolerance tau mm
    ``(#{d(P->R) <= tau} + #{d(R->P) <= tau}) / (n_P + n_R)``: the fraction of the boundary voxels
    of both masks that lie within tau of the other mask's boundary (Nikolov et al. 2021,
    arXiv:1809.04430; Metrics Reloaded). On the boundary defined above, with centre-to-centre
    distances, this is MONAI ``SurfaceDiceMetric(class_thresholds=[tau], use_subvoxels=False)``.
    Both empty: NaN; one side empty: 0 (the protocol's worst case for NSD).

Each of these is a *reducer* over the directed distances of one (level, case, class)
(:class:`DirectedDistances`), which the engine computes once: :func:`reduce_hd`,
:func:`reduce_hd95`, :func:`reduce_assd`, :func:`reduce_masd`, :func:`reduce_nsd`. The metric
registry (:mod:`cardbench.benchmark.metric_registry`) names the reducer of each metric.

DeepMind's ``surface-distance`` package measures something close but different: surface elements
on the voxel-corner grid weighted by their area (Nikolov et al., JMIR 2021;23:e26151); its values
differ from these by definition.

Edge cases (status from the voxel counts, see :mod:`cardbench.benchmark.metrics`):

- class present in one mask only (``ref_empty`` or ``pred_empty``): no distance exists; the
  value is the worst case, the diagonal of the field of view in mm (``sqrt(sum (n_i *
  spacing_i)^2)`` over the array's axes, the largest distance two points of the array can have),
  and the status says so;
- class absent from both (``both_empty``): NaN.

Axis order: arrays are used as given; ``spacing[i]`` is the voxel size in mm along axis ``i``
(NIfTI: ``(x, y, slice)`` with ``header.get_zooms()[:3]``; PNG: ``(row, col)``). For a volume the
per-image (2D) values are computed in the planes ``[:, :, s]`` (slices along the last axis) with
the in-plane spacing ``spacing[:2]``.

Algorithm (exact, not an approximation): the arrays are cropped to the bounding box of all
foreground labels of both masks; boundaries are found by comparing each voxel with its face
neighbours; the nearest boundary voxel of the other mask is searched among neighbour offsets in
order of increasing distance in mm (the first hit is the nearest), for all classes, both
directions and both levels in one vectorised pass; the few voxels farther than the search radius
(e.g. a spurious blob far from the heart) are answered by a k-d tree (``scipy.spatial.cKDTree``)
over the target boundary. Values agree with MONAI to float32 precision (tests and
``benchmarks/bench_scoring.py``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np

from cardbench.benchmark.metrics import BOTH_EMPTY, OK, PRED_EMPTY, REF_EMPTY

#: the four distance metrics in mm computed by default, in report order (NSD is computed when asked for).
DISTANCE_METRICS: tuple[str, ...] = ("hd", "hd95", "assd", "masd")
#: the percentile of HD95.
PERCENTILE = 95.0
#: default NSD tolerance tau in mm (the reasoning is in docs/protocols.md, "The NSD tolerance").
DEFAULT_NSD_TOLERANCE_MM = 2.0
#: distances are compared with tau + this (mm), so that a distance equal to tau in exact arithmetic
#: counts as within tau whatever the rounding of its square root
_TOL_SLACK_MM = 1e-9

# search budget: number of neighbour offsets tried before the k-d tree takes over
_MAX_OFFSETS_3D = 4000
_MAX_OFFSETS_2D = 1500
# at most this many elements gathered per vectorised round (queries x offsets)
_ROUND_ELEMENTS = 1 << 18


@dataclass(frozen=True)
class SurfaceDistances:
    """Surface distances of one class between a reference and a prediction.

    Attributes:
        hd, hd95, assd, masd: distances in mm (see the module docstring); the worst case (field of
            view diagonal) when one mask is empty, NaN when both are.
        status: ``ok``, ``ref_empty``, ``pred_empty`` or ``both_empty``.
        n_ref, n_pred: number of boundary voxels of the reference and the prediction.
        nsd: normalized surface Dice at ``nsd_tolerance_mm`` in [0, 1]; 0 when one mask is
            empty, NaN when both are (NaN when no tolerance was asked for).
        nsd_tolerance_mm: the tolerance tau of ``nsd`` in mm (None: not computed).
    """

    hd: float
    hd95: float
    assd: float
    masd: float
    status: str
    n_ref: int
    n_pred: int
    nsd: float = float("nan")
    nsd_tolerance_mm: float | None = None

    def as_dict(self) -> dict:
        """``{hd, hd95, assd, masd, status, n_ref, n_pred}`` (and ``nsd`` when computed)."""
        out = {"hd": self.hd, "hd95": self.hd95, "assd": self.assd, "masd": self.masd,
               "status": self.status, "n_ref": self.n_ref, "n_pred": self.n_pred}
        if self.nsd_tolerance_mm is not None:
            out.update(nsd=self.nsd, nsd_tolerance_mm=self.nsd_tolerance_mm)
        return out


def _check_spacing(spacing: Sequence[float], ndim: int) -> np.ndarray:
    sp = np.asarray(spacing, dtype=np.float64).ravel()
    if sp.size != ndim:
        raise ValueError(f"spacing {tuple(sp)} has {sp.size} values for a {ndim}D array; give one voxel size in mm "
                         "per array axis")
    if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError(f"spacing {tuple(sp)} must be finite and positive (mm per array axis)")
    return sp


def fov_diagonal_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Diagonal of the field of view in mm: ``sqrt(sum_i (shape_i * spacing_i)^2)``.

    The worst-case distance of a case whose class is empty on one side only.
    """
    return float(np.linalg.norm(np.asarray(shape, np.float64) * np.asarray(spacing, np.float64)))


def boundary(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels of a binary mask (any number of dimensions).

    A foreground voxel is on the boundary when at least one of its face neighbours is background;
    voxels outside the array count as background. Computed as ``mask & ~binary_erosion(mask)``
    with a face-connected structure and ``border_value=0`` (as MONAI ``get_mask_edges`` and
    MedPy with ``connectivity=1``).

    Args:
        mask: array, non-zero = foreground.

    Returns:
        bool array of the same shape.
    """
    from scipy import ndimage

    m = np.asarray(mask).astype(bool)
    if m.ndim == 0:
        raise ValueError("boundary needs an array with at least one dimension")
    st = ndimage.generate_binary_structure(m.ndim, 1)
    return m & ~ndimage.binary_erosion(m, structure=st, border_value=0)


def directed_distances(from_mask: np.ndarray, to_mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Distances in mm from each boundary voxel of ``from_mask`` to the nearest boundary voxel of
    ``to_mask`` (centre to centre), in C order of the ``from_mask`` boundary voxels.

    A plain reference implementation (k-d tree over all boundary voxels); :func:`surface_distances`
    and :func:`label_surface_distances` use a faster search with the same result.

    Args:
        from_mask, to_mask: binary masks of one shape (2D or 3D).
        spacing: voxel size in mm per array axis.

    Returns:
        float64 array, one distance per boundary voxel of ``from_mask`` (empty when it has none).

    Raises:
        ValueError: shapes differ, bad spacing, or ``to_mask`` is empty while ``from_mask`` is not.
    """
    from scipy.spatial import cKDTree

    a = np.asarray(from_mask).astype(bool)
    b = np.asarray(to_mask).astype(bool)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")
    sp = _check_spacing(spacing, a.ndim)
    pa = np.argwhere(boundary(a)) * sp
    pb = np.argwhere(boundary(b)) * sp
    if len(pa) == 0:
        return np.zeros(0)
    if len(pb) == 0:
        raise ValueError("to_mask is empty: no distance exists (the caller decides the worst case)")
    return cKDTree(pb).query(pa, k=1)[0]


def surface_distances(ref: np.ndarray, pred: np.ndarray, spacing: Sequence[float],
                      worst: float | None = None, nsd_tolerance_mm: float | None = None) -> SurfaceDistances:
    """HD, HD95, ASSD and MASD between two binary masks (2D or 3D), in mm, and NSD when asked.

    Args:
        ref: reference mask (non-zero = the class), any shape with 2 or 3 axes.
        pred: predicted mask, same shape.
        spacing: voxel size in mm per array axis, in the array's axis order.
        worst: value for one side empty (default: :func:`fov_diagonal_mm` of the array).
        nsd_tolerance_mm: compute NSD at this tolerance tau in mm (> 0).

    Returns:
        :class:`SurfaceDistances` (definitions in the module docstring).

    Raises:
        ValueError: shapes differ, not 2D/3D, or spacing is not one positive number per axis.
    """
    r = np.asarray(ref).astype(np.uint8, copy=False) != 0
    p = np.asarray(pred).astype(np.uint8, copy=False) != 0
    if r.shape != p.shape:
        raise ValueError(f"shape mismatch: reference {r.shape} vs prediction {p.shape}")
    if r.ndim not in (2, 3):
        raise ValueError(f"expected a 2D or 3D mask, got {r.ndim}D")
    sp = _check_spacing(spacing, r.ndim)
    if worst is None:
        worst = fov_diagonal_mm(r.shape, sp)
    metrics = DISTANCE_METRICS + (("nsd",) if nsd_tolerance_mm is not None else ())
    params = {"nsd": {"tolerance_mm": _check_tolerance(nsd_tolerance_mm)}} if nsd_tolerance_mm is not None else {}
    if r.ndim == 2:
        r3, p3, sp3 = r[..., None], p[..., None], np.append(sp, 1.0)
        res = _Engine(r3.view(np.uint8), p3.view(np.uint8), sp3, 1, volume=False, images=True,
                      metrics=metrics, params=params)
        vals, st, nr, npd = res.image_values(0)
        vals, st, nr, npd = vals[0], st[0], nr[0], npd[0]
    else:
        res = _Engine(r.view(np.uint8), p.view(np.uint8), sp, 1, volume=True, images=False,
                      metrics=metrics, params=params)
        vals, st, nr, npd = res.volume_values(0)
    vals = [float(v) for v in vals]
    if st in (REF_EMPTY, PRED_EMPTY):
        vals = [float(worst)] * 4 + ([0.0] if nsd_tolerance_mm is not None else [])
    nsd = {"nsd": vals[4], "nsd_tolerance_mm": float(nsd_tolerance_mm)} if nsd_tolerance_mm is not None else {}
    return SurfaceDistances(*vals[:4], status=st, n_ref=int(nr), n_pred=int(npd), **nsd)


def _check_tolerance(tau) -> float:
    t = float(tau)
    if not np.isfinite(t) or t <= 0:
        raise ValueError(f"NSD tolerance {tau!r} must be a positive number of mm")
    return t


def label_surface_distances(ref: np.ndarray, pred: np.ndarray, spacing: Sequence[float],
                            labels: Sequence[int] = (1, 2, 3), volume: bool = True,
                            images: bool = True, metrics: Sequence[str] = DISTANCE_METRICS,
                            params: dict | None = None) -> dict:
    """Surface distances of several classes of two label maps, per volume and per 2D image.

    Args:
        ref, pred: integer label maps of one shape ``(x, y, slice)`` (a 2D ``(row, col)`` array is
            one image); values outside ``labels`` count as background.
        spacing: voxel size in mm per axis (3 values; for a 2D array 2 values).
        labels: the label value of each class (at most 4 classes).
        volume: compute the 3D values of the whole volume.
        images: compute the 2D values of every plane ``[:, :, s]`` with spacing ``spacing[:2]``.
        metrics: the boundary metrics to compute, in column order (registered metrics of the
            ``distance`` family, see :mod:`cardbench.benchmark.metric_registry`); default
            (hd, hd95, assd, masd).
        params: metric -> parameter -> value, overriding the registry's defaults; a value may be
            one number or one number per label (e.g. ``{"nsd": {"tolerance_mm": [2.0, 1.5]}}``).

    Returns:
        dict with ``labels`` and ``metrics``; ``volume``: float array ``(n_labels, n_metrics)``
        (default columns hd, hd95, assd, masd) and ``volume_status`` (n_labels,) when ``volume``;
        ``images``: ``(n_labels, n_slices, n_metrics)`` and ``images_status`` ``(n_labels, n_slices)``
        when ``images``. Values are NaN where the status is not ``ok`` (the caller applies its
        worst-case policy).

    Raises:
        ValueError: shapes differ, wrong number of spacing values, more than 4 labels, a metric
            that is not a registered distance metric, a bad parameter.
    """
    r = np.asarray(ref)
    p = np.asarray(pred)
    if r.shape != p.shape:
        raise ValueError(f"shape mismatch: reference {r.shape} vs prediction {p.shape}")
    if r.ndim == 2:
        sp = _check_spacing(spacing, 2)
        r, p, sp = r[..., None], p[..., None], np.append(sp, 1.0)
        volume = False
    elif r.ndim == 3:
        sp = _check_spacing(spacing, 3)
    else:
        raise ValueError(f"expected a 2D or 3D label map, got {r.ndim}D")
    labels = [int(v) for v in labels]
    if len(labels) > 4 or len(set(labels)) != len(labels) or any(v <= 0 or v > 255 for v in labels):
        raise ValueError(f"labels must be up to 4 distinct values 1..255, got {labels}")
    lut = np.zeros(256, np.uint8)
    for i, v in enumerate(labels):
        lut[v] = i + 1
    metrics = tuple(metrics)
    eng = _Engine(r, p, sp, len(labels), volume=volume, images=images, lut=lut, metrics=metrics,
                  params=params or {})
    k = len(metrics)
    out: dict = {"labels": labels, "metrics": list(metrics)}
    if volume:
        vals = np.full((len(labels), k), np.nan)
        st = np.empty(len(labels), dtype=object)
        for i in range(len(labels)):
            vals[i], st[i], _, _ = eng.volume_values(i)
        out["volume"], out["volume_status"] = vals, st
    if images:
        vals = np.full((len(labels), r.shape[2], k), np.nan)
        st = np.empty((len(labels), r.shape[2]), dtype=object)
        for i in range(len(labels)):
            vals[i], st[i], _, _ = eng.image_values(i)
        out["images"], out["images_status"] = vals, st
    return out


def _relabel(a: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Map label values to class indices 1..n (0 elsewhere) as uint8."""
    if a.dtype == np.uint8:
        return lut[a]
    if a.dtype.kind == "b":
        return lut[a.view(np.uint8)]
    a = np.asarray(a)
    ok = (a >= 0) & (a <= 255)
    return np.where(ok, lut[np.clip(a, 0, 255).astype(np.intp)], 0).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# engine

_SCRATCH = threading.local()


def _scratch(size: int) -> np.ndarray:
    """A zeroed bool buffer of at least ``size`` elements, reused between calls of one thread.

    The caller must set back to False every element it sets (so no zeroing pass is needed).
    """
    buf = getattr(_SCRATCH, "buf", None)
    if buf is None or buf.size < size:
        buf = np.zeros(max(size, 1 << 20), bool)
        _SCRATCH.buf = buf
    return buf


@lru_cache(maxsize=64)
def _offsets(spacing: tuple[float, ...], max_offsets: int, planar: bool):
    """Neighbour offsets (dx, dy, dz) sorted by length in mm, about ``max_offsets`` of them.

    Returns (offsets int64 (m, 3), lengths float64 (m,), half-widths (3,)). Every offset of length
    <= the radius is included (the list is complete up to it), so a search that finds no hit in
    the list knows that the nearest point is farther than the radius.
    """
    sp = np.asarray(spacing, np.float64)
    if planar:  # the disc holding about max_offsets pixels
        radius = float(np.sqrt(max_offsets * sp[0] * sp[1] / np.pi))
    else:  # the ball holding about max_offsets voxels
        radius = float(np.cbrt(max_offsets * np.prod(sp) * 3.0 / (4.0 * np.pi)))
    half = np.minimum(np.floor(radius / sp + 1e-9).astype(np.int64), 64)
    if planar:
        half[2] = 0
    g = np.stack(np.meshgrid(*[np.arange(-h, h + 1) for h in half], indexing="ij"), axis=-1).reshape(-1, 3)
    d = np.sqrt(((g * sp) ** 2).sum(axis=1))
    radius = min(radius, float(np.min(np.where(half > 0, (half + 1) * sp, np.inf))))  # complete up to here
    keep = d <= radius
    g, d = g[keep], d[keep]
    order = np.argsort(d, kind="stable")
    return g[order], d[order], half


class _Engine:
    """Boundaries and nearest-boundary distances of two label maps holding class indices 1..n.

    ``ref`` and ``pred`` are ``(x, y, slice)`` arrays (a 2D image is ``(row, col, 1)``). After
    construction, ``vol`` ``(n, k)`` and ``img`` ``(n, n_slices, k)`` hold the ``k`` requested
    metrics (default hd, hd95, assd, masd) where both masks hold the class (NaN elsewhere); ``nb3``
    ``(2, n)`` and ``nb2`` ``(2, n, n_slices)`` count the boundary voxels of reference (0) and
    prediction (1).
    """

    def __init__(self, ref: np.ndarray, pred: np.ndarray, spacing: np.ndarray, n_classes: int,
                 volume: bool, images: bool, lut: np.ndarray | None = None,
                 metrics: Sequence[str] = DISTANCE_METRICS, params: dict | None = None):
        self.shape = ref.shape
        self.n = n_classes
        self.sp = np.asarray(spacing, np.float64)
        self.do_volume = volume
        self.do_images = images
        self.reducers = _reducers(metrics, params or {}, n_classes)
        nz = ref.shape[2]
        k = len(self.reducers)
        self.nb3 = np.zeros((2, n_classes), np.int64)
        self.nb2 = np.zeros((2, n_classes, nz), np.int64)
        self.vol = np.full((n_classes, k), np.nan)
        self.img = np.full((n_classes, nz, k), np.nan)
        box = foreground_bbox(ref, pred)
        if box is None:
            return
        sl = tuple(slice(a, b) for a, b in box)
        rc = ref[sl]
        pc = pred[sl]
        if lut is not None:  # label values -> class indices 1..n, on the crop only
            if not (np.array_equal(lut[1:n_classes + 1], np.arange(1, n_classes + 1))
                    and max(int(rc.max()), int(pc.max())) <= n_classes and rc.dtype.kind in "ub"
                    and pc.dtype.kind in "ub"):
                rc = _relabel(rc, lut)
                pc = _relabel(pc, lut)
        self._compute(rc, pc, box[2][0])

    @staticmethod
    def _boundary(c: np.ndarray):
        """Boundary voxels of every class of a cropped label map: (x, y, z, class index, in-plane flag).

        A voxel of class k (> 0) is on the 3D boundary when one of its 6 face neighbours holds
        another value, on the in-plane (2D) boundary when one of its 4 neighbours in the plane
        does; outside the crop is background (the crop spans all foreground of both masks).
        """
        shp = c.shape
        # pad by one background voxel, in the crop's own memory order (NIfTI arrays are Fortran-ordered)
        order = "F" if c.strides[0] < c.strides[-1] else "C"
        a = np.zeros((shp[0] + 2, shp[1] + 2, shp[2] + 2), np.uint8, order=order)
        a[1:-1, 1:-1, 1:-1] = c
        af = a.ravel(order="K")
        sx, sy, sz = (st // a.itemsize for st in a.strides)
        fg = np.flatnonzero(af)
        lab = af[fg]
        e2 = af[fg - sx] != lab
        e2 |= af[fg + sx] != lab
        e2 |= af[fg - sy] != lab
        e2 |= af[fg + sy] != lab
        e3 = af[fg - sz] != lab
        e3 |= af[fg + sz] != lab
        e3 |= e2
        sel = np.flatnonzero(e3)
        i = fg[sel]
        x = i // sx % (shp[0] + 2) - 1
        y = i // sy % (shp[1] + 2) - 1
        z = i // sz % (shp[2] + 2) - 1
        return x, y, z, lab[sel].astype(np.int64) - 1, e2[sel]

    def _compute(self, rc: np.ndarray, pc: np.ndarray, z0: int):
        n = self.n
        sp = self.sp
        off3, len3, half3 = _offsets(tuple(sp), _MAX_OFFSETS_3D, False)
        off2, len2, half2 = _offsets(tuple(sp), _MAX_OFFSETS_2D, True)
        half = np.maximum(half3 if self.do_volume else 0, half2 if self.do_images else 0)
        shp = np.asarray(rc.shape, np.int64)
        pad = half + 1
        pshape = shp + 2 * pad
        size = int(np.prod(pshape))
        strides = np.array([pshape[1] * pshape[2], pshape[2], 1], np.int64)
        nz_crop = int(shp[2])
        nz = self.shape[2]
        pts = []
        for side, c in enumerate((rc, pc)):
            x, y, z, cls, b2 = self._boundary(c)
            pi = (x + pad[0]) * strides[0] + (y + pad[1]) * strides[1] + (z + pad[2])
            pts.append((pi, cls, b2, x, y, z + z0))
            self.nb3[side] = np.bincount(cls, minlength=n)
            self.nb2[side][:, z0:z0 + nz_crop] = np.bincount(cls[b2] * nz_crop + z[b2],
                                                             minlength=n * nz_crop).reshape(n, nz_crop)
        both3 = (self.nb3[0] > 0) & (self.nb3[1] > 0)
        both2 = (self.nb2[0] > 0) & (self.nb2[1] > 0)
        off3f = off3 @ strides
        off2f = off2 @ strides
        # one flat bool array holding the target boundaries: (level, side, class) x padded crop;
        # level 0 = in-plane (2D) boundary, level 1 = 3D boundary
        T = _scratch(4 * n * size)
        setpos = []
        for side in (0, 1):
            pi, cls, b2 = pts[side][:3]
            setpos.append(((2 + side) * n + cls) * size + pi)
            if self.do_images:
                setpos.append((side * n + cls[b2]) * size + pi[b2])
        try:
            for p in setpos:
                T[p] = True
            res3 = []
            if self.do_volume:
                # both directions in one search (reference voxels look for the prediction's
                # boundary and vice versa): half the vectorised rounds
                sels = [np.flatnonzero(both3[pts[side][1]]) for side in (0, 1)]
                q = np.concatenate([((2 + (1 - side)) * n + pts[side][1][sel]) * size + pts[side][0][sel]
                                    for side, sel in enumerate(sels)])
                d_all, j_all = _search(T, q, off3f, len3)
                cut = sels[0].size
                for side, sel in enumerate(sels):
                    d = d_all[:cut] if side == 0 else d_all[cut:]
                    j = j_all[:cut] if side == 0 else j_all[cut:]
                    self._fallback(d, sel, side, pts, planar=False)
                    res3.append((d, j, sel))
                (d_r, _, s_r), (d_p, _, s_p) = res3
                dd = DirectedDistances(d_p, pts[1][1][s_p], d_r, pts[0][1][s_r], n, np.arange(n))
                self.vol[:] = self._reduce(dd)
            if self.do_images:
                parts = []
                for side in (0, 1):
                    pi, cls, b2, x, y, z = pts[side]
                    sel = np.flatnonzero(b2 & both2[cls, z])
                    tgt2 = ((1 - side) * n + cls[sel]) * size
                    d = np.full(sel.size, np.nan)
                    if res3:
                        # the 3D distance is a lower bound of the in-plane one (the 2D boundary of
                        # the plane is part of the 3D boundary); when the nearest 3D boundary voxel
                        # found lies in the same plane and on the 2D boundary, both are equal
                        d3, j3, sel3 = res3[side]
                        pos = np.full(pi.size, -1, np.int64)
                        pos[sel3] = np.arange(sel3.size)
                        k = pos[sel]
                        jj = j3[k]
                        ok = jj >= 0
                        ok[ok] = off3[jj[ok], 2] == 0
                        idx = np.flatnonzero(ok)
                        ok[idx] = T[tgt2[idx] + pi[sel[idx]] + off3f[jj[idx]]]
                        d[ok] = d3[k[ok]]
                    parts.append((sel, tgt2 + pi[sel], d))
                rests = [np.flatnonzero(np.isnan(d)) for _, _, d in parts]
                found = _search(T, np.concatenate([qq[r] for (_, qq, _), r in zip(parts, rests)]), off2f, len2)[0]
                cut = rests[0].size
                res = []
                for side, ((sel, _, d), r) in enumerate(zip(parts, rests)):
                    d[r] = found[:cut] if side == 0 else found[cut:]
                    self._fallback(d, sel, side, pts, planar=True)
                    pi, cls, b2, x, y, z = pts[side]
                    res.append((d, cls[sel] * nz + z[sel]))
                (d_r, g_r), (d_p, g_p) = res
                dd = DirectedDistances(d_p, g_p, d_r, g_r, n * nz, np.repeat(np.arange(n), nz))
                self.img[:] = self._reduce(dd).reshape(n, nz, -1)
        finally:
            for p in setpos:
                T[p] = False

    def _fallback(self, d: np.ndarray, sel: np.ndarray, side: int, pts, planar: bool):
        """Answer exactly the queries the neighbour search left open (nearest point beyond its
        radius, e.g. a spurious blob far from the heart): brute force or a k-d tree."""
        open_ = np.flatnonzero(np.isnan(d))
        if open_.size == 0:
            return
        from scipy.spatial import cKDTree
        from scipy.spatial.distance import cdist

        sp = self.sp.copy()
        if planar:
            # keep planes apart: a point of another plane is farther than any point of this one
            sp[2] = 2.0 * float(np.linalg.norm(np.asarray(self.shape[:2]) * self.sp[:2])) + 1.0
        _, q_cls, _, qx, qy, qz = pts[side]
        _, t_cls, t_b2, tx, ty, tz = pts[1 - side]
        qsel = sel[open_]
        qc = q_cls[qsel]
        for ci in np.unique(qc):
            m = qc == ci
            tm = (t_cls == ci) & t_b2 if planar else t_cls == ci
            tgt = np.stack([tx[tm], ty[tm], tz[tm]], axis=1) * sp
            qq = qsel[m]
            q = np.stack([qx[qq], qy[qq], qz[qq]], axis=1) * sp
            if q.shape[0] * tgt.shape[0] <= 500_000:
                d[open_[m]] = cdist(q, tgt).min(axis=1)
            else:
                d[open_[m]] = cKDTree(tgt).query(q, k=1)[0]

    def _reduce(self, dd: "DirectedDistances") -> np.ndarray:
        """``(n_groups, k)``: each requested reducer over the directed distances of one level."""
        out = np.full((dd.n_groups, len(self.reducers)), np.nan)
        for j, (fn, prm) in enumerate(self.reducers):
            out[:, j] = fn(dd, prm)
        return out

    def volume_values(self, ci: int):
        """(values of the k metrics, status, n_ref boundary, n_pred boundary) of class ``ci`` in 3D."""
        nb = (int(self.nb3[0, ci]), int(self.nb3[1, ci]))
        return self.vol[ci].copy(), _status(*nb), *nb

    def image_values(self, ci: int):
        """Per-slice values ``(n_slices, k)``, statuses, boundary counts of class ``ci`` in 2D."""
        st = np.array([_status(a, b) for a, b in zip(self.nb2[0, ci], self.nb2[1, ci])], dtype=object)
        return self.img[ci].copy(), st, self.nb2[0, ci], self.nb2[1, ci]


def _status(n_ref: int, n_pred: int) -> str:
    if n_ref and n_pred:
        return OK
    if n_ref:
        return PRED_EMPTY
    if n_pred:
        return REF_EMPTY
    return BOTH_EMPTY


def foreground_bbox(ref: np.ndarray, pred: np.ndarray):
    """Bounding box ``[(lo, hi) per axis]`` (half-open) of the non-zero voxels of either 3D array, or
    None when both are all zero."""
    if ref.dtype.kind in "ub" and pred.dtype.kind in "ub" and ref.dtype == pred.dtype:
        m = ref | pred
    else:
        m = (ref != 0) | (pred != 0)
    rev = m.flags.f_contiguous and not m.flags.c_contiguous
    if rev:
        m = m.T
    # reduce over the leading axis first (contiguous rows), then the small rest
    i0 = np.flatnonzero(m.reshape(m.shape[0], -1).any(axis=1))
    if i0.size == 0:
        return None
    rest = m[i0[0]:i0[-1] + 1].any(axis=0)
    i1 = np.flatnonzero(rest.any(axis=1))
    i2 = np.flatnonzero(rest.any(axis=0))
    box = [(int(i0[0]), int(i0[-1]) + 1), (int(i1[0]), int(i1[-1]) + 1), (int(i2[0]), int(i2[-1]) + 1)]
    return box[::-1] if rev else box


def _search(T: np.ndarray, q: np.ndarray, offs: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit of each query: ``lens[j]`` for the first offset j with ``T[q + offs[j]]``.

    Offsets are sorted by length, so the first hit is the nearest. Returns (distances, j); queries
    without a hit in the list get NaN and j = -1. All open queries are processed together, a few
    offsets per round.
    """
    out = np.full(q.size, np.nan)
    hit_j = np.full(q.size, -1, np.int64)
    open_ = np.arange(q.size)
    start = 0
    m_off = offs.size
    while open_.size and start < m_off:
        # chunks double in length (1, 1, 2, 4, ...): a query resolved at offset i has paid for at
        # most 2 i + 1 offsets; the cap bounds the memory of one round
        m = max(1, min(m_off - start, start, _ROUND_ELEMENTS // open_.size))
        qo = q[open_]
        if m == 1:
            hit = T[qo + offs[start]]
            done = open_[hit]
            out[done] = lens[start]
            hit_j[done] = start
            open_ = open_[~hit]
        else:
            hit = T[qo[:, None] + offs[None, start:start + m]]
            first = hit.argmax(axis=1)
            anyh = hit[np.arange(first.size), first]
            done = open_[anyh]
            j = start + first[anyh]
            out[done] = lens[j]
            hit_j[done] = j
            open_ = open_[~anyh]
        start += m
    return out, hit_j


def _grouped_percentile(d: np.ndarray, g: np.ndarray, n_groups: int, q: float):
    """Per-group max, q-th percentile (numpy's ``linear`` method), sum and count of ``d`` by ``g``."""
    # sort by (group, distance) through one float key g * W + d with W a power of two larger than
    # every distance; d is read back from the sorted key, rounded to the key's precision
    # (< 1e-11 mm for up to 64 groups of distances below 2048 mm)
    w = 2.0 ** np.ceil(np.log2(float(d.max()) + 1.0)) if d.size else 1.0
    key = np.sort(g * w + d)
    gs = np.floor(key / w).astype(np.int64)
    ds = key - gs * w
    cnt = np.bincount(g, minlength=n_groups)
    start = np.cumsum(cnt) - cnt
    sums = np.bincount(g, weights=d, minlength=n_groups)
    mx = np.full(n_groups, np.nan)
    pc = np.full(n_groups, np.nan)
    has = np.flatnonzero(cnt)
    c = cnt[has]
    s = start[has]
    mx[has] = ds[s + c - 1]
    # numpy.percentile 'linear': virtual index (n - 1) q / 100, linear interpolation between the
    # neighbouring order statistics, computed from the nearer end as numpy's _lerp does
    pos = (c - 1) * (q / 100.0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, c - 1)
    t = pos - lo
    a = ds[s + lo]
    b = ds[s + hi]
    diff = b - a
    pc[has] = np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)
    return mx, pc, sums, cnt


class DirectedDistances:
    """The directed boundary distances of one level (volume or image), grouped by case and class.

    The engine computes them once per (level, case, class); every boundary metric is a reducer over
    them (:func:`reduce_hd` ... :func:`reduce_nsd`).

    Attributes:
        d_pr, g_pr: distances in mm from each prediction boundary voxel to the reference boundary,
            and the group id of each (float64 / int64 arrays of one length).
        d_rp, g_rp: the same from the reference to the prediction.
        n_groups: number of groups (classes, or classes x slices for the image level).
        group_class: ``(n_groups,)`` class index (0-based) of each group.
        n_pr, n_rp: ``(n_groups,)`` number of distances per group and direction.
        ok: ``(n_groups,)`` both directions have distances (both masks hold the class).
    """

    def __init__(self, d_pr: np.ndarray, g_pr: np.ndarray, d_rp: np.ndarray, g_rp: np.ndarray,
                 n_groups: int, group_class: np.ndarray):
        self.d_pr, self.g_pr, self.d_rp, self.g_rp = d_pr, g_pr, d_rp, g_rp
        self.n_groups = int(n_groups)
        self.group_class = np.asarray(group_class, np.int64)
        self._stats = None
        self.n_pr = np.bincount(g_pr, minlength=self.n_groups)
        self.n_rp = np.bincount(g_rp, minlength=self.n_groups)
        self.ok = (self.n_pr > 0) & (self.n_rp > 0)

    def order_stats(self):
        """Per group and direction (max, 95th percentile, sum, count); one sort per direction,
        computed on first use and shared by HD, HD95, ASSD and MASD."""
        if self._stats is None:
            self._stats = (_grouped_percentile(self.d_pr, self.g_pr, self.n_groups, PERCENTILE),
                           _grouped_percentile(self.d_rp, self.g_rp, self.n_groups, PERCENTILE))
        return self._stats

    def per_group(self, value) -> np.ndarray:
        """A parameter (one number, or one number per class index) as ``(n_groups,)`` floats."""
        v = np.asarray(value, np.float64)
        if v.ndim == 0:
            return np.full(self.n_groups, float(v))
        return v[self.group_class]


def reduce_hd(dd: DirectedDistances, params: dict) -> np.ndarray:
    """HD = ``max(max d(P->R), max d(R->P))`` per group (NaN where not ``ok``)."""
    (mx1, _, _, _), (mx2, _, _, _) = dd.order_stats()
    out = np.full(dd.n_groups, np.nan)
    out[dd.ok] = np.maximum(mx1[dd.ok], mx2[dd.ok])
    return out


def reduce_hd95(dd: DirectedDistances, params: dict) -> np.ndarray:
    """HD95 = ``max(p95 d(P->R), p95 d(R->P))`` per group (numpy's linear percentile)."""
    (_, p1, _, _), (_, p2, _, _) = dd.order_stats()
    out = np.full(dd.n_groups, np.nan)
    out[dd.ok] = np.maximum(p1[dd.ok], p2[dd.ok])
    return out


def reduce_assd(dd: DirectedDistances, params: dict) -> np.ndarray:
    """ASSD = ``(sum d(P->R) + sum d(R->P)) / (n_P + n_R)`` per group."""
    (_, _, s1, n1), (_, _, s2, n2) = dd.order_stats()
    ok = dd.ok
    out = np.full(dd.n_groups, np.nan)
    out[ok] = (s1[ok] + s2[ok]) / (n1[ok] + n2[ok])
    return out


def reduce_masd(dd: DirectedDistances, params: dict) -> np.ndarray:
    """MASD = ``(mean d(P->R) + mean d(R->P)) / 2`` per group."""
    (_, _, s1, n1), (_, _, s2, n2) = dd.order_stats()
    ok = dd.ok
    out = np.full(dd.n_groups, np.nan)
    out[ok] = (s1[ok] / n1[ok] + s2[ok] / n2[ok]) / 2.0
    return out


def reduce_nsd(dd: DirectedDistances, params: dict) -> np.ndarray:
    """NSD at tolerance tau (``params["tolerance_mm"]``, one number or one per class index):
    ``(#{d(P->R) <= tau} + #{d(R->P) <= tau}) / (n_P + n_R)`` per group (Nikolov et al. 2021,
    arXiv:1809.04430; MONAI ``SurfaceDiceMetric(use_subvoxels=False)``). NaN where not ``ok``;
    the one-side-empty value (0) is the protocol's worst case, applied by the caller."""
    tau = dd.per_group(params["tolerance_mm"]) + _TOL_SLACK_MM
    c1 = np.bincount(dd.g_pr, weights=dd.d_pr <= tau[dd.g_pr], minlength=dd.n_groups)
    c2 = np.bincount(dd.g_rp, weights=dd.d_rp <= tau[dd.g_rp], minlength=dd.n_groups)
    ok = dd.ok
    out = np.full(dd.n_groups, np.nan)
    out[ok] = (c1[ok] + c2[ok]) / (dd.n_pr[ok] + dd.n_rp[ok])
    return out


def _reducers(metrics: Sequence[str], params: dict, n_classes: int) -> list:
    """(reducer, parameters) of each metric from the registry, parameters checked."""
    from cardbench.benchmark.metric_registry import get_metric

    out = []
    for m in metrics:
        spec = get_metric(m)
        if spec.family != "distance" or spec.reducer is None:
            raise ValueError(f"metric {m!r} is not a boundary (distance-family) metric")
        prm = dict(spec.parameters)
        for k, v in (params.get(m) or {}).items():
            if k not in prm:
                raise ValueError(f"metric {m}: unknown parameter {k!r}; allowed: {', '.join(prm) or 'none'}")
            prm[k] = v
        if "tolerance_mm" in prm:
            t = np.asarray(prm["tolerance_mm"], np.float64)
            if t.ndim > 1 or (t.ndim == 1 and t.size != n_classes) or not np.all(np.isfinite(t)) or np.any(t <= 0):
                raise ValueError(f"metric {m}: tolerance_mm {prm['tolerance_mm']!r} must be one positive number "
                                 f"of mm or one per class ({n_classes})")
            prm["tolerance_mm"] = t
        out.append((spec.reducer, prm))
    return out

