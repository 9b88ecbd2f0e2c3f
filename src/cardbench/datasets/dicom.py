"""DICOM cine series to NIfTI: slice geometry, stacking, affines.

Geometry rules (DICOM PS3.3 C.7.6.2.1.1, "Image Position and Image Orientation"; nibabel's
"Defining the DICOM orientation" page):

* ``ImageOrientationPatient`` (IOP) holds two unit vectors in the patient (LPS) frame: ``IOP[:3]``
  is the direction in which the *column index* grows (along a row), ``IOP[3:]`` the direction in
  which the *row index* grows (down a column).
* ``PixelSpacing`` is ``(spacing between rows, spacing between columns)`` in mm, i.e.
  ``(row spacing, column spacing)``.
* ``ImagePositionPatient`` (IPP) is the LPS position (mm) of the *centre* of the first pixel
  (row 0, column 0).
* So pixel (row r, column c) of a slice lies at ``IPP + c * PixelSpacing[1] * IOP[:3] +
  r * PixelSpacing[0] * IOP[3:]``.
* The slice normal is ``n = IOP[:3] x IOP[3:]`` (cross product). A slice's position along the
  stack is ``IPP . n``. Slices are ordered by that position, ascending; the slice spacing is the
  difference of consecutive positions. ``SliceLocation``, ``InstanceNumber``, ``SliceThickness`` and
  ``SpacingBetweenSlices`` are never used for order or spacing (the Sunnybrook files carry a
  ``SliceLocation`` that steps 6.72 mm where the slices are 10 mm apart).
* NIfTI arrays are ``(x, y, slice[, frame])`` with ``x`` = DICOM column index and ``y`` = DICOM row
  index (the transpose of ``pixel_array``). The NIfTI affine maps ``(x, y, k)`` to RAS+ mm: DICOM
  LPS is turned into RAS by negating the first two world axes (``diag(-1, -1, 1)``), as in the
  NIfTI-1 standard (``nifti1.h``, qform/sform are RAS+).

Hence the affine written for a stack of ``K`` slices, ordered by position, is::

    LPS = [[ IOP[:3] * PixelSpacing[1],  IOP[3:] * PixelSpacing[0],  step,  IPP_0 ],
           [ 0, 0, 0, 1 ]]               (columns; step = (IPP_{K-1} - IPP_0) / (K - 1))
    RAS = diag(-1, -1, 1, 1) @ LPS

and every slice ``k`` must satisfy ``IPP_k = IPP_0 + k * step`` within a tolerance (else
:class:`DicomGeometryError`: the stack has gaps, duplicates or non-uniform spacing; the Kaggle
curation in :mod:`cardbench.datasets.kaggle` repairs such stacks).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from cardbench._util import atomic_write_bytes

#: DICOM patient coordinates (LPS) to NIfTI world coordinates (RAS): negate x and y.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: default tolerance (mm) on slice positions, in-plane spacing and orientation agreement.
DEFAULT_TOL_MM = 0.1
_REQUIRED = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")


@contextlib.contextmanager
def _quiet_vr():
    """Silence pydicom's "Invalid value for VR" warnings (e.g. UIDs with a leading zero in a
    component, as in the Sunnybrook files): harmless for geometry and pixels."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*Invalid value for VR", category=UserWarning)
        yield


class DicomError(ValueError):
    """A DICOM file cannot be used (unreadable, or a required tag is missing)."""


class DicomGeometryError(DicomError):
    """Slices cannot form one regular stack (orientation, spacing, size or position conflict)."""


