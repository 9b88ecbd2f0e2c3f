"""The result of a scoring run and how it is written.

A result folder holds::

    summary.json       protocol (name, version, policy), cardbench version, dataset name/version,
                       submission metadata, label maps, classes, sha256 of every input file,
                       counts of every status, aggregated figures with CIs, notes
    per_case.csv       one row per (level, case, class): counts, status, metric values
    per_subject.csv    per-subject means at the protocol's level
    aggregates.csv     the aggregated figures (also inside summary.json)

The folder is written atomically (built in a temporary sibling, then renamed into place).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cardbench._util import atomic_dir


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return None if math.isnan(x) or math.isinf(x) else x
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, Path):
        return str(x)
    if x is pd.NA or x is pd.NaT:
        return None
    return x


def to_json(obj, indent: int | None = 2) -> str:
    """Serialise ``obj`` to JSON, with NaN/inf written as null and numpy scalars as numbers."""
    return json.dumps(_jsonable(obj), indent=indent, ensure_ascii=False)


@dataclass
class ScoreResult:
    """Everything a scoring run produced.

    Attributes:
        summary: the content of summary.json (a JSON-ready dict).
        per_case: per-case table (see :mod:`cardbench.benchmark.casetable`).
        per_subject: per-subject means.
        aggregates: aggregated figures (see :mod:`cardbench.benchmark.aggregate`).
    """

    summary: dict
    per_case: pd.DataFrame
    per_subject: pd.DataFrame
    aggregates: pd.DataFrame
    extra_tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    def headline(self, metric: str = "dice", group: str = "all") -> dict[str, float]:
        """class -> mean of ``metric`` over ``group`` (``"all"`` or e.g. ``"test"``)."""
        a = self.aggregates
        sel = a[(a["metric"] == metric) & (a["group"] == group)]
        if group == "all":
            sel = sel[sel["grouping"] == "all"]
        return {r["class"]: r["mean"] for _, r in sel.iterrows()}

    def write(self, out: str | Path, overwrite: bool = True) -> Path:
        """Write the result folder atomically; returns its path.

        An existing ``out`` is replaced only if it is empty or a folder cardbench wrote (see
        :func:`cardbench._util.atomic_dir`) and ``overwrite`` is True; any other folder is left
        alone. ``out`` may not be, contain, or lie inside the scored predictions or reference.

        Raises:
            FileExistsError: ``out`` exists and may not be replaced.
            ValueError: ``out`` is the current folder or one of its parents, or holds the inputs.
        """
        out = Path(out)
        target = out.resolve()
        for role, key in (("predictions", "submission"), ("reference", "dataset")):
            src = (self.summary.get(key) or {}).get("path")
            if src and Path(src).exists():
                src = Path(src).resolve()
                if src == target or target in src.parents:
                    raise ValueError(f"{out}: is or contains the {role} ({src}); write the results to "
                                     "another folder")
                if src.is_dir() and src in target.parents:  # results would become part of the inputs
                    raise ValueError(f"{out}: inside the {role} folder ({src}); write the results to a folder "
                                     "outside it")
        with atomic_dir(out, overwrite=overwrite) as tmp:
            (tmp / "summary.json").write_text(to_json(self.summary) + "\n", encoding="utf-8")
            per_case_export(self.per_case).to_csv(tmp / "per_case.csv", index=False, float_format="%.10g")
            self.per_subject.to_csv(tmp / "per_subject.csv", index=False, float_format="%.10g")
            self.aggregates.to_csv(tmp / "aggregates.csv", index=False, float_format="%.10g")
            for name, df in self.extra_tables.items():
                df.to_csv(tmp / f"{name}.csv", index=False, float_format="%.10g")
        return out


def case_id(subject, frame=None, slice_=None) -> str:
    """The case id of a per-case row, in the reference's file naming: ``<subject>_frame<FF>`` for a
    volume, ``<subject>_frame<FF>_slice<SSS>`` for one 2D image (``<subject>`` alone when the reference
    has no frame numbers)."""
    out = str(subject)
    if frame is not None and not pd.isna(frame):
        out += f"_frame{int(frame):02d}"
    if slice_ is not None and not pd.isna(slice_):
        out += f"_slice{int(slice_):03d}"
    return out


def per_case_export(per_case: pd.DataFrame) -> pd.DataFrame:
    """The per-case table as written to ``per_case.csv``: a ``case`` id column after ``subject``
    (:func:`case_id`) and ``frame`` / ``slice`` as whole numbers (blank where a volume has no slice),
    never ``3.0``. The values are those of ``per_case``; only their spelling changes."""
    df = per_case.copy()
    for c in ("frame", "slice"):
        if c in df.columns and df[c].dtype.kind == "f":
            v = df[c]
            if bool(((v.dropna() % 1) == 0).all()):
                df[c] = v.astype("Int64")
    if "subject" in df.columns and "case" not in df.columns:
        fr = df["frame"] if "frame" in df.columns else pd.Series([None] * len(df), index=df.index)
        sl = df["slice"] if "slice" in df.columns else pd.Series([None] * len(df), index=df.index)
        ids = [case_id(s, f, x) for s, f, x in zip(df["subject"], fr, sl)]
        df.insert(df.columns.get_loc("subject") + 1, "case", ids)
    return df


def read_result(folder: str | Path) -> ScoreResult:
    """Read a result folder written by :meth:`ScoreResult.write`.

    Raises:
        FileNotFoundError: summary.json or per_case.csv is missing.
    """
    folder = Path(folder)
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    per_case = pd.read_csv(folder / "per_case.csv", dtype={"subject": str})
    per_subject = pd.read_csv(folder / "per_subject.csv", dtype={"subject": str}) \
        if (folder / "per_subject.csv").exists() else pd.DataFrame()
    aggregates = pd.read_csv(folder / "aggregates.csv") \
        if (folder / "aggregates.csv").exists() else pd.DataFrame(summary.get("results", []))
    return ScoreResult(summary, per_case, per_subject, aggregates)
