"""Curation of the Kaggle Data Science Bowl cine DICOM studies into 4D NIfTI, as the seed documents.

Ankenbrand et al. 2021 converted the 1140 Kaggle studies (``code/kaggle/dcm2nifti.py`` and
``kaggle_split_multiseries.sh`` of chfc-cmi/cmr-seg-tl) with these steps, logging every problem and
its resolution per patient in ``analysis/kaggle/conversion.log``; cardbench does the same steps
with its own geometry code and writes the same log format (tab-separated
``patient, problem, resolution, file, detail``, no header; the seed's problem names are kept verbatim,
including its spelling "collission", so the two logs can be compared line by line):

1. **Split repeated series**: a folder holding several slice positions is split into one cine
   slice per position (``multi-slice series`` / ``split``); a study holding two acquisitions of
   the heart is split into ``<patient>_a`` and ``<patient>_b`` by folder (``repeated series`` /
   ``split``), with the seed's manual decisions in :data:`SEED_STUDY_SPLITS`.
2. **Orientation**: the mode of ``ImageOrientationPatient`` (rounded to 3 decimals) is the stack's
   orientation; a slice whose normal is not parallel to it (|cos| < 0.999) is removed
   (``orientation`` / ``slice removed``, angle between normals); a parallel slice with another
   in-plane orientation is resampled onto the stack's grid (``rotation`` / ``rotation``, degrees).
3. **Duplicate slice positions** (closer than 1 mm along the normal; positions from
   ``ImagePositionPatient``, never ``SliceLocation``): the later acquisition is kept (higher
   ``SeriesNumber``; same series: the later file name) (``collission`` / ``slice removed``).
4. **Slice spacing**: the expected spacing is the mode of the gaps (rounded to 0.01 mm). A gap of
   twice the spacing (+-1 mm) is a missing slice, filled with a copy of the previous slice
   (``slice spacing: missing`` / ``previous slice copied``); an extra slice between two regular
   neighbours is removed (``slice spacing: interspersed``), so is a slice more than 2.5 spacings away
   at an end (``slice spacing: outlier``) or an end slice off by more than 2.5 mm (``slice spacing:
   top``/``bottom``); anything else is logged (``slice spacing: special`` / ``none``) and the stack is
   written with the expected spacing, as the seed did.
5. **Size**: images larger than ``target_size`` (256) pixels in either direction are scaled down by
   ``target_size / max(rows, columns)`` (``image size >256`` / ``scaled``); slices with another pixel
   spacing or size are resampled onto the stack's grid (``pixel spacing`` / ``image size`` /
   ``scaling/padding/cropping``). Resampling is linear interpolation with a Gaussian pre-filter of
   sigma ``(1/scale - 1)/2`` pixels when shrinking (scikit-image's ``rescale`` anti-aliasing rule),
   centred on the slice centre, and the affine follows the new grid exactly.
6. **Frames**: ordered by ``TriggerTime``; a slice with fewer frames than the mode gets copies of
   its previous frame (``missing frame`` / ``previous frame copied``), extra frames are dropped
   (``extra frames`` / ``frames dropped``).
7. **NIfTI**: ``<out>/<patient>/sa.nii.gz``, float32 ``(x, y, slice, frame)``, affine in RAS from IPP/IOP
   (see :mod:`cardbench.datasets.dicom`), ``pixdim[4]`` the frame interval in s. When Rows <
   Columns (x longer than y) a copy rotated by 90 degrees is written to
   ``<out>/<patient>_rot90/sa.nii.gz`` (``np.rot90(volume, 3)``), keeping the original; unlike the
   seed, the copy's affine is rotated too, so both files place every voxel at the same position
   (``rows<columns`` / ``rotated copy added``).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from cardbench.datasets.dicom import (LPS_TO_RAS, DicomError, SliceInfo, dicom_files, nifti_image, pixel_data,
                                      read_dicom, save_nifti, slice_info)

LOG_COLUMNS = ("patient", "problem", "resolution", "file", "detail")

#: The seed's manual study splits (kaggle_split_multiseries.sh): patient -> {suffix: folders};
#: ``None`` means "every other folder".
SEED_STUDY_SPLITS: dict[str, dict[str, list[str] | None]] = {
    "1082": {"a": ["sax_10"], "b": None},
    "1111": {"a": None, "b": ["sax_32"]},
    "721": {"a": None, "b": ["sax_47"]},
    "793": {"a": None, "b": ["sax_41"]},
    "123": {"a": ["sax_10"], "b": None},
    "334": {"a": None, "b": ["sax_29"]},
    "437": {"a": None, "b": [f"sax_{i}" for i in range(12, 23)]},
    "516": {"a": None, "b": ["sax_104"]},
    "619": {"a": None, "b": ["sax_21"]},
}


@dataclass(frozen=True)
class LogEntry:
    """One line of a conversion log: what was wrong and what was done."""

    patient: str
    problem: str
    resolution: str
    file: str = ""
    detail: str = ""

    def line(self) -> str:
        """The log line: the five fields tab-separated (tabs and newlines inside a field become spaces)."""
        return "\t".join(str(x).replace("\t", " ").replace("\n", " ") for x in
                         (self.patient, self.problem, self.resolution, self.file, self.detail))


@dataclass
class CurationLog:
    """Problems and resolutions, in the seed's ``conversion.log`` format."""

    entries: list[LogEntry] = field(default_factory=list)

    def add(self, patient: str, problem: str, resolution: str, file: str = "", detail: str = "") -> None:
        """Record one problem and what was done about it."""
        self.entries.append(LogEntry(patient, problem, resolution, str(file), detail))

    def text(self) -> str:
        """The whole log as text, one line per entry."""
        return "".join(e.line() + "\n" for e in self.entries)

    def write(self, path: str | os.PathLike) -> None:
        """Write the log atomically (tab-separated, no header, as the seed's conversion.log)."""
        from cardbench._util import atomic_write_text

        atomic_write_text(path, self.text())

    def of(self, patient: str) -> list[LogEntry]:
        """The entries logged under ``patient`` (the study id, or ``<id>_a``/``<id>_b`` after a split)."""
        return [e for e in self.entries if e.patient == patient]