@dataclass(frozen=True)
class SliceInfo:
    """Geometry and timing of one DICOM image (one slice at one frame).

    Attributes:
        source: where the image came from (file path or a label), for messages.
        rows, columns: image size (``Rows``, ``Columns``).
        pixel_spacing: ``PixelSpacing`` as ``(row spacing, column spacing)`` in mm.
        ipp: ``ImagePositionPatient``, shape (3,), LPS mm (centre of pixel row 0, column 0).
        iop: ``ImageOrientationPatient``, shape (6,): row direction (column index grows), then
            column direction (row index grows).
        instance_number, trigger_time (ms), series_number, series_uid, slice_location,
        cardiac_images (``CardiacNumberOfImages``): as in the file (None when absent);
        ``slice_location`` is kept for diagnostics only and never used for geometry.
    """

    source: str
    rows: int
    columns: int
    pixel_spacing: tuple[float, float]
    ipp: np.ndarray
    iop: np.ndarray
    instance_number: int | None = None
    trigger_time: float | None = None
    series_number: int | None = None
    series_uid: str | None = None
    slice_location: float | None = None
    cardiac_images: int | None = None

    @property
    def normal(self) -> np.ndarray:
        """Unit slice normal ``IOP[:3] x IOP[3:]`` (LPS), shape (3,)."""
        n = np.cross(self.iop[:3], self.iop[3:])
        return n / np.linalg.norm(n)

    @property
    def position(self) -> float:
        """Position of the slice along its own normal, ``IPP . normal`` (mm)."""
        return float(self.ipp @ self.normal)

    def pixel_to_lps(self, row, col) -> np.ndarray:
        """LPS position (mm) of the centre of pixel(s) ``(row, col)``; returns shape (..., 3)."""
        r = np.asarray(row, dtype=float)[..., None]
        c = np.asarray(col, dtype=float)[..., None]
        return (self.ipp + c * self.pixel_spacing[1] * self.iop[:3]
                + r * self.pixel_spacing[0] * self.iop[3:])


def _float_list(ds, tag: str, n: int, source: str) -> np.ndarray:
    try:
        v = np.array([float(x) for x in ds[tag].value], dtype=float)
    except (KeyError, TypeError, ValueError) as e:
        raise DicomError(f"{source}: tag {tag} is missing or not numeric ({e}); the file cannot be placed "
                         "in space: re-export it with its geometry tags") from e
    if v.shape != (n,):
        raise DicomError(f"{source}: tag {tag} has {v.size} values, expected {n}")
    return v


def _opt(ds, tag, cast):
    v = ds.get(tag)
    if v is None or v == "":
        return None
    try:
        return cast(v)
    except (TypeError, ValueError):
        return None


def slice_info(ds, source: str = "") -> SliceInfo:
    """Geometry of a pydicom Dataset.

    Raises:
        DicomError: a required tag (IPP, IOP, PixelSpacing, Rows, Columns) is missing or
            malformed, or IOP's two vectors are not unit length and orthogonal (tolerance 1e-3).
    """
    with _quiet_vr():
        return _slice_info(ds, source)


def _slice_info(ds, source: str) -> SliceInfo:
    source = source or str(getattr(ds, "filename", "") or "<dataset>")
    missing = [t for t in _REQUIRED if t not in ds]
    if missing:
        raise DicomError(f"{source}: missing DICOM tag(s) {missing}; cardbench needs "
                         f"{', '.join(_REQUIRED)} to place the image in space")
    ipp = _float_list(ds, "ImagePositionPatient", 3, source)
    iop = _float_list(ds, "ImageOrientationPatient", 6, source)
    ps = _float_list(ds, "PixelSpacing", 2, source)
    a, b = iop[:3], iop[3:]
    if not (abs(np.linalg.norm(a) - 1) < 1e-3 and abs(np.linalg.norm(b) - 1) < 1e-3 and abs(a @ b) < 1e-3):
        raise DicomError(f"{source}: ImageOrientationPatient {iop.tolist()} is not two orthogonal unit vectors")
    if np.any(ps <= 0):
        raise DicomError(f"{source}: PixelSpacing {ps.tolist()} must be positive")
    return SliceInfo(
        source=source, rows=int(ds.Rows), columns=int(ds.Columns), pixel_spacing=(float(ps[0]), float(ps[1])),
        ipp=ipp, iop=iop, instance_number=_opt(ds, "InstanceNumber", int),
        trigger_time=_opt(ds, "TriggerTime", float), series_number=_opt(ds, "SeriesNumber", int),
        series_uid=_opt(ds, "SeriesInstanceUID", str), slice_location=_opt(ds, "SliceLocation", float),
        cardiac_images=_opt(ds, "CardiacNumberOfImages", int),
    )


