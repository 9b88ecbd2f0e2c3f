"""The seed's per-image confusion tables (``.tsv``/``.csv``/``.txt``) as an input format: detection only.

A confusion table is not a mask: one file holds the confusion counts of every image of a
submission, so it is scored without a reference folder. This module decides by the file's bytes
whether a file is one (its first line has an ``image`` and a ``bg_bg`` column, and the file is
text); the parsing and its checks live in :func:`cardbench.benchmark.confusion_tables.read_confusion_table`
(the benchmark layer), which ``cardbench score`` calls when :func:`is_confusion_table` is true.
"""

from __future__ import annotations

from pathlib import Path


class ConfusionTableFormat:
    """Detection of the seed's confusion tables (see module docstring)."""

    name = "confusion-table"
    suffixes = (".tsv", ".csv", ".txt")
    description = "the seed's per-image confusion tables (image, set, methodA, methodB, bg_bg ... my_my)"

    def detect(self, path: str | Path) -> bool:
        """True when ``path`` is a table file whose header has an ``image`` and a ``bg_bg`` column."""
        p = Path(path)
        if not p.is_file() or not p.name.lower().endswith(self.suffixes):
            return False
        with open(p, "rb") as fh:
            head = fh.readline(64 * 1024)
        if b"\x00" in head:
            return False
        cols = {c.strip() for c in head.decode("utf-8", "replace").replace(",", "\t").split("\t")}
        return "image" in cols and "bg_bg" in cols


CONFUSION_TABLE = ConfusionTableFormat()


def is_confusion_table(path: str | Path) -> bool:
    """True when ``path`` is one of the seed's confusion tables (see :class:`ConfusionTableFormat`)."""
    return CONFUSION_TABLE.detect(path)