def read_conversion_log(path: str | os.PathLike):
    """A conversion log (the seed's or ours) as a DataFrame with columns :data:`LOG_COLUMNS`."""
    import pandas as pd

    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        parts = line.split("\t")
        parts = (parts + [""] * 5)[:5]
        rows.append(parts)
    return pd.DataFrame(rows, columns=list(LOG_COLUMNS))


@dataclass
class CineSlice:
    """One slice position of a study with its frames.

    Attributes:
        name: display name (the first frame's file).
        info: geometry of the first frame.
        frames: sources (paths) ordered by TriggerTime.
        folder: the folder the files are in (``sax_12``).
        position: position along the stack normal (mm), set by :func:`curate_slices`.
        copy_of: for a filled missing slice, the slice it copies.
    """

    name: str
    info: SliceInfo
    frames: list[str]
    folder: str
    position: float = float("nan")
    copy_of: "CineSlice | None" = None


def read_study(study_dir: str | os.PathLike, patient: str, log: CurationLog,
               tol_mm: float = 0.01) -> list[CineSlice]:
    """Read the headers of every DICOM file below ``study_dir`` into cine slices.

    Files are grouped by folder and by position along their own normal (within ``tol_mm``); a
    folder holding several positions is split (logged). Frames are ordered by TriggerTime, then
    InstanceNumber.

    Raises:
        FileNotFoundError: no DICOM files.
        DicomError: a file without the geometry tags.
    """
    study_dir = Path(study_dir)
    files = dicom_files(study_dir)
    if not files:
        raise FileNotFoundError(f"{study_dir}: no DICOM files")
    by_folder: dict[str, list[SliceInfo]] = {}
    for f in files:
        info = slice_info(read_dicom(f, pixels=False), str(f))
        by_folder.setdefault(str(f.parent.relative_to(study_dir)), []).append(info)
    out: list[CineSlice] = []
    for folder in sorted(by_folder, key=_natural):
        infos = by_folder[folder]
        groups: list[list[SliceInfo]] = []
        for i in sorted(infos, key=lambda x: x.position):
            if groups and abs(i.position - groups[-1][0].position) <= tol_mm:
                groups[-1].append(i)
            else:
                groups.append([i])
        if len(groups) > 1:
            log.add(patient, "multi-slice series", "split", folder, f"{len(groups)} slice positions in one folder")
        for g in groups:
            g.sort(key=lambda x: (x.trigger_time if x.trigger_time is not None else math.inf,
                                  x.instance_number or 0, x.source))
            out.append(CineSlice(g[0].source, g[0], [x.source for x in g], Path(folder).name))
    return out


