"""One way for every ``cardbench`` command to fail: one escaped line per problem and a documented exit code.

Exit codes (the same for every command):

- ``0`` (:data:`OK`): success.
- ``1`` (:data:`FAILURE`): a failure while working: out of memory, disk full, a file cardbench may not
  read or write, a download or training step that failed, a published table that does not match.
- ``2`` (:data:`BAD_INPUT`): bad input or usage: validation problems, a file that is not what it should
  be, a limit of :mod:`cardbench.limits` exceeded, an unknown option value.

All user text (paths, names, messages quoting file content) is printed through
:func:`cardbench._util.terminal_safe` (control characters, ESC and newlines shown as ``\\x1b``, ``\\n``)
and :func:`rich.markup.escape`, so a name such as ``[/red]`` prints as itself. At most
``Limits.max_report_lines`` problem lines are printed, then "... and K more problems".
:class:`CardbenchGroup` turns the errors no command should show as a traceback (memory, recursion,
permission, disk full, name too long) into one line.
"""

from __future__ import annotations

import errno
import os
from typing import NoReturn

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

OK = 0
FAILURE = 1
BAD_INPUT = 2

_err = Console(stderr=True)  # writes to the sys.stderr of the moment (tests capture it)


def err_console() -> Console:
    """The shared stderr console."""
    return _err


def _max_lines() -> int:
    try:
        from cardbench.limits import get_limits

        return get_limits().max_report_lines
    except ValueError:
        return 50


def print_error(text: str, console: Console | None = None) -> None:
    """Print ``error: <text>`` on stderr in one line: ``text`` through
    :func:`cardbench._util.terminal_safe` (a control character or newline shows as ``\\x1b`` / ``\\n``)
    and rich-escaped (markup shows as itself)."""
    from cardbench._util import terminal_safe

    (console or err_console()).print(f"[red]error:[/red] {escape(terminal_safe(text))}", highlight=False,
                                     soft_wrap=True)


def fail(problems_or_msg, code: int = BAD_INPUT, console: Console | None = None, written: bool = False) -> NoReturn:
    """Print a message, or problems one line each (at most ``max_report_lines``), and exit with ``code``.

    Args:
        problems_or_msg: a message, or a list of :class:`cardbench.problems.Problem` (or strings).
        code: exit code, :data:`BAD_INPUT` (2, default) or :data:`FAILURE` (1).
        console: where to print (default: stderr).
        written: for a list of problems, whether the closing line should not say nothing was written.

    Raises:
        typer.Exit: always, with ``code``.
    """
    con = console or err_console()
    if isinstance(problems_or_msg, str):
        print_error(problems_or_msg, con)
    else:
        problems = list(problems_or_msg)
        limit = _max_lines()
        for p in problems[:limit]:
            print_error(str(p), con)
        n = len(problems)
        if n > limit:
            con.print(f"... and {n - limit} more problems (raise CARDBENCH_MAX_REPORT_LINES to see them)",
                      highlight=False)
        con.print(f"{n} problem{'s' if n != 1 else ''} found; nothing was scored or written.", highlight=False)
    raise typer.Exit(code)


#: environment variables that name a folder cardbench creates (named in the message when a file is there)
FOLDER_ENV_VARS = ("CARDBENCH_LEADERBOARD", "CARDBENCH_DATA", "TMPDIR")


def _given_as(where: str, argv: "list[str] | None") -> str:
    """`` (given as --cache)`` / `` (from $CARDBENCH_LEADERBOARD)`` when ``where`` is the value of an
    option on the command line or of a folder environment variable, inside it or a file above it;
    else ``""``."""
    def covers(value: str) -> bool:
        try:
            v, w = os.path.abspath(os.path.expanduser(value)), os.path.abspath(where)
        except (TypeError, ValueError):
            return False
        return w == v or w.startswith(v.rstrip(os.sep) + os.sep) or v.startswith(w.rstrip(os.sep) + os.sep)

    args = list(argv or [])
    given = []  # (option, value) pairs whose value holds `where`; the longest value is the one meant
    for i, a in enumerate(args):
        if a.startswith("-") and "=" in a and covers(a.split("=", 1)[1]):
            given.append((a.split("=", 1)[0], a.split("=", 1)[1]))
        elif a.startswith("-") and i + 1 < len(args) and covers(args[i + 1]):
            given.append((a, args[i + 1]))
    if given:
        return f" (given as {max(given, key=lambda g: len(os.path.abspath(g[1])))[0]})"
    for var in FOLDER_ENV_VARS:
        if os.environ.get(var) and covers(os.environ[var]):
            return f" (from ${var})"
    return ""