def read_dicom(source: str | os.PathLike | bytes, *, pixels: bool = True, name: str = ""):
    """Read a DICOM file (path or bytes) with pydicom.

    Args:
        source: a path or the file's bytes.
        pixels: also read the pixel data (False: headers only, faster).
        name: a label for messages when ``source`` is bytes.

    Returns:
        The pydicom ``Dataset``.

    Raises:
        DicomError: the file is not readable as DICOM.
    """
    import pydicom

    label = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    fp = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with _quiet_vr():
            return pydicom.dcmread(fp, stop_before_pixels=not pixels, force=False)
    except Exception as e:  # pydicom raises InvalidDicomError and others
        raise DicomError(f"{label}: not a readable DICOM file ({e}); check that the file is complete") from e


def pixel_data(ds, source: str = "") -> np.ndarray:
    """The image of a Dataset as ``(row, column)``, with the modality LUT (RescaleSlope/Intercept)
    applied; integer dtype is kept when there is no rescaling, float32 otherwise.

    Raises:
        DicomError: no pixel data, or it cannot be decoded.
    """
    source = source or str(getattr(ds, "filename", "") or "<dataset>")
    try:
        arr = ds.pixel_array
    except Exception as e:
        raise DicomError(f"{source}: pixel data missing or not decodable ({e}); compressed transfer syntaxes "
                         "need pydicom's optional decoders (pip install pylibjpeg)") from e
    if arr.ndim != 2:
        raise DicomError(f"{source}: expected one 2D image, got pixel data of shape {arr.shape} "
                         "(multi-frame or colour images are not supported)")
    slope = float(ds.get("RescaleSlope", 1) or 1)
    inter = float(ds.get("RescaleIntercept", 0) or 0)
    if slope != 1 or inter != 0:
        return (arr.astype(np.float32) * np.float32(slope) + np.float32(inter))
    return arr


@dataclass(frozen=True)
class StackGeometry:
    """A regular stack of parallel slices.

    Attributes:
        order: indices into the input slice list, sorted by position along the normal (ascending).
        positions: positions (mm) of the sorted slices along the normal, shape (K,).
        slice_spacing: distance (mm) between consecutive slices along the normal (0 for one slice,
            then ``fallback_spacing`` is used in the affine).
        pixel_spacing: ``(row spacing, column spacing)`` mm.
        shape: ``(x, y, K)`` = ``(Columns, Rows, K)``.
        affine_lps: 4x4, voxel ``(x, y, k)`` to DICOM LPS mm.
        affine: 4x4, voxel ``(x, y, k)`` to NIfTI RAS+ mm (``LPS_TO_RAS @ affine_lps``).
    """

    order: tuple[int, ...]
    positions: np.ndarray
    slice_spacing: float
    pixel_spacing: tuple[float, float]
    shape: tuple[int, int, int]
    affine_lps: np.ndarray
    affine: np.ndarray

    @property
    def zooms(self) -> tuple[float, float, float]:
        """Voxel size (x, y, slice) in mm: column spacing, row spacing, slice step length."""
        return tuple(float(np.linalg.norm(self.affine[:3, i])) for i in range(3))