def _natural(s: str):
    import re

    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", s) if t]


def split_study(slices: Sequence[CineSlice], patient: str, groups: dict[str, list[str] | None],
                log: CurationLog) -> dict[str, list[CineSlice]]:
    """Split a study holding repeated series into ``<patient>_<suffix>`` by folder name.

    Args:
        groups: suffix -> folder names (one suffix may be ``None``: every other folder).

    Raises:
        ValueError: a listed folder does not exist, or more than one suffix is ``None``.
    """
    rest = [k for k, v in groups.items() if v is None]
    if len(rest) > 1:
        raise ValueError(f"{patient}: only one group may take the remaining folders")
    folders = {s.folder for s in slices}
    out: dict[str, list[CineSlice]] = {}
    taken: set[str] = set()
    for suffix, fl in groups.items():
        if fl is None:
            continue
        missing = sorted(set(fl) - folders)
        if missing:
            raise ValueError(f"{patient}: folders {missing} listed for split '{suffix}' are not in the study")
        out[f"{patient}_{suffix}"] = [s for s in slices if s.folder in fl]
        taken |= set(fl)
    if rest:
        out[f"{patient}_{rest[0]}"] = [s for s in slices if s.folder not in taken]
    for pid, ss in out.items():
        log.add(patient, "repeated series", "split", ",".join(sorted({s.folder for s in ss}, key=_natural)), pid)
    return out


def _angle(a: np.ndarray, b: np.ndarray) -> float:
    c = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    return math.degrees(math.acos(max(-1.0, min(1.0, c))))


@dataclass
class CuratedStack:
    """A repaired stack, ready to convert.

    Attributes:
        patient: output id.
        slices: ordered by position along the normal (ascending); copies included.
        iop: the stack's orientation (6,).
        spacing: expected slice spacing (mm).
        pixel_spacing: (row, column) spacing of the output grid (mm), after scaling.
        size: (rows, columns) of the output grid.
        scale: the downscale factor (1.0 when not scaled).
        centre: LPS point (3,) whose in-plane coordinates are the grid centre.
        n_frames: frames per slice.
        source_size: the mode (rows, columns) of the input slices.
        source_pixel_spacing: the mode (row, column) pixel spacing of the input slices (mm).
    """

    patient: str
    slices: list[CineSlice]
    iop: np.ndarray
    spacing: float
    pixel_spacing: tuple[float, float]
    size: tuple[int, int]
    scale: float
    centre: np.ndarray
    n_frames: int
    source_size: tuple[int, int] = (0, 0)
    source_pixel_spacing: tuple[float, float] = (0.0, 0.0)

    @property
    def normal(self) -> np.ndarray:
        """Unit normal of the stack, ``IOP[:3] x IOP[3:]`` (LPS)."""
        n = np.cross(self.iop[:3], self.iop[3:])
        return n / np.linalg.norm(n)

    def affine_lps(self) -> np.ndarray:
        """Voxel (x, y, k) to LPS for the output grid; slice k at ``positions[0] + k * spacing``."""
        rows, cols = self.size
        dr, dc = self.pixel_spacing
        u, v, n = self.iop[:3], self.iop[3:], self.normal
        p0 = self.slices[0].position
        origin = (self.centre - (self.centre @ n) * n + p0 * n
                  - (cols - 1) / 2 * dc * u - (rows - 1) / 2 * dr * v)
        a = np.eye(4)
        a[:3, 0] = u * dc
        a[:3, 1] = v * dr
        a[:3, 2] = n * self.spacing
        a[:3, 3] = origin
        return a


