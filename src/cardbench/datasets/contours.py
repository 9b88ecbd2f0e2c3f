"""Contours (polygons in pixel units) to label maps.

Coordinates: a contour point is ``(x, y)`` in pixel units with ``x`` = column index and ``y`` = row
index, and the centre of pixel ``(row r, column c)`` at ``(x, y) = (c, r)`` (Sunnybrook contour files;
the seed's Medis exports, Ankenbrand et al. 2021, code/7T/con2png.py, use the same x = column).

Rasterisation rule (cardbench's, the scanline fill rule of computer graphics): a pixel belongs to a
polygon when its centre lies inside the polygon, where the boundary is half-open: a centre exactly
on an edge is inside on a left or top edge (smaller x or y) and outside on a right or bottom edge.
Concretely, for each pixel row ``y = r`` the edges crossing it are those with
``min(y0, y1) <= r < max(y0, y1)`` (horizontal edges never count); their crossings ``x`` sorted in
pairs ``[x_a, x_b)`` give the pixels ``ceil(x_a) <= c < ceil(x_b)`` (even-odd rule for
self-intersecting polygons). Consequences, checked in the tests:

* the axis-aligned square with corners at pixel centres (2, 2) and (5, 5) (area 9 pixel units)
  covers exactly 3 x 3 = 9 pixels; two polygons sharing an edge never both claim a pixel;
* for a smooth closed contour the pixel count is an unbiased estimate of the polygon's (shoelace)
  area. ``skimage.draw.polygon2mask`` (scikit-image 0.26) includes every centre on the boundary
  instead (16 pixels for that square), which inflates small areas by about half the perimeter; the
  two rules agree on every pixel whose centre is not on the boundary.

Label maps (cardbench values): LV (1) = inside the endocardial contour; MY (2) = inside the
epicardial contour and not LV; RV (3) = inside an RV endocardial contour and not LV/MY.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cardbench.labelmaps import CLASS_VALUES


class ContourError(ValueError):
    """A contour file cannot be parsed or a contour is unusable."""


def polygon_to_mask(points_xy, shape: tuple[int, int]) -> np.ndarray:
    """Rasterise a closed polygon with cardbench's rule (module docstring).

    Args:
        points_xy: (N, 2) vertices ``(x = column, y = row)`` in pixel units; closed implicitly
            (the last vertex connects to the first; a repeated first vertex is harmless).
        shape: ``(rows, columns)`` of the output.

    Returns:
        bool array ``(rows, columns)``; parts outside the image are clipped.

    Raises:
        ContourError: fewer than 3 vertices, or non-finite coordinates.
    """
    p = np.asarray(points_xy, dtype=float)
    if p.ndim != 2 or p.shape[1] != 2 or len(p) < 3:
        raise ContourError(f"a polygon needs at least 3 (x, y) points, got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ContourError("polygon has non-finite coordinates")
    rows, cols = shape
    mask = np.zeros((rows, cols), dtype=bool)
    x0, y0 = p[:, 0], p[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    keep = y0 != y1
    x0, y0, x1, y1 = x0[keep], y0[keep], x1[keep], y1[keep]
    if x0.size == 0:
        return mask
    ylo, yhi = np.minimum(y0, y1), np.maximum(y0, y1)
    r_first = max(0, math.ceil(ylo.min()))
    r_last = min(rows - 1, math.ceil(yhi.max()) - 1)
    for r in range(r_first, r_last + 1):
        hit = (ylo <= r) & (r < yhi)
        if not hit.any():
            continue
        t = (r - y0[hit]) / (y1[hit] - y0[hit])
        xs = np.sort(x0[hit] + t * (x1[hit] - x0[hit]))
        for a, b in zip(xs[0::2], xs[1::2]):
            c0 = max(0, math.ceil(a))
            c1 = min(cols, math.ceil(b))
            if c1 > c0:
                mask[r, c0:c1] = True
    return mask


def polygon_area(points_xy) -> float:
    """Area enclosed by a closed polygon (shoelace formula), in squared pixel units (absolute)."""
    p = np.asarray(points_xy, dtype=float)
    x, y = p[:, 0], p[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def label_slice(shape: tuple[int, int], *, endo=None, epi=None, rv=None) -> np.ndarray:
    """A 2D label map (cardbench values) from contours.

    Args:
        shape: ``(rows, columns)``.
        endo: LV endocardial polygon (x, y) or None (LV not drawn).
        epi: LV epicardial polygon or None (MY not drawn).
        rv: RV endocardial polygon or None.

    Returns:
        uint8 ``(rows, columns)``: 1 LV inside ``endo``; 2 MY inside ``epi`` and not LV;
        3 RV inside ``rv`` and neither LV nor MY.
    """
    out = np.zeros(shape, dtype=np.uint8)
    if rv is not None:
        out[polygon_to_mask(rv, shape)] = CLASS_VALUES["RV"]
    if epi is not None:
        out[polygon_to_mask(epi, shape)] = CLASS_VALUES["MY"]
    if endo is not None:
        out[polygon_to_mask(endo, shape)] = CLASS_VALUES["LV"]
    return out


# --------------------------------------------------------------------------- Sunnybrook

_SB_NAME = re.compile(r"^IM-(?P<series>\d+)-(?P<image>\d+)-(?P<kind>[io])contour-(?P<who>\w+)\.txt$")


def parse_sunnybrook_contour(text: str, source: str = "<text>") -> np.ndarray:
    """Points of a Sunnybrook contour file: one ``x y`` pair per line (pixel units, x = column).

    Returns:
        float array (N, 2).

    Raises:
        ContourError: a line is not two numbers, or fewer than 3 points.
    """
    pts = []
    for i, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s:
            continue
        parts = s.split()
        try:
            if len(parts) != 2:
                raise ValueError
            pts.append((float(parts[0]), float(parts[1])))
        except ValueError:
            raise ContourError(f"{source} line {i}: expected 'x y' (two numbers), got {s[:60]!r}") from None
    if len(pts) < 3:
        raise ContourError(f"{source}: {len(pts)} points; a closed contour needs at least 3")
    return np.array(pts, dtype=float)


def read_sunnybrook_contour(path: str | os.PathLike) -> np.ndarray:
    """Read a Sunnybrook ``IM-0001-NNNN-[io]contour-manual.txt`` file; see :func:`parse_sunnybrook_contour`."""
    return parse_sunnybrook_contour(Path(path).read_text(encoding="ascii", errors="replace"), str(path))


def sunnybrook_contour_name(name: str) -> tuple[int, str]:
    """``(image number NNNN, "i" or "o")`` from a Sunnybrook contour file name.

    Raises:
        ContourError: the name does not follow ``IM-<series>-<NNNN>-<i|o>contour-<who>.txt``.
    """
    m = _SB_NAME.match(Path(name).name)
    if not m:
        raise ContourError(f"{name}: not a Sunnybrook contour file name (IM-0001-NNNN-icontour-manual.txt)")
    return int(m["image"]), m["kind"]


# --------------------------------------------------------------------------- Medis

#: Medis QMass contour types as used by the seed (code/7T/con2png.py: 0 endocardium, 1 epicardium).
MEDIS_TYPES: dict[int, str] = {0: "endo", 1: "epi"}


@dataclass
class MedisContours:
    """Contours of a Medis export as a point table.

    Attributes:
        points: DataFrame with columns ``x, y`` (float, pixel units, x = column), ``slice``,
            ``frame``, ``type`` (int) and ``contour`` (running contour id), one row per point.
        ed_frame, es_frame: ``manual_lv_ed_phase`` / ``manual_lv_es_phase`` of a ``.con`` file
            header (None when absent).
        source: the file.
    """

    points: pd.DataFrame
    ed_frame: int | None = None
    es_frame: int | None = None
    source: str = ""
    notes: list[str] = field(default_factory=list)


def parse_medis_con(text: str, source: str = "<text>") -> MedisContours:
    """Parse a Medis ``.con`` export.

    Each contour is a ``[XYCONTOUR]`` block: a header line ``<slice> <frame> <type> ...``, a line
    with the number of points, then one ``x y`` line per point. Other sections are skipped except
    ``manual_lv_ed_phase=`` / ``manual_lv_es_phase=`` (the ED/ES frames). This is the layout the
    seed's ``code/7T/con_to_tsv.sh`` reads (one table row ``x y slice frame type`` per point).

    Raises:
        ContourError: a block is truncated or malformed (the message names the line).
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    ed = es = None
    rows = []
    i, cid = 0, 0
    while i < len(lines):
        s = lines[i].strip()
        m = re.match(r"manual_lv_(ed|es)_phase\s*=\s*(\d+)", s)
        if m:
            if m[1] == "ed":
                ed = int(m[2])
            else:
                es = int(m[2])
        if s.upper() == "[XYCONTOUR]":
            if i + 2 >= len(lines):
                raise ContourError(f"{source} line {i + 1}: [XYCONTOUR] block is truncated")
            head = lines[i + 1].split()
            try:
                sl, fr, ty = int(head[0]), int(head[1]), int(float(head[2]))
                npts = int(lines[i + 2].strip())
            except (ValueError, IndexError):
                raise ContourError(f"{source} line {i + 2}: expected '<slice> <frame> <type> ...' then the number "
                                   f"of points after [XYCONTOUR], got {lines[i + 1][:60]!r}") from None
            for j in range(npts):
                k = i + 3 + j
                parts = lines[k].split() if k < len(lines) else []
                try:
                    x, y = float(parts[0]), float(parts[1])
                except (ValueError, IndexError):
                    raise ContourError(f"{source} line {k + 1}: expected point {j + 1} of {npts} as 'x y'") from None
                rows.append((x, y, sl, fr, ty, cid))
            cid += 1
            i += 3 + npts
            continue
        i += 1
    df = pd.DataFrame(rows, columns=["x", "y", "slice", "frame", "type", "contour"])
    return MedisContours(df, ed, es, source)


