"""``cardbench dashboard``: start the Streamlit leaderboard app (the ``[dashboard]`` extra)."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from cardbench.cli import app
from cardbench.dashboard.serve import streamlit_command  # noqa: F401  (re-exported)

err = Console(stderr=True)


@app.command("dashboard")
def dashboard_cmd(
    leaderboard: Optional[Path] = typer.Option(None, "--leaderboard", "-L", help="Leaderboard folder (default: "
                                               "$CARDBENCH_LEADERBOARD, else the user data dir; pre-filled with "
                                               "the published entries on first use)."),
    port: int = typer.Option(8501, "--port", "-p", min=1, max=65535, help="Port to serve on."),
    address: str = typer.Option("127.0.0.1", "--address", help="Address to bind (127.0.0.1: this machine "
                                "only; 0.0.0.0 exposes it to the network)."),
    open_browser: bool = typer.Option(False, "--open-browser", help="Open a browser tab (default: headless)."),
    allow_root: Optional[list[Path]] = typer.Option(None, "--allow-root", help="A folder the case drill-down may "
                                                    "read images and masks from (repeatable). Always allowed: the "
                                                    "leaderboard folder and cardbench's data folders."),
    public: bool = typer.Option(False, "--public", help="Aggregates only: no per-case or per-subject value, no "
                                "case drill-down (those pages are refused, by URL too)."),
    allow_submissions: bool = typer.Option(False, "--allow-submissions", help="Add a Submit page that accepts "
                                           "prediction archives or ONNX models (docs/private.md); off by default."),
) -> None:
    r"""Start the dashboard: leaderboard, submission, case drill-down, compare and dataset pages.

    Stop it with Ctrl+C. Needs streamlit and plotly: pip install 'cardbench\[dashboard]'.
    """
    try:
        import plotly  # noqa: F401
        import streamlit  # noqa: F401
    except ImportError as e:
        from cardbench.cli.errors import fail

        fail(f"the dashboard needs streamlit and plotly ({e}); install them with: pip install 'cardbench[dashboard]'", 1)
    from cardbench.benchmark.leaderboard import open_leaderboard

    lb = open_leaderboard(leaderboard, progress=err.is_terminal)
    argv, env = streamlit_command(lb.root, port, address, headless=not open_browser)
    if allow_root:
        import os

        from cardbench.dashboard.images import ALLOW_ENV

        for r in allow_root:
            if not r.is_dir():
                from cardbench.cli.errors import fail

                fail(f"--allow-root {r}: not a folder; give an existing folder")
        extra = [str(r.expanduser().resolve()) for r in allow_root]
        env[ALLOW_ENV] = os.pathsep.join([p for p in env.get(ALLOW_ENV, "").split(os.pathsep) if p] + extra)
    if public:
        env["CARDBENCH_DASHBOARD_PUBLIC"] = "1"
    if allow_submissions:
        env["CARDBENCH_ALLOW_SUBMISSIONS"] = "1"
        if address not in ("127.0.0.1", "localhost", "::1"):
            err.print(f"[yellow]warning:[/yellow] the Submit page is served on {address}, beyond this machine",
                      highlight=False)
    n = sum(len(lb.entry_names(b)) for b in lb.benchmark_ids())
    err.print(f"leaderboard [bold]{escape(str(lb.root))}[/bold]: {len(lb.benchmark_ids())} benchmarks, {n} entries")
    err.print(f"serving on [bold]http://{address}:{port}[/bold]  (Ctrl+C to stop)")
    proc = subprocess.Popen(argv, env=env)

    def _stop(signum, frame):  # SIGTERM to this command also stops the server (no orphan)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        code = 0
    raise typer.Exit(code)