def _mode(values: Iterable):
    c = Counter(values)
    top = max(c.values())
    return sorted(k for k, v in c.items() if v == top)[-1]


def remove_collisions(slices: list[CineSlice], patient: str, log: CurationLog, min_gap_mm: float = 1.0) -> list[CineSlice]:
    """Remove one of two slices closer than ``min_gap_mm`` along the normal: keep the later
    acquisition (higher SeriesNumber; same series: the later file name). ``slices`` must be sorted
    by position."""
    out: list[CineSlice] = []
    for s in slices:
        if out and s.position - out[-1].position < min_gap_mm:
            prev = out[-1]
            ks = (prev.info.series_number or 0, prev.name)
            kn = (s.info.series_number or 0, s.name)
            keep, drop = (s, prev) if kn > ks else (prev, s)
            log.add(patient, "collission", "slice removed", drop.name,
                    f"{keep.name} ({drop.position},{keep.position})")
            out[-1] = keep
        else:
            out.append(s)
    return out


def _fix_spacing(slices: list[CineSlice], expected: float, patient: str, log: CurationLog) -> list[CineSlice]:
    """Fill missing slices, remove interspersed/outlier/end slices; log what remains irregular."""
    ss = list(slices)
    # missing slices (gap of twice the spacing): copy the previous slice
    filled: list[CineSlice] = []
    for i, s in enumerate(ss):
        if filled:
            gap = s.position - filled[-1].position
            if abs(gap - 2 * expected) <= 1.0:
                prev = filled[-1]
                log.add(patient, "slice spacing: missing", "previous slice copied", prev.name,
                        f"expected: {expected}, actual: {gap}")
                filled.append(replace(prev, position=prev.position + expected, copy_of=prev))
        filled.append(s)
    ss = filled
    changed = True
    while changed and len(ss) > 2:
        changed = False
        pos = np.array([s.position for s in ss])
        gaps = np.diff(pos)
        ok = np.abs(gaps - expected) <= 1.0
        for i in np.where(~ok)[0]:
            if gaps[i] > 2.5 * expected:
                j = i + 1 if i > len(ss) / 2 else i
                log.add(patient, "slice spacing: outlier", "slice removed", ss[j].name,
                        f"expected: {expected}, actual: {gaps[i]}")
                del ss[j]
                changed = True
                break
            if i + 1 < len(gaps) and abs(gaps[i] + gaps[i + 1] - expected) <= 1.0:
                log.add(patient, "slice spacing: interspersed", "slice removed", ss[i + 1].name,
                        f"expected: {expected}, actual: {gaps[i]} and {gaps[i + 1]}")
                del ss[i + 1]
                changed = True
                break
        if changed:
            continue
        if len(ok) > 1 and ok[1] and not ok[0] and abs(gaps[0] - expected) > 2.5:
            log.add(patient, "slice spacing: top", "slice removed", ss[0].name,
                    f"expected: {expected}, actual: {gaps[0]}")
            del ss[0]
            changed = True
        elif len(ok) > 1 and ok[-2] and not ok[-1] and abs(gaps[-1] - expected) > 2.5:
            log.add(patient, "slice spacing: bottom", "slice removed", ss[-1].name,
                    f"expected: {expected}, actual: {gaps[-1]}")
            del ss[-1]
            changed = True
    pos = np.array([s.position for s in ss])
    for i, g in enumerate(np.diff(pos)):
        if abs(g - expected) > 1.0:
            log.add(patient, "slice spacing: special", "none", ss[i].name,
                    f"expected: {expected}, actual: {g}, next slices: {ss[i + 1].name}")
    return ss


