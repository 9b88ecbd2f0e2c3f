"""Make the README screenshots of every dashboard page (docs/img/dashboard-*.png).

Run from the repository root (needs the [dashboard] extra and Debian chromium):

    python docs/make_screenshots.py [--leaderboard DIR] [--out docs/img]

Without --leaderboard a fresh temporary leaderboard is pre-filled with the published entries, and an
example entry with real images is added: the prepared Sunnybrook sample scored against a copy of
its own labels whose LV is eroded by one pixel on every slice (the lost rim labelled MY), so the
Submission page has clinical indices and the Case page has images to overlay.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from cardbench.benchmark.leaderboard import add_entry, open_leaderboard
from cardbench.dashboard.serve import screenshot, server, wait_for_text

SB = "sunnybrook-sample__all__cardbench-v1"
PAGES = [
    ("leaderboard", "?benchmark=cmr-7t__test__ankenbrand2021", (1400, 1350)),
    ("leaderboard-cardbench-v1", "?benchmark=cmr-7t__test__cardbench-v1", (1400, 1350)),
    ("submission", "submission?benchmark=cmr-7t__test__cardbench-v1&entry=double_tl", (1400, 1900)),
    ("submission-clinical", f"submission?benchmark={SB}&entry=lv-eroded", (1400, 3700)),
    ("case", f"case?benchmark={SB}&entry=lv-eroded&subject=SCD0000201", (1400, 1000)),
    ("case-7t", "case?benchmark=cmr-7t__test__ankenbrand2021&entry=double_tl&subject=26", (1400, 750)),
    ("compare", "compare?benchmark=cmr-7t__test__ankenbrand2021&a=base&b=double_tl", (1400, 1900)),
    ("dataset", "dataset?benchmark=cmr-7t__test__ankenbrand2021", (1400, 1500)),
    # the Ranking uncertainty section (blob plot, significance heatmap) at the foot of the page
    ("leaderboard-ranks", "?benchmark=cmr-7t__test__cardbench-v1", (1400, 3300)),
]


def sunnybrook_example(tmp: Path, leaderboard: Path) -> None:
    """Add the 'lv-eroded' example entry (see the module docstring)."""
    import nibabel as nib
    from scipy import ndimage

    from cardbench.benchmark import score
    from cardbench.datasets.prepare import prepare_dataset

    ref = tmp / "sunnybrook-sample"
    prepare_dataset("sunnybrook-sample", ref)
    pred = tmp / "lv-eroded"
    pred.mkdir()
    for f in sorted((ref / "labels").rglob("*.nii.gz")):
        img = nib.load(f)
        a = np.asarray(img.dataobj).astype(np.uint8)
        p = a.copy()
        for k in range(a.shape[2]):
            lv = a[:, :, k] == 1
            p[:, :, k][lv & ~ndimage.binary_erosion(lv)] = 2
        nib.save(nib.Nifti1Image(p, img.affine, img.header), pred / f.name)
    res = score(pred, ref, protocol="cardbench-v1", progress=False)
    add_entry(res, leaderboard, "lv-eroded", meta={"label": "example: reference LV eroded by 1 pixel"},
              replace=True)


def shrink(png: Path, colors: int = 256) -> None:
    """Quantise a screenshot to a palette PNG (a few times smaller, same look)."""
    from PIL import Image

    im = Image.open(png).convert("RGB").quantize(colors=colors, method=Image.Quantize.FASTOCTREE, dither=0)
    im.save(png, optimize=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--leaderboard", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path("docs/img"))
    ap.add_argument("--only", nargs="*", default=None, help="page names to shoot")
    ap.add_argument("--extra", nargs="*", default=[], help="more NAME=URLPATH@WxH pages")
    args = ap.parse_args()
    pages = list(PAGES)
    for e in args.extra:
        name, rest = e.split("=", 1)
        path, size = rest.rsplit("@", 1)
        w, h = size.split("x")
        pages.append((name, path, (int(w), int(h))))
    with tempfile.TemporaryDirectory() as tmp:
        root = args.leaderboard
        if root is None:
            root = Path(tmp) / "leaderboard"
            open_leaderboard(root)
            sunnybrook_example(Path(tmp), root)
        with server(root) as url:
            wait_for_text(url + "/", ['role="gridcell"'])
            for name, path, size in pages:
                if args.only and name not in args.only:
                    continue
                out = screenshot(f"{url}/{path}", args.out / f"dashboard-{name}.png", size=size)
                shrink(out)
                print(out, f"{out.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