def stack_geometry(slices: Sequence[SliceInfo], *, tol_mm: float = DEFAULT_TOL_MM,
                   fallback_spacing: float | None = None) -> StackGeometry:
    """Order slices along their common normal and compute the stack's affine.

    Args:
        slices: one :class:`SliceInfo` per slice position (one frame).
        tol_mm: tolerance (mm) for: equal orientation (each IOP component times the field of view),
            equal pixel spacing, and every slice lying at ``IPP_0 + k * step``.
        fallback_spacing: slice spacing for a single slice (default: 1 mm). Never read from the
            DICOM (SliceThickness is not the spacing).

    Returns:
        :class:`StackGeometry`; see the module docstring for the affine.

    Raises:
        DicomGeometryError: no slices; different image sizes, pixel spacings or orientations;
            two slices at the same position (within ``tol_mm``); gaps or non-uniform spacing.
    """
    if not slices:
        raise DicomGeometryError("no slices to stack")
    s0 = slices[0]
    fov = max(s0.rows * s0.pixel_spacing[0], s0.columns * s0.pixel_spacing[1])
    for s in slices[1:]:
        if (s.rows, s.columns) != (s0.rows, s0.columns):
            raise DicomGeometryError(f"{s.source}: image size {s.rows}x{s.columns} differs from {s0.source} "
                                     f"({s0.rows}x{s0.columns}); resample the slices to one grid first "
                                     "(see cardbench.datasets.kaggle)")
        if not np.allclose(s.pixel_spacing, s0.pixel_spacing, atol=tol_mm / max(s0.rows, s0.columns)):
            raise DicomGeometryError(f"{s.source}: PixelSpacing {s.pixel_spacing} differs from {s0.source} "
                                     f"{s0.pixel_spacing}; resample the slices to one grid first")
        if np.abs(s.iop - s0.iop).max() * fov > tol_mm:
            raise DicomGeometryError(f"{s.source}: ImageOrientationPatient {np.round(s.iop, 5).tolist()} differs "
                                     f"from {s0.source} {np.round(s0.iop, 5).tolist()}; slices of one stack must "
                                     "be parallel with the same in-plane orientation")
    n = s0.normal
    pos = np.array([s.ipp @ n for s in slices])
    order = tuple(int(i) for i in np.argsort(pos, kind="stable"))
    ps = np.array([slices[i].ipp for i in order])
    spos = pos[list(order)]
    gaps = np.diff(spos)
    if gaps.size and gaps.min() < tol_mm:
        i = int(np.argmin(gaps))
        a, b = slices[order[i]], slices[order[i + 1]]
        raise DicomGeometryError(f"{a.source} and {b.source}: two slices at the same position ({spos[i]:.3f} and "
                                 f"{spos[i + 1]:.3f} mm along the normal); keep one of them "
                                 "(cardbench.datasets.kaggle.remove_collisions)")
    k = len(order)
    if k > 1:
        step = (ps[-1] - ps[0]) / (k - 1)
        expected = ps[0] + np.arange(k)[:, None] * step
        dev = np.linalg.norm(ps - expected, axis=1)
        if dev.max() > tol_mm:
            j = int(np.argmax(dev))
            raise DicomGeometryError(
                f"{slices[order[j]].source}: slice positions are not evenly spaced (gaps along the normal: "
                f"{np.round(gaps, 3).tolist()} mm; this slice is {dev[j]:.3f} mm off a regular grid); a slice is "
                "missing or extra: repair the stack (cardbench.datasets.kaggle) or convert the slices separately")
        spacing = float(gaps.mean())
    else:
        spacing = 0.0
        step = n * (fallback_spacing if fallback_spacing else 1.0)
    lps = np.eye(4)
    lps[:3, 0] = s0.iop[:3] * s0.pixel_spacing[1]
    lps[:3, 1] = s0.iop[3:] * s0.pixel_spacing[0]
    lps[:3, 2] = step
    lps[:3, 3] = ps[0]
    return StackGeometry(order=order, positions=spos, slice_spacing=spacing, pixel_spacing=s0.pixel_spacing,
                         shape=(s0.columns, s0.rows, k), affine_lps=lps, affine=LPS_TO_RAS @ lps)


def nifti_image(data: np.ndarray, affine: np.ndarray, *, frame_time_ms: float | None = None):
    """A ``nibabel.Nifti1Image`` with sform and qform set to ``affine`` (code 1, scanner) and units
    mm (and s for a 4D cine whose frame interval ``frame_time_ms`` is given)."""
    import nibabel as nib

    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    if data.ndim == 4 and frame_time_ms:
        zooms = list(img.header.get_zooms())
        zooms[3] = frame_time_ms / 1000.0
        img.header.set_zooms(zooms)
    return img


def nifti_bytes(img, gz: bool = True) -> bytes:
    """Serialise a NIfTI image; gzip with mtime 0 so equal content gives byte-identical files."""
    raw = img.to_bytes()
    return gzip.compress(raw, compresslevel=6, mtime=0) if gz else raw