def curate_slices(slices: Sequence[CineSlice], patient: str, log: CurationLog, *,
                  target_size: int = 256) -> CuratedStack:
    """Apply steps 2 to 6 of the module docstring (logging each problem); returns the stack plan.

    Raises:
        DicomError: no slice left.
    """
    if not slices:
        raise DicomError(f"{patient}: no slices")
    iops = [tuple(np.round(s.info.iop, 3)) for s in slices]
    mode_iop = np.array(_mode(iops), dtype=float)
    ref = next(s for s, o in zip(slices, iops) if np.allclose(o, mode_iop))
    n_ref = np.cross(ref.info.iop[:3], ref.info.iop[3:])
    n_ref /= np.linalg.norm(n_ref)
    kept = []
    for s, o in zip(slices, iops):
        if np.allclose(s.info.iop, ref.info.iop, atol=0.01):
            kept.append(s)
            continue
        cos = float(s.info.normal @ n_ref)
        if abs(cos) >= 0.999:
            kept.append(s)  # parallel: resampled (and logged) at conversion
        else:
            log.add(patient, "orientation", "slice removed", s.name,
                    f"angleBetweenNorms:{math.degrees(math.acos(max(-1.0, min(1.0, cos))))}")
    for s in kept:
        s.position = float(s.info.ipp @ n_ref)
    kept.sort(key=lambda s: s.position)
    kept = remove_collisions(kept, patient, log)
    if len(kept) > 1:
        expected = float(_mode(np.round(np.diff([s.position for s in kept]), 2)))
        kept = _fix_spacing(kept, expected, patient, log)
    else:
        expected = 1.0
    pss = [tuple(np.round(s.info.pixel_spacing, 6)) for s in kept]
    ps = _mode(pss)
    dims = _mode([(s.info.rows, s.info.columns) for s in kept])
    rows, cols = dims
    scale = 1.0
    out_ps = (float(ps[0]), float(ps[1]))
    if max(rows, cols) > target_size:
        scale = target_size / max(rows, cols)
        log.add(patient, f"image size >{target_size}", "scaled", "",
                f"({cols},{rows}) scaling down with factor: {scale}")
        rows, cols = round(rows * scale), round(cols * scale)
        out_ps = (out_ps[0] / scale, out_ps[1] / scale)
    n_frames = _mode([len(s.frames) for s in kept])
    centre = ref.info.pixel_to_lps((ref.info.rows - 1) / 2, (ref.info.columns - 1) / 2)
    return CuratedStack(patient, kept, ref.info.iop.copy(), expected, out_ps, (rows, cols), scale, centre, n_frames,
                        source_size=tuple(dims), source_pixel_spacing=(float(ps[0]), float(ps[1])))


