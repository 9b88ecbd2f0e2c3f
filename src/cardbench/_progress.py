"""Progress of long work: a rich bar in a terminal, plain log lines otherwise.

One helper for every long loop of cardbench (scoring, fetching and verifying, preparing, training,
predicting, pre-filling a leaderboard):

    from cardbench._progress import progress

    with progress(len(tasks), "scoring") as p:
        for t in tasks:
            ...
            p.advance()            # or p.advance(n, info="loss 0.31")

Where the output stream (stderr by default) is a terminal, a rich progress bar is drawn. Where it is
not (a log file, ``nohup``, CI), a plain line is written each time another 10 % is done (and at the
end): ``scoring: 30 % (60/200), 12 s elapsed, about 28 s left``. ``log_every=0`` writes a line for
every ``advance`` (training: one line per epoch). ``enabled=False`` shows nothing.

:func:`progress_bar` gives the same choice behind the subset of rich's :class:`~rich.progress.Progress`
API cardbench uses (``add_task``, ``advance``, ``update``, ``remove_task``), for loops with several
bars (training: epochs and the steps of the current epoch).
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import IO, Iterator

__all__ = ["LogProgress", "Progress", "progress", "progress_bar"]


def _fmt_seconds(s: float) -> str:
    s = max(0.0, s)
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _fmt_count(n: float, unit: str) -> str:
    if unit == "bytes":
        return f"{n / 1e6:.1f} MB"
    return f"{int(n)}"


class _Task:
    def __init__(self, description: str, total: float | None, completed: float, log_every: float | None,
                 unit: str, fields: dict, quiet_for: float = 0.0):
        self.description, self.total, self.completed = description, total, completed
        self.quiet_for, self.printed = quiet_for, False
        self.log_every, self.unit, self.fields = log_every, unit, fields
        self.start = time.monotonic()
        self.start_completed = completed
        self.next_mark = self._mark_after(completed)

    def _mark_after(self, done: float) -> float | None:
        if self.log_every is None or not self.total:
            return None
        if self.log_every <= 0:
            return done + 1e-12
        step = self.total * self.log_every
        k = int(done / step + 1e-9) + 1
        return min(k * step, self.total)


class LogProgress:
    """Plain-text stand-in for rich's ``Progress``: writes one line per 10 % of each task (or per
    ``advance`` with ``log_every=0``) to ``stream``; ``log_every=None`` makes a task silent (e.g. the
    batches inside an epoch)."""

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream
        self.tasks: dict[int, _Task] = {}
        self._next = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def add_task(self, description: str, total: float | None = None, completed: float = 0, *,
                 log_every: float | None = 0.1, unit: str = "", quiet_for: float = 0.0, **fields) -> int:
        tid = self._next
        self._next += 1
        self.tasks[tid] = _Task(description, total, completed, log_every, unit, fields, quiet_for)
        return tid

    def update(self, task_id: int, *, advance: float = 0, completed: float | None = None,
               total: float | None = None, description: str | None = None, **fields) -> None:
        t = self.tasks.get(task_id)
        if t is None:
            return
        if total is not None:
            t.total = total
            t.next_mark = t._mark_after(t.completed)
        if description is not None:
            t.description = description
        t.fields.update(fields)
        t.completed = completed if completed is not None else t.completed + advance
        if t.next_mark is not None and (advance or completed is not None) and t.completed >= t.next_mark - 1e-9:
            self._line(t)
            t.next_mark = t._mark_after(t.completed)
            if t.total and t.completed >= t.total:
                t.next_mark = None

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def remove_task(self, task_id: int) -> None:
        self.tasks.pop(task_id, None)

    def _line(self, t: _Task) -> None:
        el = time.monotonic() - t.start
        if el < t.quiet_for and not t.printed:  # short work: no lines at all (e.g. a quick validation error)
            return
        t.printed = True
        parts = [f"{t.description}:"]
        if t.total:
            pct = 100.0 * t.completed / t.total
            parts.append(f"{pct:.0f} % ({_fmt_count(t.completed, t.unit)}/{_fmt_count(t.total, t.unit)}),")
        else:
            parts.append(f"{_fmt_count(t.completed, t.unit)},")
        parts.append(f"{_fmt_seconds(el)} elapsed")
        done_now = t.completed - t.start_completed
        if t.total and 0 < done_now and t.completed < t.total:
            parts[-1] += ","
            parts.append(f"about {_fmt_seconds(el / done_now * (t.total - t.completed))} left")
        extra = " ".join(str(v) for v in t.fields.values() if v not in (None, ""))
        line = " ".join(parts) + (f"; {extra}" if extra else "")
        stream = self.stream or sys.stderr
        print(line, file=stream, flush=True)


class _NoProgress(LogProgress):
    def _line(self, t: _Task) -> None:  # enabled=False: nothing is shown
        pass


@contextlib.contextmanager
def progress_bar(enabled: bool = True, console=None, *, stream: IO[str] | None = None,
                 transient: bool = False, bytes: bool = False) -> Iterator:
    """A rich ``Progress`` on stderr where it is a terminal, else a :class:`LogProgress` (plain lines),
    or a silent stand-in when ``enabled`` is False. Tasks take an extra ``info`` field and, for the log
    lines, ``log_every`` (fraction of the total between lines; 0: every advance; None: silent) and
    ``unit`` (``"bytes"`` prints MB). ``bytes=True``: the terminal bar shows sizes and speed (downloads)."""
    if not enabled:
        yield _NoProgress()
        return
    from rich.console import Console

    if console is None:
        console = Console(stderr=True) if stream is None else Console(file=stream)
    if not console.is_terminal:
        # stderr looked up at each line (so a redirected sys.stderr is honoured)
        yield LogProgress(stream if stream is not None else (None if console.stderr else console.file))
        return
    from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress as RichProgress, \
        TextColumn, TimeElapsedColumn, TimeRemainingColumn, TransferSpeedColumn

    counts = [DownloadColumn(), TransferSpeedColumn()] if bytes else [MofNCompleteColumn(), TimeElapsedColumn()]
    with RichProgress(TextColumn("{task.description}"), BarColumn(), *counts, TimeRemainingColumn(),
                      TextColumn("{task.fields[info]}"), console=console, transient=transient) as p:
        orig = p.add_task

        def add_task(description, total=None, completed=0, *, log_every=0.1, unit="", quiet_for=0.0, **kw):
            kw.setdefault("info", "")
            return orig(description, total=total, completed=completed, **kw)

        p.add_task = add_task  # type: ignore[method-assign]
        yield p


class Progress:
    """One task of :func:`progress`: ``advance(n=1, info=None)``."""

    def __init__(self, bar, task_id: int):
        self._bar, self._task = bar, task_id

    def advance(self, n: float = 1, info: str | None = None) -> None:
        """Count ``n`` more units done; ``info`` (e.g. ``"loss 0.31"``) is shown next to the bar / line."""
        if info is None:
            self._bar.update(self._task, advance=n)
        else:
            self._bar.update(self._task, advance=n, info=info)


@contextlib.contextmanager
def progress(total: float | None, description: str, *, enabled: bool = True, console=None,
             stream: IO[str] | None = None, log_every: float | None = 0.1, unit: str = "",
             transient: bool = True, completed: float = 0, quiet_for: float = 0.0) -> Iterator[Progress]:
    """Context manager: progress of ``total`` units of work named ``description`` (see the module
    docstring). Returns a :class:`Progress` with ``advance(n=1, info=None)``. ``quiet_for``: seconds
    during which no log line is written (work that ends sooner writes none)."""
    with progress_bar(enabled, console, stream=stream, transient=transient) as bar:
        tid = bar.add_task(description, total=total, completed=completed, log_every=log_every, unit=unit,
                           quiet_for=quiet_for)
        yield Progress(bar, tid)
