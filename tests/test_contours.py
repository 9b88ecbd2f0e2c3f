"""Contours to label maps: the rasterisation rule on hand-drawn polygons, cross-checked with scikit-image,
and the Sunnybrook and Medis readers."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import polygon2mask

from cardbench.datasets.contours import (ContourError, label_slice, medis_label_maps, parse_medis_con,
                                         parse_sunnybrook_contour, polygon_area, polygon_to_mask,
                                         read_medis_table, sunnybrook_contour_name)


def test_square_by_hand():
    # corners at pixel centres (x, y) = (2, 2) .. (5, 5): area 3 x 3 = 9.
    # half-open rule: rows y in [2, 5) -> 2, 3, 4; columns x in [2, 5) -> 2, 3, 4
    m = polygon_to_mask([(2, 2), (5, 2), (5, 5), (2, 5)], (8, 8))
    expected = np.zeros((8, 8), bool)
    expected[2:5, 2:5] = True
    np.testing.assert_array_equal(m, expected)
    assert m.sum() == 9 == polygon_area([(2, 2), (5, 2), (5, 5), (2, 5)])
    # vertex order (clockwise / counter-clockwise) and the starting vertex do not matter
    np.testing.assert_array_equal(polygon_to_mask([(2, 5), (5, 5), (5, 2), (2, 2)], (8, 8)), expected)
    # skimage 0.26 counts every centre on the boundary too: 4 x 4 = 16 (rows/cols 2..5)
    sk = polygon2mask((8, 8), np.array([(2, 2), (2, 5), (5, 5), (5, 2)]))  # (row, col)
    assert sk.sum() == 16


def test_half_pixel_square():
    # corners at (1.5, 1.5) and (4.5, 3.5): centres strictly inside x in {2, 3, 4}, y in {2, 3}: 6 = area 3 x 2
    m = polygon_to_mask([(1.5, 1.5), (4.5, 1.5), (4.5, 3.5), (1.5, 3.5)], (6, 6))
    expected = np.zeros((6, 6), bool)
    expected[2:4, 2:5] = True
    np.testing.assert_array_equal(m, expected)


def test_triangle_by_hand():
    # right triangle (0, 0), (5, 0), (0, 2): hypotenuse x = 5 - 2.5 y.
    # row y=0: x in [0, 5) -> columns 0..4 (5 pixels); row y=1: x in [0, 2.5) -> columns 0, 1, 2 (3 pixels);
    # row y=2 is the top vertex only (y in [0, 2) excludes it). Total 8; shoelace area 5.
    m = polygon_to_mask([(0, 0), (5, 0), (0, 2)], (4, 7))
    expected = np.zeros((4, 7), bool)
    expected[0, 0:5] = True
    expected[1, 0:3] = True
    np.testing.assert_array_equal(m, expected)
    assert polygon_area([(0, 0), (5, 0), (0, 2)]) == 5.0


def test_shared_edge_claimed_once():
    left = [(1, 1), (4, 1), (4, 6), (1, 6)]
    right = [(4, 1), (7, 1), (7, 6), (4, 6)]
    a, b = polygon_to_mask(left, (8, 9)), polygon_to_mask(right, (8, 9))
    assert not (a & b).any()
    np.testing.assert_array_equal(a | b, polygon_to_mask([(1, 1), (7, 1), (7, 6), (1, 6)], (8, 9)))


def test_agrees_with_skimage_off_the_boundary():
    """For random star-shaped contours on the Sunnybrook half-pixel grid: every pixel we fill, skimage fills;
    every pixel only skimage fills has its centre on the polygon's boundary."""
    rng = np.random.default_rng(7)
    for _ in range(20):
        th = np.sort(rng.uniform(0, 2 * np.pi, 40))
        r = rng.uniform(8, 20, 40)
        pts = np.round(np.c_[40 + r * np.cos(th), 40 + r * np.sin(th)] * 2) / 2
        ours = polygon_to_mask(pts, (80, 80))
        sk = polygon2mask((80, 80), pts[:, ::-1])
        assert not (ours & ~sk).any()
        for rr, cc in zip(*np.nonzero(sk & ~ours)):
            assert _on_boundary(pts, cc, rr)
        # pixel count close to the shoelace area (unbiased rule), skimage's larger
        assert abs(ours.sum() - polygon_area(pts)) < 0.03 * polygon_area(pts)
        assert sk.sum() >= ours.sum()


def _on_boundary(pts, x, y, eps=1e-9):
    q = np.roll(pts, -1, axis=0)
    for (x0, y0), (x1, y1) in zip(pts, q):
        cross = (x1 - x0) * (y - y0) - (y1 - y0) * (x - x0)
        if abs(cross) < eps and min(x0, x1) - eps <= x <= max(x0, x1) + eps and min(y0, y1) - eps <= y <= max(y0, y1) + eps:
            return True
    return False


