"""One input problem: the file, what is wrong, and how to fix it.

Shared by every part (datasets checks splits and files, benchmark validates submissions), so all
of cardbench reports problems in one shape and the CLI prints them one per line.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One validation problem.

    Attributes:
        file: the file (or case) concerned.
        problem: what is wrong.
        fix: what to do about it.
        kind: short machine-readable category (``missing``, ``extra``, ``duplicate``, ``unreadable``,
            ``shape``, ``spacing``, ``affine``, ``labels``, ``name``, ``metadata``, ``split``).
    """

    file: str
    problem: str
    fix: str
    kind: str = ""

    def __str__(self) -> str:
        """One terminal line: the file name and the problem text (which may quote a stranger's file
        names) through :func:`cardbench._util.terminal_safe`, so no control character is printed."""
        from cardbench._util import terminal_safe

        return terminal_safe(f"{self.file}: {self.problem}. Fix: {self.fix}")

    def to_dict(self) -> dict:
        return {"file": self.file, "problem": self.problem, "fix": self.fix, "kind": self.kind}