def _file_in_the_way(where: str) -> str:
    """``where`` or the nearest folder above it that exists as a file (a path ``FILE/sub`` fails on ``FILE``)."""
    from pathlib import Path

    p = Path(where)
    for q in (p, *p.parents):
        if q.exists() or q.is_symlink():
            return str(q) if not q.is_dir() else where
    return where


def explain(e: BaseException, argv: "list[str] | None" = None) -> tuple[str, int] | None:
    """One line and an exit code for an error that must not be a traceback, or None for others.

    ``argv``: the command line (without the program name); a file found where a folder is needed
    is then named by the option (or environment variable) that gave it."""
    if isinstance(e, MemoryError):
        return ("out of memory; nothing was written. Fix: score fewer cases at once (--jobs 1, --split) "
                "or use a machine with more memory", FAILURE)
    if isinstance(e, RecursionError):
        return ("input nested too deeply (recursion limit); nothing was written. Fix: simplify the input "
                "file", BAD_INPUT)
    if isinstance(e, OSError):
        if e.errno == errno.EPIPE:  # the reader went away (`| head`): typer exits quietly
            return None
        where = e.filename if e.filename is not None else "a file"
        if isinstance(e, PermissionError) or e.errno in (errno.EACCES, errno.EPERM):
            return (f"{where}: permission denied. Fix: make it readable/writable for this user "
                    "(chmod) or choose another path", FAILURE)
        if e.errno == errno.ENOSPC or e.errno == getattr(errno, "EDQUOT", -1):
            return (f"{where}: no space left on the disk; nothing was kept half-written. Fix: free space or "
                    "write elsewhere (--out, or TMPDIR for temporary files)", FAILURE)
        if e.errno == errno.ENAMETOOLONG:
            return (f"{where}: file name too long for this file system. Fix: give a shorter name or --out",
                    BAD_INPUT)
        if isinstance(e, (FileExistsError, NotADirectoryError)) or e.errno in (errno.EEXIST, errno.ENOTDIR):
            where = _file_in_the_way(str(where))
            return (f"{where}{_given_as(str(where), argv)}: a file is in the way where a folder is needed. Fix: "
                    "give a folder (or a path that does not exist yet)", BAD_INPUT)
        if e.errno == errno.EROFS:
            return f"{where}: read-only file system. Fix: write elsewhere (--out)", FAILURE
        return f"{where}: {e.strerror or e}. Fix: check the path", FAILURE
    return None


class CardbenchGroup(TyperGroup):
    """The root command group: errors that escaped a command's own handling become one line (see
    :func:`explain`); any other exception propagates (a bug: it should be reported)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta.setdefault("cardbench.argv", list(args))  # shared by the sub-commands' contexts
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (MemoryError, RecursionError, OSError) as e:
            got = explain(e, ctx.meta.get("cardbench.argv"))
            if got is None:  # a closed pipe: left to typer, which exits quietly
                raise
            msg, code = got
            print_error(msg)
            raise typer.Exit(code) from None


def safe_name(name: str, max_len: int = 100) -> str:
    """``name`` reduced to letters, digits, ``-_.`` and at most ``max_len`` characters (a file name
    that is valid on every file system; a longer one keeps a short hash of the whole for uniqueness)."""
    import hashlib

    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".") or "submission"
    if len(safe) > max_len:
        safe = safe[: max_len - 9] + "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
    return safe


def is_inside(path: os.PathLike | str, folder: os.PathLike | str) -> bool:
    """True when ``path`` (resolved) is ``folder`` or inside it."""
    from pathlib import Path

    p, f = Path(path).resolve(), Path(folder).resolve()
    return p == f or f in p.parents
