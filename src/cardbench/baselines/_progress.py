"""Progress bars of training, prediction and the demo: :func:`cardbench._progress.progress_bar` (a rich
bar in a terminal, plain log lines otherwise)."""

from __future__ import annotations

from cardbench._progress import progress_bar

__all__ = ["progress_bar"]