def _resample(img: np.ndarray, src: SliceInfo, stack: CuratedStack, position: float) -> np.ndarray:
    """Sample a source image (row, col) onto the output grid of ``stack`` at ``position``;
    returns (rows, cols) float32."""
    from scipy import ndimage

    rows, cols = stack.size
    a = stack.affine_lps()
    # LPS of output pixel centres (row r, col c) in this slice's plane
    origin = a[:3, 3] + (position - stack.slices[0].position) * stack.normal
    r, c = np.mgrid[0:rows, 0:cols].astype(float)
    pts = origin + c[..., None] * a[:3, 0] + r[..., None] * a[:3, 1]
    d = pts - src.ipp
    sc = d @ src.iop[:3] / src.pixel_spacing[1]
    sr = d @ src.iop[3:] / src.pixel_spacing[0]
    if (img.shape == (rows, cols) and np.allclose(sr, r, atol=1e-6) and np.allclose(sc, c, atol=1e-6)):
        return img.astype(np.float32)
    data = img.astype(np.float32)
    fr = stack.pixel_spacing[0] / src.pixel_spacing[0]  # output pixel size in source pixels
    fc = stack.pixel_spacing[1] / src.pixel_spacing[1]
    sigma = (max(0.0, (fr - 1) / 2), max(0.0, (fc - 1) / 2))
    if max(sigma) > 0:
        data = ndimage.gaussian_filter(data, sigma=sigma, mode="nearest")
    return ndimage.map_coordinates(data, [sr, sc], order=1, mode="constant", cval=0.0).astype(np.float32)