def save_nifti(img, path: str | os.PathLike) -> Path:
    """Write a NIfTI image atomically (``.nii.gz`` gzip-compressed, reproducible bytes)."""
    path = Path(path)
    atomic_write_bytes(path, nifti_bytes(img, gz=path.name.endswith(".gz")))
    return path


def stack_to_array(datasets: Sequence, geometry: StackGeometry) -> np.ndarray:
    """Pixel data of ``datasets`` (one per slice, input order) as ``(x, y, K)`` in ``geometry`` order."""
    arrays = [pixel_data(datasets[i]) for i in geometry.order]
    dtype = np.result_type(*arrays)
    return np.stack([a.T for a in arrays], axis=-1).astype(dtype, copy=False)


def stack_to_nifti(datasets: Sequence, *, tol_mm: float = DEFAULT_TOL_MM, fallback_spacing: float | None = None):
    """One frame: DICOM slices (any order) to a 3D NIfTI image ``(x, y, slice)``.

    Args:
        datasets: pydicom Datasets with pixel data, one per slice position.

    Returns:
        ``(nibabel.Nifti1Image, StackGeometry)``.

    Raises:
        DicomError, DicomGeometryError: see :func:`slice_info` and :func:`stack_geometry`.
    """
    infos = [slice_info(d) for d in datasets]
    geo = stack_geometry(infos, tol_mm=tol_mm, fallback_spacing=fallback_spacing)
    return nifti_image(stack_to_array(datasets, geo), geo.affine), geo


def group_cine(infos: Sequence[SliceInfo], *, tol_mm: float = DEFAULT_TOL_MM,
               frame_of: Callable[[SliceInfo, int], int] | None = None) -> dict[int, dict[int, int]]:
    """Group the images of a cine series by slice position and frame.

    Args:
        infos: every image of the series.
        frame_of: ``(info, rank) -> frame number``; default: the rank (1-based) of the image's
            ``TriggerTime`` among the images at the same position (``InstanceNumber`` breaks ties).

    Returns:
        ``{slice index (ascending position, 0-based): {frame: index into infos}}``.

    Raises:
        DicomGeometryError: two images at one (position, frame).
    """
    if not infos:
        return {}
    n = infos[0].normal
    pos = np.array([i.ipp @ n for i in infos])
    order = np.argsort(pos, kind="stable")
    groups: list[list[int]] = []
    for i in order:
        if groups and abs(pos[i] - pos[groups[-1][0]]) <= tol_mm:
            groups[-1].append(int(i))
        else:
            groups.append([int(i)])
    out: dict[int, dict[int, int]] = {}
    for k, members in enumerate(groups):
        members.sort(key=lambda i: (infos[i].trigger_time if infos[i].trigger_time is not None else np.inf,
                                    infos[i].instance_number or 0))
        frames: dict[int, int] = {}
        for rank, i in enumerate(members, start=1):
            f = frame_of(infos[i], rank) if frame_of else rank
            if f in frames:
                raise DicomGeometryError(f"{infos[i].source} and {infos[frames[f]].source}: two images at slice "
                                         f"position {pos[i]:.3f} mm and frame {f}")
            frames[f] = i
        out[k] = frames
    return out


def frame_from_instance(info: SliceInfo, rank: int) -> int:
    """Frame number (1-based) from ``InstanceNumber`` when images are numbered slice by slice,
    ``InstanceNumber = (slice - 1) * CardiacNumberOfImages + frame`` (GE, the Sunnybrook data).

    Raises:
        DicomGeometryError: InstanceNumber or CardiacNumberOfImages missing.
    """
    if info.instance_number is None or not info.cardiac_images:
        raise DicomGeometryError(f"{info.source}: InstanceNumber and CardiacNumberOfImages are needed to number "
                                 "frames when slice positions have different numbers of images")
    return (info.instance_number - 1) % info.cardiac_images + 1


