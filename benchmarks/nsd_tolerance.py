"""The seed's inter-observer boundary disagreement, the basis of cardbench-v1's default NSD tolerance.

Metrics Reloaded (Maier-Hein et al., Nat Methods 2024;21:195) asks for the NSD tolerance tau to be
set from the inter-observer variability of the structure. The seed paper's two expert observers
(WS and TR) labelled the same 7T test images; their masks are not public, but their per-image
confusion counts are (``confusion_WS_TR.tsv``, embedded in cardbench). From the counts, the mean
distance between the two observers' contours of a class is estimated as the area between the
contours divided by the contour length: ``(FP + FN) / perimeter``, with the perimeter of a disc
of the class's mean area (LV) or of the ring's inner and outer circles (MY). The result is in
pixels; the seed's 7T masks are 256 x 256 without a public pixel size.

Run::

    python benchmarks/nsd_tolerance.py
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd


def main() -> int:
    from cardbench.datasets.embedded import open_published

    data, _, _ = open_published("cmr-seg-tl/analysis/7T/confusion_tables/confusion_WS_TR.tsv")
    t = pd.read_csv(io.BytesIO(data), sep="\t")
    t = t[t["set"] == "test"]
    lab = ("bg", "lv", "my")
    area = {c: (t[[f"{c}_{x}" for x in lab]].sum(axis=1), t[[f"{x}_{c}" for x in lab]].sum(axis=1)) for c in ("lv", "my")}
    lv_mean = (area["lv"][0] + area["lv"][1]) / 2
    for c in ("lv", "my"):
        a, b = area[c]
        disagreement = a + b - 2 * t[f"{c}_{c}"]
        if c == "lv":
            perimeter = 2 * np.pi * np.sqrt(lv_mean / np.pi)
        else:
            outer = lv_mean + (a + b) / 2
            perimeter = 2 * np.pi * (np.sqrt(lv_mean / np.pi) + np.sqrt(outer / np.pi))
        ok = (a > 50) & (b > 50)
        d = (disagreement / perimeter)[ok]
        print(f"{c.upper()}: {int(ok.sum())} test images with the class in both observers' masks; mean contour "
              f"distance WS vs TR: median {d.median():.2f} px, mean {d.mean():.2f} px, 75th percentile "
              f"{d.quantile(0.75):.2f} px, 95th percentile {d.quantile(0.95):.2f} px")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