def read_medis_table(path: str | os.PathLike) -> MedisContours:
    """Read Medis contours from a ``.con`` file or from a point table.

    A point table is whitespace- or tab-separated, one point per row, columns
    ``x y slice frame type`` (extra columns ignored), with or without that header line: the
    format the seed writes with ``con_to_tsv.sh`` and reads in ``con2png.py``. Consecutive rows
    with the same (slice, frame, type) form one contour.

    Raises:
        ContourError: unreadable, or a row that is not numeric.
    """
    path = Path(path)
    text = path.read_text(encoding="latin-1")
    if "[XYCONTOUR]" in text.upper():
        return parse_medis_con(text, str(path))
    rows = []
    for i, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if i == 1 and parts[0].lower() == "x":
            continue
        try:
            x, y = float(parts[0]), float(parts[1])
            sl, fr, ty = int(float(parts[2])), int(float(parts[3])), int(float(parts[4]))
        except (ValueError, IndexError):
            raise ContourError(f"{path} line {i}: expected 'x y slice frame type', got {line[:60]!r}") from None
        rows.append((x, y, sl, fr, ty))
    df = pd.DataFrame(rows, columns=["x", "y", "slice", "frame", "type"])
    key = df[["slice", "frame", "type"]].astype(str).agg("/".join, axis=1)
    df["contour"] = (key != key.shift()).cumsum() - 1
    return MedisContours(df, source=str(path))