def test_label_slice_lv_my_by_hand():
    endo = [(3, 3), (6, 3), (6, 6), (3, 6)]  # pixels x, y in 3..5
    epi = [(2, 2), (8, 2), (8, 8), (2, 8)]   # pixels x, y in 2..7
    lab = label_slice((10, 10), endo=endo, epi=epi)
    assert lab.dtype == np.uint8
    assert (lab == 1).sum() == 9
    assert (lab == 2).sum() == 36 - 9
    assert lab[4, 4] == 1 and lab[2, 2] == 2 and lab[7, 7] == 2 and lab[8, 8] == 0
    # rows are y, columns x: a contour shifted in x moves columns
    lab2 = label_slice((10, 10), endo=[(x + 1, y) for x, y in endo])
    np.testing.assert_array_equal(np.nonzero(lab2 == 1)[1], np.nonzero(lab == 1)[1] + 1)


def test_sunnybrook_reader():
    pts = parse_sunnybrook_contour("120.50 137.50\n120.50 137.00\n121.00 136.50\n\n")
    np.testing.assert_array_equal(pts, [[120.5, 137.5], [120.5, 137.0], [121.0, 136.5]])
    with pytest.raises(ContourError, match="line 2"):
        parse_sunnybrook_contour("1 2\n1 2 3\n4 5\n", "f.txt")
    with pytest.raises(ContourError, match="at least 3"):
        parse_sunnybrook_contour("1 2\n3 4\n", "f.txt")
    assert sunnybrook_contour_name("IM-0001-0048-icontour-manual.txt") == (48, "i")
    assert sunnybrook_contour_name("x/IM-0001-0219-ocontour-manual.txt") == (219, "o")
    with pytest.raises(ContourError):
        sunnybrook_contour_name("contour.txt")


def test_sunnybrook_real_contours_against_skimage(shared_data):
    """On the real contours, our LV area equals the shoelace area within 2 % and never exceeds skimage's."""
    files = sorted((shared_data / "sunnybrook-sample/final_data/contourfiles").rglob("*contour-manual.txt"))
    assert len(files) == 96 + 37
    for f in files:
        pts = np.loadtxt(f)
        ours = polygon_to_mask(pts, (256, 256))
        sk = polygon2mask((256, 256), pts[:, ::-1])
        assert not (ours & ~sk).any()
        x, y = pts[:, 0], pts[:, 1]
        area = abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2
        assert abs(ours.sum() - area) <= max(0.02 * area, 3), f.name


CON = """[Study_Info]
manual_lv_ed_phase=0
manual_lv_es_phase=9
[XYCONTOUR]
2 0 0 1.0
4
3.0 3.0
6.0 3.0
6.0 6.0
3.0 6.0
[XYCONTOUR]
2 0 1 1.0
4
2 2
8 2
8 8
2 8
[XYCONTOUR]
2 9 0 1.0
3
0 0
5 0
0 2
[XYCONTOUR]
3 9 5 1.0
3
0 0
1 0
0 1
"""


def test_medis_con_parser_and_labels(tmp_path):
    mc = parse_medis_con(CON, "vol.con")
    assert (mc.ed_frame, mc.es_frame) == (0, 9)
    assert len(mc.points) == 4 + 4 + 3 + 3
    assert mc.points.groupby("contour").size().tolist() == [4, 4, 3, 3]
    maps = medis_label_maps(mc, (10, 10))
    assert sorted(maps) == [(2, 0), (2, 9)]  # type 5 is not in the default types: ignored
    lab, cls = maps[(2, 0)]
    assert cls == frozenset({"LV", "MY"})
    assert (lab == 1).sum() == 9 and (lab == 2).sum() == 27
    lab, cls = maps[(2, 9)]
    assert cls == frozenset({"LV"}) and (lab == 1).sum() == 8  # the hand-worked triangle
    # the same contours as the seed's point table (con_to_tsv.sh output: x y slice frame type)
    rows = [f"{x} {y} {s} {f} {t}" for x, y, s, f, t, _ in mc.points.itertuples(index=False)]
    p = tmp_path / "vol.tsv"
    p.write_text("\n".join(rows) + "\n")
    tab = read_medis_table(p)
    maps2 = medis_label_maps(tab, (10, 10))
    for k in maps:
        np.testing.assert_array_equal(maps[k][0], maps2[k][0])
    with pytest.raises(ContourError, match="line 6"):
        parse_medis_con("[XYCONTOUR]\n1 2 0 1.0\n3\n1 1\n2 2\nx y\n", "bad.con")


def test_medis_epi_without_endo_leaves_my_out():
    mc = parse_medis_con("[XYCONTOUR]\n0 0 1 1.0\n4\n2 2\n8 2\n8 8\n2 8\n", "epi.con")
    maps = medis_label_maps(mc, (10, 10))
    lab, cls = maps[(0, 0)]
    assert cls == frozenset() and lab.sum() == 0
    assert mc.notes and "MY left out" in mc.notes[0]
