"""End to end in a real browser: ``cardbench dashboard`` serves the pre-filled leaderboard on
127.0.0.1, headless Chromium (Debian's ``chromium``) loads it, the paper's table is on the page, the
screenshot is not blank; a ``cardbench score --leaderboard`` entry shows after a reload.

Screenshots go to the test's temporary folder (never into the repository).
"""

from __future__ import annotations

import gzip
import re
import shutil
import numpy as np
import pytest

import lbexpect as X
from cardbench.benchmark.leaderboard import Leaderboard
from cardbench.dashboard.serve import blankness, chromium, screenshot, server
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


def _dom_with(page, url: str, texts: list[str], timeout_s: float = 120.0, value: float | None = None) -> str:
    """Load ``url`` in ``page`` and wait until every string of ``texts`` is in the DOM and, given
    ``value``, a number within 1e-9 of it (a page still being redrawn after a reload can hold the
    texts before the new table); return the DOM."""
    import time

    page.goto(url)
    t0, dom = time.monotonic(), ""
    while time.monotonic() - t0 < timeout_s:
        dom = page.content()
        if all(t in dom for t in texts) and (value is None or np.min(np.abs(_numbers(dom) - value)) < 1e-9):
            return dom
        page.wait_for_timeout(250)
    missing = [t for t in texts if t not in dom] + ([] if value is None else [f"a number within 1e-9 of {value!r}"])
    raise AssertionError(f"{url}: {missing} not on the page after {timeout_s:.0f} s")


def test_dashboard_in_chromium(prefilled_dir, tmp_path):
    """One Chromium (Playwright) loads the pages and takes the screenshots."""
    pw = pytest.importorskip("playwright.sync_api")
    from typer.testing import CliRunner

    from cardbench.cli import app

    root = tmp_path / "leaderboard"
    shutil.copytree(prefilled_dir, root)  # the pre-filled leaderboard, built once per test run (conftest)
    best = max(X.TABLES, key=lambda e: X.paper_protocol(X.seven_t(e, SHARED), "LV"))
    best_lv = X.paper_protocol(X.seven_t(best, SHARED), "LV")
    with server(root, via_cli=True, log=tmp_path / "server.log") as url, pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        # wait until the ranked table (grid cells with the best entry) is on the page
        dom = _dom_with(page, url + "/", ['role="gridcell"', best, "Ranked by dice LV"], value=best_lv)
        assert np.min(np.abs(_numbers(dom) - best_lv)) < 1e-9
        page.screenshot(path=str(tmp_path / "dashboard-leaderboard.png"))
        sd, dark = blankness(tmp_path / "dashboard-leaderboard.png")
        assert sd > 15 and dark > 0.005, (sd, dark)

        # a new entry scored by the command line appears after a reload
        src = tmp_path / "confusion_WS_base.tsv"
        src.write_bytes(gzip.decompress((X.EMBEDDED / X.T7 / "confusion_WS_base.tsv.gz").read_bytes()))
        r = CliRunner().invoke(app, ["score", str(src), "--split", "test", "--protocol", "ankenbrand2021", "--no-save",
                                     "--leaderboard", str(root), "--name", "my-rescore"])
        assert r.exit_code == 0, r.output
        bench = next(b for b in Leaderboard(root).benchmark_ids() if "my-rescore" in Leaderboard(root).entry_names(b))
        base_lv = X.paper_protocol(X.seven_t("base", SHARED), "LV")
        dom = _dom_with(page, f"{url}/?benchmark={bench}", ['role="gridcell"', "my-rescore"], value=base_lv)
        assert np.min(np.abs(_numbers(dom) - base_lv)) < 1e-9
        page.screenshot(path=str(tmp_path / "dashboard-new-entry.png"))
        sd, dark = blankness(tmp_path / "dashboard-new-entry.png")
        assert sd > 15 and dark > 0.005, (sd, dark)
        # the Leaderboard page has a path of its own (was "Page not found"): /leaderboard?benchmark=...
        dom2 = _dom_with(page, f"{url}/leaderboard?benchmark={bench}", ['role="gridcell"', "my-rescore"])
        assert "Page not found" not in dom2
        browser.close()


def test_command_line_screenshot_waits_for_the_page_script(tmp_path):
    """:func:`cardbench.dashboard.serve.screenshot` (what ``docs/make_screenshots.py`` uses: the
    chromium command line, no Playwright) on a loopback page that draws itself after 300 ms of
    script time: the capture shows the drawing (a capture of the blank page before it would have
    a grey-level SD of 0)."""
    import functools
    import http.server
    import threading

    html = ("<html><body style='margin:0;background:#fff'><div id=d></div><script>setTimeout(function(){"
            "document.getElementById('d').innerHTML = \"<div style='margin-left:400px;width:600px;height:400px;"
            "background:#000'></div>\";}, 300);</script></body></html>")
    (tmp_path / "index.html").write_text(html)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/index.html"
        png = screenshot(url, tmp_path / "shot.png", size=(1200, 800), budget_ms=2000)
    finally:
        httpd.shutdown()
    sd, dark = blankness(png)
    # 600 x 400 black px in the 880 x 800 main area right of the 320 px sidebar strip
    assert dark == pytest.approx(600 * 400 / (880 * 800), abs=0.01), dark
    assert sd > 15