def rot90_affine(affine: np.ndarray, nx: int) -> np.ndarray:
    """Affine of ``np.rot90(volume, 3, axes=(0, 1))`` for a volume with ``nx`` voxels along x.

    ``B = rot90(A, 3)`` has ``B[i, j] = A[nx - 1 - j, i]``, so voxel (i, j, k) of B is voxel
    (nx - 1 - j, i, k) of A and ``affine_B = affine_A @ M`` with
    ``M = [[0, -1, 0, nx - 1], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]``.
    """
    m = np.array([[0, -1, 0, nx - 1], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    return np.asarray(affine, float) @ m


def convert_stack(stack: CuratedStack, out: str | os.PathLike, log: CurationLog,
                  read=None) -> dict:
    """Resample every slice and frame of a curated stack and write ``<out>/<patient>/sa.nii.gz``
    (and the ``_rot90`` copy when Rows < Columns).

    Args:
        read: ``source -> pydicom Dataset`` (default: read the file).

    Returns:
        A ``patient_dimensions.tsv`` row: pid, X, Y, pixelSpacingX, pixelSpacingY, sliceSpacing,
        scaleFactor (X = columns, Y = rows of the output grid).
    """
    read = read or (lambda p: read_dicom(p))
    rows, cols = stack.size
    T = stack.n_frames
    vol = np.zeros((cols, rows, len(stack.slices), T), dtype=np.float32)
    ref_ps = stack.source_pixel_spacing
    times = []
    for k, s in enumerate(stack.slices):
        src = s.copy_of or s
        first = s.copy_of is None
        if first and not np.allclose(src.info.iop, stack.iop, atol=0.01):
            log.add(stack.patient, "rotation", "rotation", src.name,
                    f"{_angle(stack.iop[:3], src.info.iop[:3])} degrees")
        if first and not np.allclose(src.info.pixel_spacing, ref_ps, rtol=1e-4):
            log.add(stack.patient, "pixel spacing", "scaling/padding/cropping", src.name,
                    f"expected: {ref_ps}, actual: {src.info.pixel_spacing}")
        if first and (src.info.rows, src.info.columns) != tuple(stack.source_size):
            log.add(stack.patient, "image size", "scaling/padding/cropping", src.name,
                    f"expected: {tuple(stack.source_size)}, actual: {(src.info.rows, src.info.columns)}")
        if first and len(src.frames) > T:
            log.add(stack.patient, "extra frames", "frames dropped", src.name, f"{len(src.frames)} frames, kept {T}")
        frame_times = []
        for t in range(T):
            if t < len(src.frames):
                ds = read(src.frames[t])
                vol[:, :, k, t] = _resample(pixel_data(ds, src.frames[t]), slice_info(ds, src.frames[t]),
                                            stack, s.position).T
                tt = ds.get("TriggerTime")
                frame_times.append(float(tt) if tt not in (None, "") else None)
            else:
                if first:
                    log.add(stack.patient, "missing frame", "previous frame copied", src.frames[-1], f"frame: {t}")
                vol[:, :, k, t] = vol[:, :, k, t - 1]
        ft = [x for x in frame_times if x is not None]
        if len(ft) > 1:
            times.extend(np.diff(ft))
    affine = LPS_TO_RAS @ stack.affine_lps()
    dt = float(np.median(times)) if times else None
    out = Path(out)
    save_nifti(nifti_image(vol, affine, frame_time_ms=dt), out / stack.patient / "sa.nii.gz")
    if cols > rows:
        rot = np.ascontiguousarray(np.rot90(vol, 3, axes=(0, 1)))
        save_nifti(nifti_image(rot, rot90_affine(affine, cols), frame_time_ms=dt),
                   out / f"{stack.patient}_rot90" / "sa.nii.gz")
        log.add(stack.patient, "rows<columns", "rotated copy added", "", f"{stack.patient}_rot90 (rows {rows} < "
                f"columns {cols}); original kept")
    return {"pid": stack.patient, "X": cols, "Y": rows, "pixelSpacingX": stack.pixel_spacing[1],
            "pixelSpacingY": stack.pixel_spacing[0], "sliceSpacing": stack.spacing, "scaleFactor": stack.scale}


def curate_study(study_dir: str | os.PathLike, out: str | os.PathLike, patient: str, log: CurationLog, *,
                 splits: dict[str, list[str] | None] | None = None, target_size: int = 256) -> list[dict]:
    """Curate and convert one Kaggle study (all steps); returns the patient_dimensions rows.

    Args:
        study_dir: the study folder (holding ``sax_*`` folders).
        patient: the patient id (e.g. ``"123"``).
        splits: repeated-series split for this study (default: :data:`SEED_STUDY_SPLITS`).
    """
    slices = read_study(study_dir, patient, log)
    groups = splits if splits is not None else SEED_STUDY_SPLITS.get(patient)
    parts = split_study(slices, patient, groups, log) if groups else {patient: slices}
    rows = []
    for pid, ss in parts.items():
        stack = curate_slices(ss, pid, log, target_size=target_size)
        rows.append(convert_stack(stack, out, log))
    return rows


def curate_kaggle(raw_root: str | os.PathLike, out: str | os.PathLike, *, target_size: int = 256,
                  progress: bool = True) -> tuple[CurationLog, list[dict]]:
    """Curate every ``<...>/<patient>/study`` folder below ``raw_root`` (the Kaggle download:
    ``train/train/<id>/study``, ``validate/validate/<id>/study``, ``test/test/<id>/study``).

    Writes ``<out>/<patient>/sa.nii.gz`` (+ ``_rot90``), ``<out>/conversion.log`` and
    ``<out>/patient_dimensions.tsv``. A study that cannot be converted is logged
    (``failed`` / ``not converted``) and the others go on.
    """
    from cardbench._progress import progress as _progress
    from cardbench._util import atomic_write_text

    studies = sorted(Path(raw_root).glob("**/study"), key=lambda p: _natural(str(p)))
    log = CurationLog()
    dims: list[dict] = []
    with _progress(len(studies), "curating Kaggle studies", enabled=progress, quiet_for=5.0) as bar:
        for st in studies:
            pid = st.parent.name
            try:
                dims.extend(curate_study(st, out, pid, log, target_size=target_size))
            except (DicomError, ValueError, FileNotFoundError) as e:
                log.add(pid, "failed", "not converted", str(st), str(e))
            bar.advance(info=pid)
    log.write(Path(out) / "conversion.log")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["pid", "X", "Y", "pixelSpacingX", "pixelSpacingY", "sliceSpacing",
                                        "scaleFactor"], delimiter="\t", lineterminator="\n")
    w.writeheader()
    w.writerows(dims)
    atomic_write_text(Path(out) / "patient_dimensions.tsv", buf.getvalue())
    return log, dims
