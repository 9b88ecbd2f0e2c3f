"""The ``cardbench`` command: a thin layer over functions a Python user can call directly.

Each part registers its commands from its own module: ``cli/score.py`` (score, reproduce, demo),
``cli/data.py`` (``cardbench data ...``), ``cli/baseline.py``, ``cli/leaderboard.py``,
``cli/dashboard.py``. Exit codes (see :mod:`cardbench.cli.errors`): 0 success, 1 failure while
working, 2 invalid input (validation problems, bad arguments, a limit exceeded).
"""

from __future__ import annotations

import typer
import typer.main

from cardbench._version import __version__
from cardbench.cli.errors import CardbenchGroup

app = typer.Typer(
    name="cardbench",
    cls=CardbenchGroup,
    help="Open benchmark and data-release toolkit for cardiac cine MRI segmentation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"cardbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """cardbench: score cardiac MRI segmentations, fetch and verify datasets, train baselines."""


# the published studies register their leaderboard pre-fill sources and confusion-table references
import cardbench.reproductions  # noqa: E402,F401

# each part registers its commands on `app` when imported
from cardbench.cli import score as _score  # noqa: E402,F401  (score, reproduce, demo)
from cardbench.cli import data as _data  # noqa: E402,F401  (cardbench data ...)
from cardbench.cli import baseline as _baseline  # noqa: E402,F401  (cardbench baseline ...)
from cardbench.cli import leaderboard as _leaderboard  # noqa: E402,F401  (cardbench leaderboard ...)
from cardbench.cli import dashboard as _dashboard  # noqa: E402,F401  (cardbench dashboard)
from cardbench.cli import compare as _compare  # noqa: E402,F401  (cardbench compare, cardbench volumes ...)
from cardbench.cli import evaluate as _evaluate  # noqa: E402,F401  (cardbench evaluate-model, baseline export-onnx)
from cardbench.cli import protocol as _protocol  # noqa: E402,F401  (cardbench protocol list/show)


def main() -> None:
    """Console entry point."""
    import os
    import sys

    # rich wraps tables at 80 columns when output is not a terminal (logs, CI, pipes): use 120
    if not sys.stdout.isatty() and "COLUMNS" not in os.environ:
        os.environ["COLUMNS"] = "120"
    _use_system_allocator_for_arrow()
    restore = _terminate_like_interrupt()
    try:
        command = typer.main.get_command(app)
        _hide_flag_metavars(command)
        code = _run_with_one_line_usage_errors(command)
    finally:
        restore()  # main() called in a Python program (tests): its SIGTERM handler is its own again
    sys.exit(code)


def _run_with_one_line_usage_errors(command) -> int:
    """Run the click command; a usage error (unknown option, missing argument, bad value) is one line
    on stderr naming the problem and where help is, exit code 2, instead of a framed box."""
    import sys

    def named(exc: BaseException, name: str) -> bool:  # typer may vendor click: match the class by name
        return any(c.__name__ == name for c in type(exc).__mro__)

    try:
        rv = command.main(prog_name="cardbench", standalone_mode=False)
    except Terminated:
        print("error: terminated (SIGTERM); temporary files were removed and nothing was left half-written",
              file=sys.stderr)
        return Terminated.CODE
    except Exception as e:  # noqa: BLE001 - only click's own exceptions are handled here
        if named(e, "NoArgsIsHelpError"):  # `cardbench` alone, `cardbench data`: the help (already
            e.show()                        # printed when the error was made), exit code 2 as click gives
            return 2
        if named(e, "UsageError"):
            ctx = getattr(e, "ctx", None)
            where = f"`{ctx.command_path} --help`" if ctx is not None else "`cardbench --help`"
            print(f"error: {' '.join(e.format_message().split())}{_out_hint(ctx, e)} (see {where})", file=sys.stderr)
            return 2
        if named(e, "ClickException"):
            print(f"error: {' '.join(e.format_message().split())}", file=sys.stderr)
            return e.exit_code
        if named(e, "Abort"):
            print("error: aborted", file=sys.stderr)
            return 1
        raise
    return rv if isinstance(rv, int) else 0


class Terminated(SystemExit):
    """Raised in the main thread when the process gets SIGTERM (see :func:`_terminate_like_interrupt`);
    a SystemExit, so no ``except Exception`` swallows it and every ``finally`` and context manager runs."""

    CODE = 128 + 15  # what a shell reports for a process ended by SIGTERM

    def __init__(self) -> None:
        super().__init__(self.CODE)


def _terminate_like_interrupt():
    """Make SIGTERM (``kill PID``, a job scheduler's stop, ``docker stop``) end the command the way
    Ctrl-C does: :class:`Terminated` is raised in the main thread, so temporary folders
    (``cardbench-rows-*``, extracted archives) are removed on the way out. A child process (a
    ``--jobs`` worker forked from this one) keeps the default action: it ends at once.

    Returns:
        a function that puts the previous SIGTERM handler back."""
    import os
    import signal

    owner = os.getpid()

    def on_sigterm(signum, frame):
        if os.getpid() != owner:  # a forked worker: die as SIGTERM would have it
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    except (ValueError, OSError):  # not the main thread, or a platform without SIGTERM handlers
        return lambda: None

    def restore() -> None:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)

    return restore


def _out_hint(ctx, e: BaseException) -> str:
    """``; did you mean --out DIR?`` for one extra positional argument given to a command that takes
    the folder as ``--out`` (``cardbench data prepare NAME DIR``), when ``--out`` was not given."""
    import re
    import shlex

    msg = e.format_message() if hasattr(e, "format_message") else str(e)
    cmd = getattr(ctx, "command", None)
    if cmd is None or not msg.startswith("Got unexpected extra argument"):
        return ""
    out = next((p for p in getattr(cmd, "params", []) if "--out" in getattr(p, "opts", [])), None)
    extra = list(getattr(ctx, "args", None) or [])
    if not extra:  # click names them in the message: "Got unexpected extra argument(s) (DIR)"
        m = re.search(r"\(([^()]*)\)\s*$", msg)
        extra = shlex.split(m.group(1)) if m else []
    if out is None or len(extra) != 1 or (ctx.params or {}).get(out.name) is not None:
        return ""
    return f"; did you mean --out {shlex.quote(extra[0])}?"


def _use_system_allocator_for_arrow() -> None:
    """Arrow buffers (pandas' text columns, Parquet reads of the per-case table) from the C library's
    allocator rather than mimalloc, which keeps freed memory for reuse: a large scoring run then
    gives memory back after each phase (measured in docs/performance.md). The environment
    variable ``ARROW_DEFAULT_MEMORY_POOL`` still chooses, when set."""
    import os

    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return
    try:
        import pyarrow as pa

        pa.set_memory_pool(pa.system_memory_pool())
    except ImportError:  # pragma: no cover - pyarrow is a dependency of cardbench
        pass


def _hide_flag_metavars(command) -> None:
    """On/off flags (and --help) take no value: do not show a ``<bool>`` placeholder for them."""
    import click

    names = app.info.context_settings["help_option_names"] if app.info.context_settings else ["--help"]
    help_option = command.get_help_option(click.Context(command, help_option_names=names))  # cached by click
    for p in [*getattr(command, "params", []), *([help_option] if help_option is not None else [])]:
        if getattr(p, "is_flag", False):
            p.metavar = ""
    for sub in (getattr(command, "commands", None) or {}).values():
        _hide_flag_metavars(sub)
