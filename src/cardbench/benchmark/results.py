"""The result of a scoring run and how it is written.

A result folder holds::

    summary.json       protocol (name, version, policy), cardbench version, dataset name/version,
                       submission metadata, label maps, classes, sha256 of every input file,
                       counts of every status, aggregated figures with CIs, notes
    per_case.csv       one row per (level, case, class): counts, status, metric values
    per_subject.csv    per-subject means at the protocol's level
    aggregates.csv     the aggregated figures (also inside summary.json)

The folder is written atomically (built in a temporary sibling, then renamed into place). This module is
the one reader of result folders and leaderboard entries (:func:`read_result`, :func:`read_per_case`,
:func:`read_summary`, :func:`read_per_subject`); ``per_case.parquet`` replaces ``per_case.csv`` in
leaderboard entries written with ``per_case_format="parquet"``.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import pandas as pd

from cardbench._util import atomic_dir

if TYPE_CHECKING:
    from cardbench.benchmark.casestore import PerCaseStore


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


class ResultFolderError(ValueError):
    """A file of a result folder is corrupt or unreadable; the message names the file and the fix."""


class ScoreResult:
    """Everything a scoring run produced.

    Attributes:
        summary: the content of summary.json (a JSON-ready dict).
        per_case: per-case table (see :mod:`cardbench.benchmark.casetable`) with a ``case`` id
            column after ``subject`` (:func:`case_id`: ``<subject>_frame<FF>[_slice<SSS>]``), so it
            has the columns of ``per_case.csv``. ``cardbench score`` keeps the table in a Parquet file
            (:attr:`per_case_store`) and reads it into memory only when this attribute is used, so a
            large cohort's result is written without ever holding it.
        per_case_store: that file (:class:`~cardbench.benchmark.casestore.PerCaseStore`), or None
            when the table was given as a DataFrame.
        per_subject: per-subject means.
        aggregates: aggregated figures (see :mod:`cardbench.benchmark.aggregate`).
        extra_tables: further tables written as ``<name>.csv`` (clinical indices...).
    """

    def __init__(self, summary: dict, per_case: "pd.DataFrame | PerCaseStore", per_subject: pd.DataFrame,
                 aggregates: pd.DataFrame, extra_tables: dict[str, pd.DataFrame] | None = None):
        self.summary = summary
        self.per_case = per_case
        self.per_subject = per_subject
        self.aggregates = aggregates
        self.extra_tables = dict(extra_tables or {})

    @property
    def per_case(self) -> pd.DataFrame:
        if self._per_case_view is None:
            self._per_case_view = with_case_ids(self._raw_per_case())
        return self._per_case_view

    @per_case.setter
    def per_case(self, value: "pd.DataFrame | PerCaseStore") -> None:
        from cardbench.benchmark.casestore import PerCaseStore

        if isinstance(value, PerCaseStore):
            self.per_case_store, self._per_case = value, None
        else:
            self.per_case_store, self._per_case = None, value
        self._per_case_view = None

    def _raw_per_case(self) -> pd.DataFrame:
        """The per-case table as scored (or as given), without the added ``case`` column: what the
        writers spell out (:func:`write_tables`)."""
        if self._per_case is None:
            self._per_case = self.per_case_store.to_frame()
        return self._per_case

    def close(self) -> None:
        """Remove the stored per-case file now (instead of when the result is garbage-collected); the
        per-case table stays available only if it was read into memory before."""
        if self.per_case_store is not None:
            self.per_case_store.close()

    def __enter__(self) -> "ScoreResult":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        n = len(self.per_case_store) if self._per_case is None else len(self._per_case)
        return f"ScoreResult(submission={(self.summary.get('submission') or {}).get('name')!r}, per_case rows={n})"

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
            write_tables(tmp, self)
        return out


def write_tables(folder: str | Path, result: ScoreResult, *, per_case_format: str = "csv",
                 aggregates: pd.DataFrame | None = None, skip_empty_per_subject: bool = False,
                 extra_name: Callable[[str], str] = str, case_ids: bool = True) -> None:
    """Write the files of a result folder into ``folder`` (an existing, normally temporary folder: the
    callers make the write atomic): the one writer of result folders and leaderboard entries.

    Args:
        folder: where to write.
        result: what to write.
        per_case_format: ``csv`` (10 significant digits: values read back agree with the aggregates to
            ~1e-10) or ``parquet``.
        aggregates: the aggregates table to write (default: ``result.aggregates``).
        skip_empty_per_subject: write no per_subject.csv when the table has no columns.
        extra_name: file stem of each extra table (e.g. a sanitiser); a table named like a standard file
            is not written.
        case_ids: write the CSV per-case table as :func:`per_case_export` spells it (a ``case`` id
            column, whole-number frame/slice); leaderboard entries store the table as scored.

    Raises:
        ImportError: ``parquet`` without pyarrow.
    """
    folder = Path(folder)
    (folder / "summary.json").write_text(to_json(result.summary) + "\n", encoding="utf-8")
    if per_case_format == "parquet":
        result._raw_per_case().to_parquet(folder / "per_case.parquet", index=False)
    elif result._per_case is None and result.per_case_store is not None:
        # a stored table is written row group by row group (the same text as one to_csv of the whole table)
        with open(folder / "per_case.csv", "w", encoding="utf-8", newline="") as f:
            for i, chunk in enumerate(result.per_case_store.iter_frames(rows=16_384)):
                (per_case_export(chunk) if case_ids else chunk).to_csv(f, index=False, header=i == 0,
                                                                        float_format="%.10g")
                del chunk
            if not len(result.per_case_store):
                empty = pd.DataFrame(columns=result.per_case_store.columns)
                (per_case_export(empty) if case_ids else empty).to_csv(f, index=False)
    else:
        raw = result._raw_per_case()
        (per_case_export(raw) if case_ids else raw).to_csv(folder / "per_case.csv", index=False,
                                                           float_format="%.10g")
    if not skip_empty_per_subject or (result.per_subject is not None and len(result.per_subject.columns)):
        result.per_subject.to_csv(folder / "per_subject.csv", index=False, float_format="%.10g")
    (result.aggregates if aggregates is None else aggregates).to_csv(folder / "aggregates.csv", index=False,
                                                                   float_format="%.10g")
    for name, df in (result.extra_tables or {}).items():
        if f"{name}.csv" in STANDARD_FILES:
            continue
        df.to_csv(folder / f"{extra_name(name)}.csv", index=False, float_format="%.10g")


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


def with_case_ids(per_case: pd.DataFrame) -> pd.DataFrame:
    """``per_case`` with a ``case`` id column (:func:`case_id`) after ``subject``, as in ``per_case.csv``
    (values and dtypes of the other columns unchanged; a shallow copy: ``per_case`` itself is not
    changed). A table that has a ``case`` column already, or no ``subject``, is returned as it is."""
    if "subject" not in per_case.columns or "case" in per_case.columns:
        return per_case
    df = per_case.copy(deep=False)
    n = len(df)
    fr = df["frame"] if "frame" in df.columns else pd.Series([None] * n, index=df.index)
    sl = df["slice"] if "slice" in df.columns else pd.Series([None] * n, index=df.index)
    ids = [case_id(s, f, x) for s, f, x in zip(df["subject"], fr, sl)]
    df.insert(df.columns.get_loc("subject") + 1, "case", ids)
    return df


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
    return with_case_ids(df)


def check_stored_file(path: str | Path) -> Path:
    """Refuse a stored result/entry file by what it is, before opening it: a symbolic link (never
    followed: it may point anywhere) or a file larger than ``max_entry_file_bytes``
    (:mod:`cardbench.limits`, env ``CARDBENCH_MAX_ENTRY_FILE_BYTES``). Returns ``path``.

    Raises:
        ResultFolderError: the file is a link or too large (one line: file, problem, fix).
        FileNotFoundError: the file does not exist.
    """
    from cardbench.limits import Limits, get_limits

    path = Path(path)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise ResultFolderError(f"{path}: is a symbolic link; it was not opened (a stored result holds its own files, "
                                "never links): replace the link by a copy of the file, or remove the entry and add "
                                "it again")
    cap = get_limits().max_entry_file_bytes
    if st.st_size > cap:
        raise ResultFolderError(f"{path}: {st.st_size} bytes, more than the limit of {cap} bytes for a stored result "
                                f"file; it was not opened: the entry is corrupt (remove it and add it again), or "
                                f"raise the limit with {Limits.env_name('max_entry_file_bytes')}=BYTES")
    return path


def _check_complete_csv(path: Path) -> None:
    """Raise ResultFolderError unless the CSV file ends with a line break (the writer ends every row with
    one): a file cut mid-row would otherwise be read with blanks in its last row."""
    size = os.stat(path).st_size
    if size == 0:
        return  # empty: the table reader says so
    with open(path, "rb") as fh:
        fh.seek(size - 1)
        last = fh.read(1)
    if last not in (b"\n", b"\r"):
        raise ResultFolderError(f"{path}: ends mid-row (no line break after the last row): the file was truncated; "
                                "the entry is corrupt: remove it and add it again")


def read_per_case(folder: str | Path) -> pd.DataFrame:
    """Read ``per_case.parquet`` or ``per_case.csv`` from a result folder (or a leaderboard entry), checked:
    the required columns, at least one row, numbers (or blanks) in every metric and count column; the
    ``phase`` and ``split`` columns as text (blank = unknown, never NaN).

    Raises:
        FileNotFoundError: neither file exists (names the folder).
        ResultFolderError: the table is corrupt, or Parquet and pyarrow is not installed.
    """
    folder = Path(folder)
    pq = folder / "per_case.parquet"
    csv = folder / "per_case.csv"
    if pq.exists() or pq.is_symlink():
        check_stored_file(pq)
        try:
            df = pd.read_parquet(pq)
        except ImportError as e:
            raise ResultFolderError(f"{pq}: reading Parquet needs pyarrow ({e}); pip install pyarrow "
                                   "(it comes with cardbench[dashboard])") from None
    elif csv.exists() or csv.is_symlink():
        check_stored_file(csv)
        _check_complete_csv(csv)
        try:
            df = pd.read_csv(csv, dtype={"subject": str, "phase": str, "split": str, "status": str, "class": str})
        except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as e:  # EmptyDataError is a ValueError
            raise ResultFolderError(f"{csv}: not a readable table ({str(e).splitlines()[0]}); the entry is "
                                   "corrupt: remove it and add it again") from None
    else:
        df = None
    if df is not None:
        _check_per_case(df, pq if pq.exists() else csv)
        for c in ("phase", "split"):  # empty = unknown; never NaN, so tables and group-bys show it
            if c in df.columns:
                df[c] = df[c].fillna("").astype(str)
        return df
    raise FileNotFoundError(f"{folder}: no per_case.csv or per_case.parquet; the entry is incomplete, "
                            "remove it and add it again")


#: columns every per-case table has; metric columns (dice, iou, hd95, ...) must be numbers.
PER_CASE_REQUIRED = ("level", "subject", "class", "status", "dice")
_PER_CASE_TEXT = {"level", "subject", "frame", "slice", "phase", "split", "class", "status", "ref_file",
                  "pred_file", "reason", "note"}
#: count columns of a per-case table besides the confusion counts ``c<ref><pred>``.
_PER_CASE_COUNTS = {"ref_voxels", "pred_voxels", "tp", "fp", "fn"}


def _check_per_case(df: pd.DataFrame, path: Path) -> None:
    """Raise ResultFolderError (naming ``path``) unless ``df`` has the required columns, at least one row,
    and numbers (or blanks) in every metric column (a metric of the registry) and count column."""
    miss = [c for c in PER_CASE_REQUIRED if c not in df.columns]
    if miss:
        raise ResultFolderError(f"{path}: missing columns {miss}; the entry is corrupt: remove it and add it again")
    if df.empty:
        raise ResultFolderError(f"{path}: no rows; the entry is corrupt: remove it and add it again")
    from cardbench.benchmark.metric_registry import METRICS

    for c in df.columns:
        numeric = c in METRICS or c in _PER_CASE_COUNTS or re.fullmatch(r"c\d\d", c) is not None
        if not numeric or c in _PER_CASE_TEXT:
            continue
        if not pd.api.types.is_numeric_dtype(df[c]):
            num = pd.to_numeric(df[c], errors="coerce")
            bad = df.index[num.isna() & df[c].notna()]
            if len(bad):
                i = bad[0]
                raise ResultFolderError(f"{path}: column {c} holds text ({str(df.at[i, c])!r} in row {i + 2}) where "
                                       "numbers belong; the entry is corrupt: remove it and add it again")
        if c in METRICS:
            _check_metric_range(df, c, METRICS[c], path)


def _check_metric_range(df: pd.DataFrame, column: str, spec, path: Path) -> None:
    """Raise ResultFolderError naming ``path`` and the first offending row when a per-case value of a
    registered metric cannot be one (:meth:`~cardbench.benchmark.metric_registry.MetricSpec.bad_value`:
    infinite, a Dice/IoU/NSD outside [0, 1], a negative distance); blanks (NaN) are allowed. Vectorised:
    one pass over the column."""
    v = pd.to_numeric(df[column], errors="coerce").to_numpy(np.float64)
    bad = np.isinf(v)
    if spec.in_unit_interval:
        bad |= (v < 0) | (v > 1)
    if spec.family in ("overlap", "distance"):
        bad |= v < 0
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        why = spec.bad_value(float(v[i])) or f"{v[i]!r} is out of range"
        raise ResultFolderError(f"{path}: column {column} in row {i + 2}: {why}; the entry is corrupt: remove it "
                                "and add it again")


def read_table_checked(path: str | Path, dtype: dict | None = None, numbers: tuple[str, ...] = ()) -> pd.DataFrame:
    """Any other CSV table of a result folder or leaderboard entry (``aggregates.csv``, ``clinical.csv``...)
    read as a stranger's file: not a link, within ``max_entry_file_bytes`` (:func:`check_stored_file`),
    complete (ends with a line break), a readable table; the columns ``numbers`` (where present) hold
    numbers or blanks, finite.

    Raises:
        FileNotFoundError: no such file.
        ResultFolderError: a check fails (one line naming the file, the row and the fix).
    """
    path = check_stored_file(path)
    _check_complete_csv(path)
    fix = "the entry is corrupt: remove it and add it again"
    try:
        df = pd.read_csv(path, dtype=dtype)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as e:  # EmptyDataError is a ValueError
        raise ResultFolderError(f"{path}: not a readable table ({str(e).splitlines()[0]}); {fix}") from None
    for c in numbers:
        if c not in df.columns:
            continue
        num = pd.to_numeric(df[c], errors="coerce")
        bad = df.index[(num.isna() & df[c].notna()) | np.isinf(num.to_numpy(np.float64))]
        if len(bad):
            i = bad[0]
            raise ResultFolderError(f"{path}: column {c} holds {str(df.at[i, c])!r} in row {i + 2} where a finite "
                                    f"number belongs; {fix}")
    return df


#: the files of a result folder (and of a leaderboard entry, which adds submission.yaml); any other
#: ``*.csv`` is an extra table (e.g. clinical).
STANDARD_FILES = {"summary.json", "per_case.csv", "per_case.parquet", "per_subject.csv", "aggregates.csv",
                  "submission.yaml"}


def read_summary(folder: str | Path) -> dict:
    """``summary.json`` of a result folder.

    Raises:
        FileNotFoundError: no summary.json.
        ValueError: not valid JSON.
    """
    return json.loads((Path(folder) / "summary.json").read_text(encoding="utf-8"))


def read_summary_checked(folder: str | Path) -> dict:
    """``summary.json`` of a result folder or leaderboard entry read as a stranger's file: not a link,
    within ``max_entry_file_bytes`` (:func:`check_stored_file`), a JSON object.

    Raises:
        FileNotFoundError: no summary.json.
        ResultFolderError: a link, too large, not readable JSON or not an object (one line naming it).
    """
    f = check_stored_file(Path(folder) / "summary.json")
    fix = "the entry is corrupt: remove it and add it again"
    try:
        d = json.loads(f.read_text(encoding="utf-8"))
    except RecursionError:
        raise ResultFolderError(f"{f}: not readable JSON (nested too deeply); {fix}") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise ResultFolderError(f"{f}: not readable JSON ({str(e).splitlines()[0]}); {fix}") from None
    if not isinstance(d, dict):
        raise ResultFolderError(f"{f}: not a JSON object; {fix}")
    return d


def read_per_subject(folder: str | Path) -> pd.DataFrame:
    """``per_subject.csv`` of a result folder (subject as text); an empty table when the folder has none.

    Not checked beyond being a table; :func:`read_per_subject_checked` checks it for ranking.
    """
    ps = Path(folder) / "per_subject.csv"
    return pd.read_csv(ps, dtype={"subject": str, "class": str, "metric": str}) if ps.exists() else pd.DataFrame()


#: columns every per_subject.csv has (one row per subject, class and metric: the subject's mean).
PER_SUBJECT_REQUIRED = ("subject", "class", "metric", "mean", "n_values")


def read_per_subject_checked(folder: str | Path, summary: dict | None = None) -> pd.DataFrame:
    """``per_subject.csv`` of a result folder or leaderboard entry, checked before its values are used
    (e.g. to bootstrap ranks): not a link, within ``max_entry_file_bytes``, complete (ends with a line
    break), a readable table with the columns :data:`PER_SUBJECT_REQUIRED` and at least one row,
    ``mean`` a number (or blank) within its metric's range
    (:meth:`~cardbench.benchmark.metric_registry.MetricSpec.bad_value`: finite, a Dice in [0, 1], a
    distance >= 0) and ``n_values`` a count >= 0; given ``summary``, then its values against the
    figures of the folder's ``summary.json`` (:func:`check_subject_means`), so a table edited within
    range cannot rank or compare the entries otherwise than the figures the plain table shows.

    Args:
        folder: the result folder or entry.
        summary: its summary.json (:func:`read_summary_checked`, or the leaderboard's index record,
            which is compared with summary.json on every read); None: the values are not compared.

    Raises:
        FileNotFoundError: no per_subject.csv.
        ResultFolderError: the table fails a check (one line naming the file, the row and the fix).
    """
    from cardbench.benchmark.metric_registry import METRICS

    ps = Path(folder) / "per_subject.csv"
    check_stored_file(ps)
    _check_complete_csv(ps)
    fix = "the entry is corrupt: remove it and add it again"
    try:
        df = pd.read_csv(ps, dtype={"subject": str, "class": str, "metric": str})
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as e:  # EmptyDataError is a ValueError
        raise ResultFolderError(f"{ps}: not a readable table ({str(e).splitlines()[0]}); {fix}") from None
    miss = [c for c in PER_SUBJECT_REQUIRED if c not in df.columns]
    if miss:
        raise ResultFolderError(f"{ps}: missing columns {miss}; {fix}")
    if df.empty:
        raise ResultFolderError(f"{ps}: no rows; {fix}")
    for c in ("mean", "n_values"):
        num = pd.to_numeric(df[c], errors="coerce")
        bad = df.index[num.isna() & df[c].notna()]
        if len(bad):
            i = bad[0]
            raise ResultFolderError(f"{ps}: column {c} holds text ({str(df.at[i, c])!r} in row {i + 2}) where "
                                    f"numbers belong; {fix}")
        df[c] = num.astype(float)
    n = df["n_values"]
    bad = df.index[~((n >= 0) & (n % 1 == 0)) & n.notna()]
    if len(bad):
        i = bad[0]
        raise ResultFolderError(f"{ps}: n_values {df.at[i, 'n_values']!r} in row {i + 2} is not a count; {fix}")
    for i, metric, value in zip(df.index, df["metric"], df["mean"]):
        spec = METRICS.get(metric)
        why = spec.bad_value(float(value)) if spec is not None else (
            f"{value!r} is not finite" if not math.isnan(value) and not math.isfinite(value) else None)
        if why is not None:
            raise ResultFolderError(f"{ps}: {metric} mean of subject {df.at[i, 'subject']} class {df.at[i, 'class']} "
                                    f"(row {i + 2}): {why}; {fix}")
    if summary is not None:
        results = summary.get("results") if isinstance(summary, dict) else None
        aggregation = ((summary.get("protocol") or {}) if isinstance(summary, dict) else {}).get("aggregation")
        for (cls, metric), sel in df.groupby(["class", "metric"], sort=False):
            check_subject_means(sel["mean"], sel["n_values"], results, aggregation, cls=cls, metric=metric,
                                where=ps)
    return df


def _close(a, b) -> bool:
    """Equal up to the 10 significant digits of the stored tables (``float_format="%.10g"``)."""
    fa = float("nan") if a is None else float(a)
    fb = float("nan") if b is None else float(b)
    if math.isnan(fa) or math.isnan(fb):
        return math.isnan(fa) and math.isnan(fb)
    return math.isclose(fa, fb, rel_tol=1e-8, abs_tol=1e-9)


def check_subject_means(means: pd.Series, n_values: pd.Series, results, aggregation: str | None, *, cls: str,
                        metric: str, group: str = "all", where) -> None:
    """Check the per-subject means of one class and metric (read from ``per_subject.csv``, or computed
    from the per-case table) against the aggregated figure of the same entry's ``summary.json``
    (``results``: the records of :func:`cardbench.benchmark.aggregate.aggregate`), recomputed the way
    :func:`~cardbench.benchmark.aggregate.aggregate` computes it: under ``subject`` aggregation the
    mean, median and standard deviation (ddof 1) of the subject means and their number
    (``n_subjects``); under ``pooled`` the mean weighted by each subject's ``n_values``; always the
    total ``n_values``. Equal means up to the 10 significant digits the tables are written with.

    A rearrangement that keeps every one of these figures (subject values swapped between subjects)
    is not seen: the check binds the values that are ranked to the figures that are shown, it is no
    signature.

    Args:
        means: subject -> mean (NaN: no value), one class and metric.
        n_values: subject -> number of values aggregated into the mean (same index).
        results: summary.json ``results`` (list of records with grouping, group, class, metric, mean,
            median, std, n_subjects, n_values); a record of ``group`` (grouping ``all`` for
            ``all``, else ``phase``) must exist for a registered metric.
        aggregation: the protocol's ``subject`` or ``pooled``.
        cls, metric, group: what the values are.
        where: the file named in the error.

    Raises:
        ResultFolderError: a figure differs, or summary.json has none to check against (one line
            naming ``where``, the class and metric, the two values and the fix).
    """
    fix = "the entry is corrupt (edited after it was added): remove it and add it again"
    grouping = "all" if group == "all" else "phase"
    rec = None
    if isinstance(results, list):
        rec = next((r for r in results if isinstance(r, dict) and r.get("grouping") == grouping
                    and r.get("group") == group and r.get("class") == cls and r.get("metric") == metric), None)
    if rec is None:
        if not pd.to_numeric(means, errors="coerce").notna().any():
            return  # no value: nothing is ranked
        raise ResultFolderError(f"{where}: {metric} {cls} ({group}) has per-subject values but summary.json holds no "
                                f"figure to check them against; {fix}")
    m = np.asarray(pd.to_numeric(means, errors="coerce"), dtype=np.float64)
    n = np.asarray(pd.to_numeric(n_values, errors="coerce"), dtype=np.float64)
    ok = ~np.isnan(m)
    sm, w = m[ok], np.nan_to_num(n[ok])
    got: dict[str, float] = {"n_values": float(np.nansum(n))}
    if aggregation == "pooled":
        got["mean"] = float((sm * w).sum() / w.sum()) if w.sum() > 0 else float("nan")
    else:
        got["n_subjects"] = float(sm.size)
        got["mean"] = float(sm.mean()) if sm.size else float("nan")
        got["median"] = float(np.median(sm)) if sm.size else float("nan")
        if sm.size > 1:
            got["std"] = float(sm.std(ddof=1))
    for key, value in got.items():
        want = rec.get(key)
        if key not in rec or isinstance(want, bool) or (want is not None and not isinstance(want, (int, float))):
            continue  # an entry of an older format without this figure
        if not _close(value, want):
            raise ResultFolderError(f"{where}: {metric} {cls} ({group}): the per-subject values give a {key} of "
                                    f"{value:.10g}, summary.json says {want!r}; {fix}")


def _tol(x: float) -> float:
    """Rounding allowance of a stored figure (10 significant digits, as :func:`_close`)."""
    return 1e-9 + 1e-8 * abs(x)


def _finite(x) -> float | None:
    """``x`` as a finite float, else None (text, bool, None, NaN, infinite)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _count(x) -> int | None:
    """``x`` as a count (an int >= 0, or a float holding one), else None."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x < 0 or x % 1:
        return None
    return int(x)


def _status_totals(summary: dict) -> dict[tuple[str, str], dict[str, int]] | None:
    """``counts.status`` of a summary (level -> class -> status -> rows, as
    :func:`cardbench.benchmark.scoring.status_counts` writes it) as ``{(level, class): {status: rows}}``;
    None when the summary has none (an entry of an older format) or it is not of that shape."""
    st = (summary.get("counts") or {}).get("status") if isinstance(summary.get("counts"), dict) else None
    if not isinstance(st, dict) or not st:
        return None
    out: dict[tuple[str, str], dict[str, int]] = {}
    for level, by_cls in st.items():
        if not isinstance(by_cls, dict):
            return None
        for cls, by_status in by_cls.items():
            if not isinstance(by_status, dict):
                return None
            counts = {str(s): _count(n) for s, n in by_status.items()}
            if any(n is None for n in counts.values()):
                return None
            out[(str(level), str(cls))] = counts
    return out


def check_summary_consistency(summary: dict, where, bench_protocol: dict | None = None) -> None:
    """Check that the figures of one ``summary.json`` agree with each other (and with the benchmark),
    using only the file itself: cheap, so it runs on every read of a leaderboard entry.

    Per record of ``results`` (the records of :func:`cardbench.benchmark.aggregate.aggregate`):

    - ``ci_low <= ci_high`` where both are finite; under ``subject`` aggregation also
      ``ci_low <= mean <= ci_high`` (the percentile bootstrap interval of the mean of subject means
      holds that mean; under ``pooled`` the interval is of the subject means, not of the pooled mean,
      so only its order is checked); a rounding allowance of 10 significant digits;
    - ``n_subjects`` at most ``counts.subjects`` (the distinct subjects at the protocol's level;
      not for the ``position`` grouping, which counts image-level rows);
    - grouping ``all``: ``n_values + n_excluded`` equal to the rows of that class at the protocol's
      level in ``counts.status`` (every row of the class is either aggregated or excluded).

    With ``bench_protocol`` (the benchmark.json ``protocol``), the summary's protocol must be one the
    benchmark accepts (:func:`cardbench.benchmark.protocols.protocols_compatible`: the same name,
    level, aggregation, major version and policy).

    A figure missing, or of an older format without it, is not compared.

    Raises:
        ResultFolderError: one line naming ``where``, the figure, the values and the fix.
    """
    fix = "the entry is corrupt (edited after it was added): remove it and add it again"
    proto = summary.get("protocol") if isinstance(summary.get("protocol"), dict) else {}
    if bench_protocol is not None:
        from cardbench.benchmark.protocols import protocols_compatible

        if not protocols_compatible(bench_protocol, proto):
            raise ResultFolderError(
                f"{where}: scored with protocol {proto.get('name')!r} v{proto.get('version')}, but its benchmark's "
                f"benchmark.json says {bench_protocol.get('name')!r} v{bench_protocol.get('version')}: one of the two "
                "files was edited; restore benchmark.json from a backup, or remove the entry and add it again")
    results = summary.get("results")
    if not isinstance(results, list):
        return
    counts = summary.get("counts") if isinstance(summary.get("counts"), dict) else {}
    n_subj_all = _count(counts.get("subjects"))
    totals = _status_totals(summary)
    level = proto.get("level")
    subject_agg = proto.get("aggregation") == "subject"
    for r in results:
        if not isinstance(r, dict):
            continue
        what = f"{r.get('metric')} of class {r.get('class')} (group {r.get('group')})"
        lo, hi, mean = _finite(r.get("ci_low")), _finite(r.get("ci_high")), _finite(r.get("mean"))
        if lo is not None and hi is not None and lo > hi + _tol(hi):
            raise ResultFolderError(f"{where}: {what}: ci_low {lo!r} is above ci_high {hi!r}; {fix}")
        if subject_agg and mean is not None:
            if lo is not None and mean < lo - _tol(lo):
                raise ResultFolderError(f"{where}: {what}: mean {mean!r} is below its ci_low {lo!r}; {fix}")
            if hi is not None and mean > hi + _tol(hi):
                raise ResultFolderError(f"{where}: {what}: mean {mean!r} is above its ci_high {hi!r}; {fix}")
        ns = _count(r.get("n_subjects"))
        if ns is not None and n_subj_all is not None and r.get("grouping") != "position" and ns > n_subj_all:
            raise ResultFolderError(f"{where}: {what}: n_subjects {ns} is more than the {n_subj_all} subjects in "
                                    f"counts; {fix}")
        if r.get("grouping") == "all" and totals is not None and level is not None:
            rows = totals.get((str(level), str(r.get("class"))))
            nv, ne = _count(r.get("n_values")), _count(r.get("n_excluded"))
            if rows is not None and nv is not None and ne is not None and nv + ne != sum(rows.values()):
                raise ResultFolderError(f"{where}: {what}: n_values {nv} + n_excluded {ne} is not the "
                                        f"{sum(rows.values())} {level} rows of that class in counts; {fix}")


def check_per_subject_against_per_case(per_subject: pd.DataFrame, per_case: pd.DataFrame, summary: dict,
                                       where) -> None:
    """Check an entry's per-subject table against its per-case table, and ``summary.json``'s subject
    count against both: each per-subject ``mean`` and ``n_values`` must be what the per-case rows at
    the protocol's level give (the mean of the subject's non-blank values of that class and metric,
    their number), and ``counts.subjects`` the number of subjects of those rows. With
    :func:`check_subject_means` (per-subject table against summary.json's figures) this ties the
    figures a leaderboard shows to the per-case values, so hand-edits of summary.json, per_subject.csv
    and aggregates.csv that agree with each other are still refused unless every per-case row is
    edited too.

    Args:
        per_subject: :func:`read_per_subject_checked` output (subject, class, metric, mean, n_values).
        per_case: the entry's per-case table (columns level, subject, class and the metric columns).
        summary: the entry's summary.json (``protocol.level``, ``counts.subjects``).
        where: the per_subject.csv path, for messages.

    Raises:
        ResultFolderError: a value or count differs (one line naming the file, the subject, the class,
            the metric and both values).
    """
    fix = "the entry is corrupt: remove it and add it again"
    level = ((summary.get("protocol") or {}).get("level") if isinstance(summary, dict) else None) or "image"
    rows = per_case[per_case["level"] == level] if "level" in per_case.columns else per_case
    subjects = rows["subject"].astype(str)
    counts = summary.get("counts") if isinstance(summary, dict) else None
    if isinstance(counts, dict) and isinstance(counts.get("subjects"), (int, float)) and len(rows):
        if int(counts["subjects"]) != subjects.nunique():
            raise ResultFolderError(f"{where}: summary.json counts {counts['subjects']} subjects, the per-case table "
                                    f"has {subjects.nunique()} at level {level}; {fix}")
    metrics = [m for m in dict.fromkeys(per_subject["metric"]) if m in rows.columns]
    if not metrics or not len(rows):
        return
    g = rows.assign(subject=subjects).groupby(["subject", "class"], sort=False)[metrics]
    mean, n = g.mean().stack(future_stack=True), g.count().stack(future_stack=True)
    ps = per_subject[per_subject["metric"].isin(metrics)]
    key = pd.MultiIndex.from_arrays([ps["subject"].astype(str), ps["class"].astype(str), ps["metric"]])
    want_mean = mean.reindex(key).to_numpy(np.float64)
    want_n = n.reindex(key).to_numpy(np.float64)
    got_mean = pd.to_numeric(ps["mean"], errors="coerce").to_numpy(np.float64)
    got_n = pd.to_numeric(ps["n_values"], errors="coerce").to_numpy(np.float64)
    bad = ~(np.isclose(got_mean, want_mean, rtol=1e-8, atol=1e-9) | (np.isnan(got_mean) & np.isnan(want_mean)))
    bad |= ~((got_n == want_n) | (np.isnan(want_n) & (got_n == 0)))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        r = ps.iloc[i]
        raise ResultFolderError(f"{where}: {r['metric']} of subject {r['subject']} class {r['class']}: mean "
                                f"{got_mean[i]:.10g} of {got_n[i]:.0f} values, the per-case table gives "
                                f"{want_mean[i]:.10g} of {want_n[i]:.0f}; {fix}")


def check_per_case_counts(df: pd.DataFrame, summary: dict, where) -> None:
    """Check a per-case table against the row counts its ``summary.json`` records (``counts.status``:
    level -> class -> status -> rows, :func:`cardbench.benchmark.scoring.status_counts`), so a table
    cut at a row boundary, or with rows added or relabelled, is refused. Rows of a status
    :func:`~cardbench.benchmark.scoring.status_counts` does not count are ignored. Nothing is
    compared for a summary without these counts (an older format).

    Args:
        df: the per-case table (columns ``level``, ``class``, ``status``), one row per level, case and class.
        summary: the entry's summary.json.
        where: the file named in the error.

    Raises:
        ResultFolderError: one line naming ``where``, the level and class, the two row counts and the fix.
    """
    totals = _status_totals(summary) if isinstance(summary, dict) else None
    if totals is None:
        return
    from cardbench.benchmark.metrics import STATUSES

    sub = df[df["status"].isin(STATUSES)]
    have = sub.groupby(["level", "class", "status"], sort=False).size()
    got: dict[tuple[str, str], dict[str, int]] = {}
    for (lv, cls, st), n in have.items():
        got.setdefault((str(lv), str(cls)), {})[str(st)] = int(n)
    for key in sorted(set(got) | set(totals)):
        g = {s: n for s, n in got.get(key, {}).items() if n}
        w = {s: n for s, n in totals.get(key, {}).items() if n and s in STATUSES}
        if g != w:
            ng, nw = sum(g.values()), sum(w.values())
            detail = (f"{ng} rows" if ng != nw else f"statuses {g}") + \
                f" at level {key[0]} of class {key[1]}, summary.json counts " + (f"{nw}" if ng != nw else f"{w}")
            raise ResultFolderError(f"{where}: {detail}: the table was cut or edited after it was written; the entry "
                                    "is corrupt: remove it and add it again")


def read_result(folder: str | Path) -> ScoreResult:
    """Read a result folder written by :meth:`ScoreResult.write` (or a leaderboard entry): the one reader
    of result folders. Per-case table: :func:`read_per_case`; extra ``*.csv`` tables included.

    Raises:
        FileNotFoundError: summary.json or the per-case table is missing.
        ResultFolderError: the per-case table is corrupt (names the file and the fix).
    """
    folder = Path(folder)
    summary = read_summary(folder)
    per_case = read_per_case(folder)
    per_subject = read_per_subject(folder)
    ag = folder / "aggregates.csv"
    aggregates = pd.read_csv(ag) if ag.exists() else pd.DataFrame(summary.get("results", []))
    extra = {p.stem: pd.read_csv(p, dtype={"subject": str}) for p in sorted(folder.glob("*.csv"))
             if p.name not in STANDARD_FILES}
    return ScoreResult(summary, per_case, per_subject, aggregates, extra_tables=extra)
