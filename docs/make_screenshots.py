"""Make the README screenshots of every dashboard page (docs/img/dashboard-*.png).

Run from the repository root (needs the [dashboard] extra and Debian chromium):

    python docs/make_screenshots.py [--leaderboard DIR]

Without --leaderboard a fresh temporary leaderboard is pre-filled with the published entries.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from cardbench.benchmark.leaderboard import open_leaderboard
from cardbench.dashboard.serve import screenshot, server, wait_for_text

PAGES = [
    ("leaderboard", "leaderboard?benchmark=cmr-7t__test__ankenbrand2021", (1400, 1500)),
    ("leaderboard-cardbench-v1", "leaderboard?benchmark=cmr-7t__test__cardbench-v1", (1400, 1500)),
    ("submission", "submission?benchmark=cmr-7t__test__cardbench-v1&entry=double_tl", (1400, 2400)),
    ("case", "case?benchmark=cmr-7t__test__ankenbrand2021&entry=double_tl&subject=26", (1400, 1100)),
    ("compare", "compare?benchmark=cmr-7t__test__ankenbrand2021&a=base&b=double_tl", (1400, 2000)),
    ("dataset", "dataset?benchmark=cmr-7t__test__ankenbrand2021", (1400, 1500)),
]


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
        root = args.leaderboard or Path(tmp) / "leaderboard"
        open_leaderboard(root)
        with server(root) as url:
            wait_for_text(url + "/", ['role="gridcell"'])
            for name, path, size in pages:
                if args.only and name not in args.only:
                    continue
                out = screenshot(f"{url}/{path}", args.out / f"dashboard-{name}.png", size=size)
                print(out)


if __name__ == "__main__":
    main()
