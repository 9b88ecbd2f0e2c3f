"""Rich progress bars on stderr (shared by training, prediction and the demo)."""

from __future__ import annotations

import contextlib

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class _NoBar:
    def add_task(self, *a, **k):
        return 0

    def advance(self, *a, **k):
        pass

    def update(self, *a, **k):
        pass

    def remove_task(self, *a, **k):
        pass


@contextlib.contextmanager
def progress_bar(enabled: bool = True, console: Console | None = None):
    """A rich :class:`Progress` on stderr, or a no-op stand-in when ``enabled`` is False."""
    if not enabled:
        yield _NoBar()
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                  console=console or Console(stderr=True), transient=False) as p:
        orig = p.add_task

        def add_task(description, **kw):
            kw.setdefault("info", "")
            return orig(description, **kw)

        p.add_task = add_task  # type: ignore[method-assign]
        yield p