def medis_label_maps(contours: MedisContours, shape: tuple[int, int],
                     types: dict[int, str] | None = None) -> dict[tuple[int, int], tuple[np.ndarray, frozenset[str]]]:
    """Label maps of every (slice, frame) that has contours.

    Args:
        contours: from :func:`read_medis_table`.
        shape: ``(rows, columns)`` of the images.
        types: contour type -> ``"endo"``, ``"epi"`` or ``"rv"`` (default :data:`MEDIS_TYPES`);
            other types are ignored.

    Returns:
        ``{(slice, frame): (uint8 label map (rows, columns), classes annotated)}``; classes are
        ``LV`` when an endocardial contour exists, ``MY`` when an epicardial one does, ``RV``.

    Raises:
        ContourError: more than one contour of one type in one (slice, frame).
    """
    types = dict(MEDIS_TYPES if types is None else types)
    cls_of = {"endo": "LV", "epi": "MY", "rv": "RV"}
    out = {}
    df = contours.points[contours.points["type"].isin(list(types))]
    for (sl, fr), g in df.groupby(["slice", "frame"], sort=True):
        polys: dict[str, np.ndarray] = {}
        for (ty, cid), gg in g.groupby(["type", "contour"], sort=False):
            role = types[int(ty)]
            if role in polys:
                raise ContourError(f"{contours.source}: slice {sl} frame {fr} has two contours of type {ty} ({role}); "
                                   "keep one per type")
            polys[role] = gg[["x", "y"]].to_numpy(float)
        if "epi" in polys and "endo" not in polys:
            contours.notes.append(f"slice {sl} frame {fr}: epicardial contour without endocardial contour; "
                                  "MY left out (MY = inside epicardium minus LV needs both)")
            del polys["epi"]
        lab = label_slice(shape, endo=polys.get("endo"), epi=polys.get("epi"), rv=polys.get("rv"))
        out[(int(sl), int(fr))] = (lab, frozenset(cls_of[r] for r in polys))
    return out