def frame_numbering(infos: Sequence[SliceInfo], tol_mm: float = DEFAULT_TOL_MM):
    """Choose how frames are numbered: ``None`` (rank of TriggerTime at each position) when every
    position has the same number of images, else :func:`frame_from_instance`.

    Raises:
        DicomGeometryError: positions differ in image count and InstanceNumber/CardiacNumberOfImages
            are missing.
    """
    groups = group_cine(infos, tol_mm=tol_mm)
    counts = {len(g) for g in groups.values()}
    if len(counts) <= 1:
        return None
    for i in infos:
        frame_from_instance(i, 0)
    return frame_from_instance


def cine_to_nifti(datasets: Sequence, *, frames: Iterable[int] | None = None, cine: bool = False,
                  tol_mm: float = DEFAULT_TOL_MM, frame_of: Callable[[SliceInfo, int], int] | None = None,
                  fallback_spacing: float | None = None) -> dict:
    """A cine series (all slices x all frames, any order) to NIfTI images.

    Args:
        datasets: pydicom Datasets with pixel data.
        frames: frames to stack (default: every frame present at every slice position).
        cine: also build one 4D image ``(x, y, slice, frame)`` of those frames, in frame order.
        frame_of: see :func:`group_cine`.

    Returns:
        ``{frame: Nifti1Image (x, y, slice)}``, plus key ``"cine"`` -> 4D image when ``cine``.
        The 4D image's ``pixdim[4]`` is the median TriggerTime step (s) when available.

    Raises:
        DicomGeometryError: a requested frame is missing at some slice position, or the slices of a
            frame do not form a regular stack.
    """
    infos = [slice_info(d) for d in datasets]
    groups = group_cine(infos, tol_mm=tol_mm, frame_of=frame_of)
    common = set.intersection(*(set(g) for g in groups.values())) if groups else set()
    wanted = sorted(common) if frames is None else list(frames)
    for f in wanted:
        lacking = [k for k, g in groups.items() if f not in g]
        if lacking:
            raise DicomGeometryError(f"frame {f} is missing at slice position(s) {lacking} (0-based, ascending "
                                     "along the normal); choose frames present at every slice")
    out: dict = {}
    geo0 = None
    vols = []
    for f in wanted:
        idx = [groups[k][f] for k in sorted(groups)]
        geo = stack_geometry([infos[i] for i in idx], tol_mm=tol_mm, fallback_spacing=fallback_spacing)
        if geo0 is None:
            geo0 = geo
        elif not np.allclose(geo.affine, geo0.affine, atol=tol_mm):
            raise DicomGeometryError(f"frame {f}: its stack geometry differs from frame {wanted[0]}'s")
        arr = stack_to_array([datasets[i] for i in idx], geo)
        out[f] = nifti_image(arr, geo.affine)
        vols.append(arr)
    if cine and vols:
        tt = []
        for k in sorted(groups):
            t = [infos[groups[k][f]].trigger_time for f in wanted]
            if all(x is not None for x in t) and len(t) > 1:
                tt.extend(np.diff(t))
        dt = float(np.median(tt)) if tt else None
        out["cine"] = nifti_image(np.stack(vols, axis=-1), geo0.affine, frame_time_ms=dt)
    return out


def voxel_to_lps(affine_ras: np.ndarray, ijk) -> np.ndarray:
    """Apply a RAS affine to voxel indices ``ijk`` (shape (..., 3)) and return LPS mm (..., 3)."""
    ijk = np.asarray(ijk, dtype=float)
    ras = ijk @ affine_ras[:3, :3].T + affine_ras[:3, 3]
    return ras * np.array([-1.0, -1.0, 1.0])


def dicom_files(folder: str | os.PathLike) -> list[Path]:
    """Every file below ``folder`` that starts like DICOM (``DICM`` at byte 128) or ends in ``.dcm``,
    sorted by path."""
    out = []
    for p in sorted(Path(folder).rglob("*")):
        if not p.is_file() or p.name.startswith("."):
            continue
        if p.suffix.lower() == ".dcm":
            out.append(p)
            continue
        try:
            with open(p, "rb") as fh:
                head = fh.read(132)
        except OSError:
            continue
        if head[128:132] == b"DICM":
            out.append(p)
    return out
