"""Run the dashboard server in the background and capture pages with headless Chromium.

Used by the browser test, the first-paint benchmark and the script that makes the README
screenshots. Facts this relies on (seen with Streamlit 1.67 and Debian Chromium 150):

- the server is healthy (``GET /_stcore/health`` answers ``ok``) about half a second after start;
- Chromium's ``--screenshot`` needs ``--virtual-time-budget`` to wait for Streamlit's scripts, and
  the first load after the server starts captures only the page skeleton: load once and discard;
- Streamlit's data grid keeps an accessible copy of its cells in the DOM (``role="gridcell"``), so
  ``--dump-dom`` shows whether the table is on the page.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

def streamlit_command(leaderboard: Path, port: int = 8501, address: str = "127.0.0.1",
                      headless: bool = True) -> tuple[list[str], dict]:
    """The command line and environment that serve the dashboard for ``leaderboard``.

    Returns:
        (argv, env): ``python -m streamlit run <cardbench/dashboard/app.py> --server.port ...`` and a
        copy of ``os.environ`` with ``CARDBENCH_LEADERBOARD`` set.
    """
    from cardbench.benchmark.leaderboard import ENV_VAR

    app_py = Path(__file__).resolve().parent / "app.py"
    argv = [sys.executable, "-m", "streamlit", "run", str(app_py),
            "--server.address", address, "--server.port", str(port),
            "--server.headless", "true" if headless else "false",
            "--browser.gatherUsageStats", "false", "--global.developmentMode", "false",
            "--client.toolbarMode", "viewer"]
    env = dict(os.environ)
    env[ENV_VAR] = str(Path(leaderboard).expanduser().resolve())
    return argv, env


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium() -> str | None:
    """Path of Debian's ``chromium`` (or ``chromium-browser``/``google-chrome``), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


@contextlib.contextmanager
def server(leaderboard: str | os.PathLike, port: int | None = None, timeout: float = 60.0,
           log: str | os.PathLike | None = None, via_cli: bool = False) -> Iterator[str]:
    """Start the dashboard for ``leaderboard`` on 127.0.0.1; yield its base URL.

    ``via_cli``: run the ``cardbench dashboard`` command itself (as a user would) instead of
    ``streamlit run`` directly. The server is stopped (SIGTERM, then SIGKILL after 10 s) when the
    block ends.

    Raises:
        RuntimeError: the server did not become healthy within ``timeout`` seconds (the message
            holds the end of its log).
    """
    port = port or free_port()
    argv, env = streamlit_command(Path(leaderboard), port=port)
    if via_cli:
        argv = [sys.executable, "-c", "from cardbench.cli import main; main()", "dashboard",
                "--leaderboard", str(leaderboard), "--port", str(port)]
    logf = open(log, "w") if log else tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(argv, env=env, stdout=logf, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.monotonic()
        while True:
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() - t0 > timeout:
                logf.flush()
                if log:
                    tail = Path(log).read_text()[-2000:]
                else:
                    logf.seek(0)
                    tail = logf.read()[-2000:]
                raise RuntimeError(f"streamlit server on {url} did not start (exit code {proc.poll()}): {tail}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        logf.close()


def _run_chromium(args: list[str], url: str, size: tuple[int, int], budget_ms: int, timeout: float) -> bytes:
    exe = chromium()
    if exe is None:
        raise FileNotFoundError("chromium not found; install it (Debian: apt-get install -y chromium)")
    with tempfile.TemporaryDirectory() as profile:
        cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
               f"--virtual-time-budget={budget_ms}", *args, url]
        r = subprocess.run(cmd, capture_output=True, timeout=timeout, cwd=profile)
        return r.stdout


def blankness(png: str | os.PathLike, left: int = 320) -> tuple[float, float]:
    """(grey-level SD, fraction of dark pixels) of a screenshot's main area (right of ``left`` px,
    the sidebar). A page still showing Streamlit's skeleton has both near 0."""
    import numpy as np
    from PIL import Image

    a = np.asarray(Image.open(png).convert("L"), dtype=np.float64)[:, left:]
    return float(a.std()), float((a < 128).mean())


def screenshot(url: str, out: str | os.PathLike, size: tuple[int, int] = (1400, 1000), budget_ms: int = 15000,
               timeout: float = 180.0, tries: int = 3, min_sd: float = 15.0) -> Path:
    """Save a PNG screenshot of ``url`` (headless Chromium) to ``out``.

    A capture that is still the page skeleton (main-area grey SD below ``min_sd``, see
    :func:`blankness`) is taken again with twice the virtual-time budget, up to ``tries`` times;
    the last capture is kept either way (the caller checks it).

    Raises:
        FileNotFoundError: chromium is not installed.
        RuntimeError: no screenshot was written.
    """
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    for i in range(tries):
        if out.exists():
            out.unlink()
        _run_chromium([f"--screenshot={out}"], url, size, budget_ms * 2 ** i, timeout)
        if not out.exists():
            raise RuntimeError(f"chromium wrote no screenshot of {url} to {out}")
        if blankness(out)[0] >= min_sd:
            break
    return out


def dump_dom(url: str, size: tuple[int, int] = (1400, 1000), budget_ms: int = 15000, timeout: float = 120.0) -> str:
    """The DOM of ``url`` after ``budget_ms`` of virtual time (headless Chromium ``--dump-dom``)."""
    return _run_chromium(["--dump-dom"], url, size, budget_ms, timeout).decode("utf-8", "replace")


def wait_for_text(url: str, texts: list[str], tries: int = 5, **kw) -> str:
    """Load ``url`` until every string of ``texts`` is in its DOM (the first load after a server
    start is a skeleton); return that DOM.

    Raises:
        TimeoutError: not all texts appeared after ``tries`` loads (names the missing ones).
    """
    dom = ""
    for _ in range(tries):
        dom = dump_dom(url, **kw)
        if all(t in dom for t in texts):
            return dom
    missing = [t for t in texts if t not in dom]
    raise TimeoutError(f"{url}: {missing} not on the page after {tries} loads")
