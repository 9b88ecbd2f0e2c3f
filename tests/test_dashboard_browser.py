"""End to end in a real browser: ``cardbench dashboard`` serves the pre-filled leaderboard on
127.0.0.1, headless Chromium (Debian's ``chromium``) loads it, the paper's table is on the page, the
screenshot is not blank; a ``cardbench score --leaderboard`` entry shows after a reload.

Screenshots go to the test's temporary folder (never into the repository).
"""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import lbexpect as X
from cardbench.benchmark.leaderboard import Leaderboard
from cardbench.dashboard.serve import blankness, chromium, screenshot, server, wait_for_text
from conftest import find_shared_data

pytestmark = pytest.mark.browser
SHARED = find_shared_data()


@pytest.fixture(autouse=True)
def _need_chromium():
    pytest.importorskip("streamlit")
    if chromium() is None:
        pytest.skip("Debian chromium is not installed (apt-get install -y chromium)")


def _numbers(dom: str) -> np.ndarray:
    return np.array([float(x) for x in re.findall(r"\d+\.\d+", dom)])


def test_dashboard_in_chromium(prefilled_dir, tmp_path):
    root = tmp_path / "leaderboard"
    shutil.copytree(prefilled_dir, root)  # the pre-filled leaderboard, built once per test run (conftest)
    best = max(X.TABLES, key=lambda e: X.paper_protocol(X.seven_t(e, SHARED), "LV"))
    best_lv = X.paper_protocol(X.seven_t(best, SHARED), "LV")
    with server(root, via_cli=True, log=tmp_path / "server.log") as url:
        # wait until the ranked table (grid cells with the best entry) is on the page
        dom = wait_for_text(url + "/", ['role="gridcell"', best, "Ranked by dice LV"])
        assert np.min(np.abs(_numbers(dom) - best_lv)) < 1e-9
        png = screenshot(url + "/", tmp_path / "dashboard-leaderboard.png", size=(1400, 1000))
        sd, dark = blankness(png)
        assert sd > 15 and dark > 0.005, (sd, dark)

        # a new entry scored by the command line appears after a reload
        src = tmp_path / "confusion_WS_base.tsv"
        src.write_bytes(gzip.decompress((X.EMBEDDED / X.T7 / "confusion_WS_base.tsv.gz").read_bytes()))
        r = subprocess.run([sys.executable, "-c", "from cardbench.cli import main; main()", "score", str(src),
                            "--split", "test", "--protocol", "ankenbrand2021", "--no-save",
                            "--leaderboard", str(root), "--name", "my-rescore"],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        bench = next(b for b in Leaderboard(root).benchmark_ids() if "my-rescore" in Leaderboard(root).entry_names(b))
        dom = wait_for_text(f"{url}/?benchmark={bench}", ['role="gridcell"', "my-rescore"])
        # the Leaderboard page has a path of its own (was "Page not found"): /leaderboard?benchmark=...
        dom2 = wait_for_text(f"{url}/leaderboard?benchmark={bench}", ['role="gridcell"', "my-rescore"])
        assert "Page not found" not in dom2
        assert np.min(np.abs(_numbers(dom) - X.paper_protocol(X.seven_t("base", SHARED), "LV"))) < 1e-9
        png = screenshot(f"{url}/?benchmark={bench}", tmp_path / "dashboard-new-entry.png", size=(1400, 1000))
        sd, dark = blankness(png)
        assert sd > 15 and dark > 0.005, (sd, dark)
