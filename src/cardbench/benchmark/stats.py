"""Agreement statistics against the reference and paired comparison of two submissions.

Agreement of a measured index (EDV, EF, ...) with the reference, one value per subject
(Bland JM, Altman DG. Statistical methods for assessing agreement between two methods of clinical
measurement. Lancet 1986;327(8476):307-310, doi:10.1016/S0140-6736(86)90837-8):

- difference d = prediction - reference (per subject);
- bias = mean(d); SD of differences = sample SD of d (ddof = 1);
- 95 % limits of agreement (LoA) = bias -/+ 1.96 x SD;
- mean absolute error (MAE) = mean(|d|);
- Pearson r between reference and prediction (``scipy.stats.pearsonr``; NaN with fewer than 3
  subjects or a constant series).

Confidence intervals: 95 % percentile bootstrap that resamples subjects with replacement
(Efron & Tibshirani 1993), ``n_boot`` resamples drawn from ``numpy.random.default_rng(seed)``
exactly as :func:`cardbench.benchmark.aggregate.bootstrap_ci` draws them, so every figure of one
index (and the Dice CIs of the same protocol) uses the same resampling scheme and seed. Means
(bias, MAE) use ``bootstrap_ci`` itself. For SD, LoA and r, resamples where the statistic is
undefined (e.g. r of a constant resample) are dropped and the interval is taken over the rest.
No interval with fewer than 2 subjects.

Paired comparison of two submissions on the same subjects: the Wilcoxon signed-rank test on the
per-subject differences (``scipy.stats.wilcoxon``, two-sided, ``zero_method="wilcox"``: subjects
with a zero difference are dropped from the test, Wilcoxon 1945), with win / tie / loss counts.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from cardbench.benchmark.aggregate import bootstrap_blocks, bootstrap_ci

LOA_Z = 1.96
AGREEMENT_STATS = ("bias", "sd_diff", "loa_low", "loa_high", "mae", "pearson_r")
#: columns of the agreement table (and the records in summary.json's ``clinical.agreement``).
AGREEMENT_COLUMNS = (["index", "unit", "grouping", "group", "n_subjects", "n_excluded", "ref_mean", "pred_mean"]
                     + [c for s in AGREEMENT_STATS for c in (s, f"{s}_ci_low", f"{s}_ci_high")]
                     + ["pearson_p"])


def _pair(ref, pred) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(ref, dtype=np.float64).ravel()
    p = np.asarray(pred, dtype=np.float64).ravel()
    if r.shape != p.shape:
        raise ValueError(f"reference and prediction have different lengths ({r.size} and {p.size})")
    return r, p


def _pearson(r: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    if r.size < 3 or np.ptp(r) == 0 or np.ptp(p) == 0:
        return np.nan, np.nan
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.pearsonr(r, p)
    return float(res.statistic), float(res.pvalue)


def bland_altman(ref, pred) -> dict[str, float]:
    """Bland-Altman agreement of ``pred`` with ``ref`` (one value per subject, same order).

    Args:
        ref, pred: 1D arrays of equal length, finite values (filter NaN first).

    Returns:
        dict with n, ref_mean, pred_mean, bias, sd_diff, loa_low, loa_high, mae, pearson_r,
        pearson_p (NaN where undefined: SD with n < 2, r with n < 3 or a constant series).

    Raises:
        ValueError: lengths differ or a value is not finite.
    """
    r, p = _pair(ref, pred)
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(p))):
        raise ValueError("bland_altman needs finite values; drop NaN pairs first")
    n = r.size
    d = p - r
    bias = float(d.mean()) if n else np.nan
    sd = float(d.std(ddof=1)) if n > 1 else np.nan
    rr, pp = _pearson(r, p)
    return {"n": int(n), "ref_mean": float(r.mean()) if n else np.nan, "pred_mean": float(p.mean()) if n else np.nan,
            "bias": bias, "sd_diff": sd, "loa_low": bias - LOA_Z * sd, "loa_high": bias + LOA_Z * sd,
            "mae": float(np.abs(d).mean()) if n else np.nan, "pearson_r": rr, "pearson_p": pp}


def bootstrap_stat_ci(statistic: Callable[..., np.ndarray], arrays: Sequence[np.ndarray], n_boot: int, seed: int,
                      alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap CI of any statistic of paired per-subject arrays.

    Args:
        statistic: function of the resampled arrays, each of shape (n_boot, n), returning one
            value per resample (shape (n_boot,)); NaN for an undefined resample.
        arrays: per-subject arrays of equal length n (resampled together, by subject).
        n_boot: number of resamples (0 gives NaN bounds).
        seed: seed (see :func:`~cardbench.benchmark.aggregate.bootstrap_blocks`).
        alpha: 1 - coverage.

    Returns:
        (low, high); (NaN, NaN) with fewer than 2 subjects, ``n_boot == 0`` or no defined resample.
    """
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    n = arrays[0].size
    if n_boot <= 0 or n < 2:
        return (np.nan, np.nan)
    # block by block: the statistic works row by row, so the values equal the dense computation
    vals = np.concatenate([np.asarray(statistic(*[a[idx] for a in arrays]), dtype=np.float64)
                           for idx in bootstrap_blocks(n, n_boot, seed)])
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return (np.nan, np.nan)
    lo, hi = np.quantile(vals, [alpha / 2, 1 - alpha / 2])
    return (float(lo), float(hi))


def _sd_rows(d: np.ndarray) -> np.ndarray:
    return d.std(axis=1, ddof=1)


def _pearson_rows(r: np.ndarray, p: np.ndarray) -> np.ndarray:
    rc = r - r.mean(axis=1, keepdims=True)
    pc = p - p.mean(axis=1, keepdims=True)
    den = np.sqrt((rc ** 2).sum(axis=1) * (pc ** 2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (rc * pc).sum(axis=1) / den
    # a resample with (numerically) constant values has no defined r
    scale = np.maximum(np.abs(r).max(axis=1), np.abs(p).max(axis=1))
    tiny = (np.ptp(r, axis=1) <= 1e-12 * np.maximum(scale, 1)) | (np.ptp(p, axis=1) <= 1e-12 * np.maximum(scale, 1))
    out[tiny] = np.nan
    return np.clip(out, -1.0, 1.0)


def agreement(ref, pred, n_boot: int = 2000, seed: int = 20210421) -> dict[str, float]:
    """:func:`bland_altman` figures with subject-level bootstrap 95 % CIs (``<stat>_ci_low/high``).

    Args:
        ref, pred: per-subject values (NaN pairs are dropped and counted in ``n_excluded``).
        n_boot, seed: bootstrap settings.

    Returns:
        dict with n_subjects, n_excluded, ref_mean, pred_mean, and for each of bias, sd_diff,
        loa_low, loa_high, mae, pearson_r its value and CI bounds; pearson_p.
    """
    r, p = _pair(ref, pred)
    ok = np.isfinite(r) & np.isfinite(p)
    r, p = r[ok], p[ok]
    ba = bland_altman(r, p)
    out: dict[str, float] = {"n_subjects": ba["n"], "n_excluded": int((~ok).sum()),
                             "ref_mean": ba["ref_mean"], "pred_mean": ba["pred_mean"]}
    d = p - r
    cis = {s: (np.nan, np.nan) for s in AGREEMENT_STATS}
    if d.size:
        cis["bias"] = bootstrap_ci(d, n_boot, seed)
        cis["mae"] = bootstrap_ci(np.abs(d), n_boot, seed)
    if n_boot > 0 and d.size >= 2:
        # one draw of resamples for SD, LoA and r (the same draw bootstrap_ci makes for the means)
        # block by block (bounded memory); every statistic is computed row by row
        parts: dict[str, list[np.ndarray]] = {}
        for idx in bootstrap_blocks(d.size, n_boot, seed):
            dd = d[idx]
            m, sdv = dd.mean(axis=1), _sd_rows(dd)
            parts.setdefault("sd_diff", []).append(sdv)
            parts.setdefault("loa_low", []).append(m - LOA_Z * sdv)
            parts.setdefault("loa_high", []).append(m + LOA_Z * sdv)
            if r.size >= 3:
                parts.setdefault("pearson_r", []).append(_pearson_rows(r[idx], p[idx]))
        rows = {k: np.concatenate(v) for k, v in parts.items()}
        for s, v in rows.items():
            v = v[np.isfinite(v)]
            if v.size:
                lo, hi = np.quantile(v, [0.025, 0.975])
                cis[s] = (float(lo), float(hi))
    for s in AGREEMENT_STATS:
        out[s] = ba[s]
        out[f"{s}_ci_low"], out[f"{s}_ci_high"] = cis[s]
    out["pearson_p"] = ba["pearson_p"]
    return out


def agreement_table(table: pd.DataFrame, n_boot: int = 2000, seed: int = 20210421,
                    by_split: bool = True) -> pd.DataFrame:
    """Agreement of every index of a per-subject table (``clinical.csv`` layout) with the reference.

    Args:
        table: columns subject, index, unit, ref, pred, and optionally split.
        n_boot, seed: bootstrap settings.
        by_split: also one row per split (grouping ``split``) when the table has more than one
            non-empty split.

    Returns:
        DataFrame with :data:`AGREEMENT_COLUMNS`; grouping ``all`` (group ``all``) first.
    """
    recs = []
    if table.empty:
        return pd.DataFrame(columns=AGREEMENT_COLUMNS)
    groups: list[tuple[str, str, pd.DataFrame]] = [("all", "all", table)]
    if by_split and "split" in table.columns:
        splits = [s for s in table["split"].fillna("").unique() if s != ""]
        if len(splits) > 1 or (len(splits) == 1 and (table["split"].fillna("") == "").any()):
            for s in sorted(splits):
                groups.append(("split", s, table[table["split"] == s]))
    order = list(dict.fromkeys(table["index"]))
    for gname, label, g in groups:
        for index in order:
            rows = g[g["index"] == index]
            if rows.empty:
                continue
            rec = {"index": index, "unit": rows["unit"].iloc[0], "grouping": gname, "group": label}
            rec.update(agreement(rows["ref"].to_numpy(), rows["pred"].to_numpy(), n_boot, seed))
            recs.append(rec)
    return pd.DataFrame.from_records(recs, columns=AGREEMENT_COLUMNS)


# --- paired comparison of two submissions -------------------------------------------------------

@dataclass
class PairedComparison:
    """Result of :func:`paired_wilcoxon`.

    Attributes:
        per_subject: DataFrame subject, a, b, diff (= a - b), winner (``A``, ``B`` or ``tie``).
        n_subjects: subjects compared (finite value in both).
        wins_a, ties, wins_b: counts; "win" follows ``higher_is_better``.
        mean_diff, median_diff: of a - b.
        statistic, pvalue: Wilcoxon signed-rank test (NaN when every difference is 0 or no subject).
        n_nonzero: subjects with a non-zero difference (those the test uses).
        excluded: subjects present in only one of the inputs, or NaN in one.
    """

    per_subject: pd.DataFrame
    n_subjects: int
    wins_a: int
    ties: int
    wins_b: int
    mean_diff: float
    median_diff: float
    statistic: float
    pvalue: float
    n_nonzero: int
    higher_is_better: bool
    excluded: list[str] = field(default_factory=list)
    method: str = "Wilcoxon signed-rank, two-sided, zero_method='wilcox' (scipy.stats.wilcoxon)"

    def to_dict(self) -> dict:
        """JSON-ready summary (per-subject rows included)."""
        return {"n_subjects": self.n_subjects, "wins_a": self.wins_a, "ties": self.ties, "wins_b": self.wins_b,
                "mean_diff": self.mean_diff, "median_diff": self.median_diff, "statistic": self.statistic,
                "pvalue": self.pvalue, "n_nonzero": self.n_nonzero, "higher_is_better": self.higher_is_better,
                "method": self.method, "excluded": self.excluded,
                "per_subject": self.per_subject.to_dict(orient="records")}


def paired_wilcoxon(a: pd.Series, b: pd.Series, higher_is_better: bool = True) -> PairedComparison:
    """Compare two submissions subject by subject (Wilcoxon signed-rank test on a - b).

    Args:
        a, b: per-subject values indexed by subject id (e.g. mean Dice per subject, or the
            absolute EF error per subject).
        higher_is_better: True for Dice-like values, False for errors and distances.

    Returns:
        :class:`PairedComparison`. Subjects present in only one input, or NaN in one, are listed
        in ``excluded`` and not compared.
    """
    a = pd.Series(a, dtype=np.float64)
    b = pd.Series(b, dtype=np.float64)
    a.index = a.index.astype(str)
    b.index = b.index.astype(str)
    both = sorted(set(a.index) & set(b.index))
    excluded = sorted((set(a.index) ^ set(b.index)))
    keep = [s for s in both if np.isfinite(a[s]) and np.isfinite(b[s])]
    excluded += [s for s in both if s not in keep]
    av = a.reindex(keep).to_numpy()
    bv = b.reindex(keep).to_numpy()
    d = av - bv
    better_a = d > 0 if higher_is_better else d < 0
    better_b = d < 0 if higher_is_better else d > 0
    winner = np.where(better_a, "A", np.where(better_b, "B", "tie"))
    per = pd.DataFrame({"subject": keep, "a": av, "b": bv, "diff": d, "winner": winner})
    nz = int(np.count_nonzero(d))
    stat, pval = np.nan, np.nan
    if nz > 0:
        from scipy import stats

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = stats.wilcoxon(av, bv, zero_method="wilcox", alternative="two-sided")
        stat, pval = float(res.statistic), float(res.pvalue)
    return PairedComparison(
        per_subject=per, n_subjects=len(keep), wins_a=int(better_a.sum()), ties=int((d == 0).sum()),
        wins_b=int(better_b.sum()), mean_diff=float(d.mean()) if d.size else np.nan,
        median_diff=float(np.median(d)) if d.size else np.nan, statistic=stat, pvalue=pval, n_nonzero=nz,
        higher_is_better=higher_is_better, excluded=sorted(set(excluded)))


# --- comparing two result folders ---------------------------------------------------------------

def _result_folder(x):
    """``x`` as a result folder: FileNotFoundError (one line, with the fix) for a file given in its
    place (``.../summary.json``) or a folder without summary.json."""
    from pathlib import Path

    folder = Path(x)
    if folder.is_file():
        raise FileNotFoundError(f"{folder}: is a file; give the result folder that holds it ({folder.parent}), "
                                "not a file in it")
    if not (folder / "summary.json").exists():
        raise FileNotFoundError(f"{folder}: not a result folder (no summary.json); give a folder written by "
                                "`cardbench score --out`")
    return folder


@contextlib.contextmanager
def _as_result_folder_error():
    """The checks of a stored result speak of a leaderboard entry ("remove it and add it again"); for a
    result folder given to ``compare`` the fix is to score the submission again."""
    from cardbench.benchmark.results import ResultFolderError

    try:
        yield
    except (ResultFolderError, FileNotFoundError) as e:
        msg = str(e)
        for old, new in (("remove the entry and add it again", "score the submission again"),
                         ("remove it and add it again", "score the submission again"),
                         ("the entry is", "the result folder is")):
            msg = msg.replace(old, new)
        if msg == str(e):
            raise
        raise type(e)(msg) from None


def _of_split(rows: pd.DataFrame, split: "str | None", where) -> pd.DataFrame:
    """The rows of ``split`` (all rows for None); ValueError naming the splits that exist when none is."""
    if split is None:
        return rows
    col = rows["split"] if "split" in rows.columns else pd.Series([], dtype=object)
    have = sorted({str(s) for s in col.dropna()} - {""})
    if split not in have:
        raise ValueError(f"split {split!r} (--split): no subject of this split in {where} (splits there: "
                         f"{', '.join(have) or 'none'})")
    return rows[col.notna() & (col.astype(str) == split)]


def subject_values(result: "str | object", metric: str = "dice", cls: str | None = "LV",
                   split: str | None = None) -> tuple[pd.Series, bool, str]:
    """Per-subject values of one result folder written by ``cardbench score``.

    Args:
        result: result folder (or a :class:`~cardbench.benchmark.results.ScoreResult` with its
            ``extra_tables``).
        metric: a metric of ``per_subject.csv`` (dice, iou, hd95, ...: the per-subject mean at the
            protocol's level) or a clinical index (LVEDV, LVEF, LVM, ...: the absolute error
            ``|prediction - reference|`` from ``clinical.csv``).
        cls: class for a per-subject metric (ignored for clinical indices).
        split: keep only subjects of this split.

    Returns:
        (values indexed by subject, higher_is_better, description of the values).

    Raises:
        FileNotFoundError: not a result folder, or no clinical.csv for a clinical index.
        ValueError: unknown metric or class (the message lists the available ones).
        ResultFolderError: (a ValueError) per_subject.csv fails the checks of
            :func:`~cardbench.benchmark.results.read_per_subject_checked` (a Dice outside [0, 1],
            a negative distance, text, a truncated file...), or its values do not give the folder's
            summary.json figures (:func:`~cardbench.benchmark.results.check_subject_means`).
    """
    from cardbench.benchmark.clinical import INDEX_UNITS
    from cardbench.benchmark.metric_registry import direction_of
    from cardbench.benchmark.results import ScoreResult, read_result

    if isinstance(result, ScoreResult):
        res, folder = result, None
    else:
        folder = _result_folder(result)
        from cardbench.benchmark.results import read_per_subject_checked, read_summary_checked

        if metric not in INDEX_UNITS and not (folder / "per_subject.csv").exists():
            raise FileNotFoundError(f"{folder / 'per_subject.csv'}: missing; this result folder has no per-subject "
                                    "table to compare. Fix: score the submission again (`cardbench score --out`)")
        # a stranger's values checked before they are compared, against the folder's own figures too
        with _as_result_folder_error():
            checked = (read_per_subject_checked(folder, summary=read_summary_checked(folder))
                       if (folder / "per_subject.csv").exists() else None)
            res = read_result(folder)
        if checked is not None:
            res.per_subject = checked
    if metric in INDEX_UNITS:
        if folder is not None:
            path = folder / "clinical.csv"
            if not path.exists():
                raise FileNotFoundError(f"{path}: missing; this result has no clinical indices (scored without "
                                        "voxel sizes, or by a cardbench before clinical indices existed)")
            clin = pd.read_csv(path, dtype={"subject": str, "split": str}, keep_default_na=False,
                               na_values=[""])
        else:
            clin = res.extra_tables.get("clinical", pd.DataFrame())
        rows = clin[clin["index"] == metric] if not clin.empty else clin
        if rows.empty:
            have = sorted(set(clin["index"])) if not clin.empty else []
            raise ValueError(f"no clinical index {metric} in this result (available: {', '.join(have) or 'none'})")
        rows = _of_split(rows, split, folder / "clinical.csv" if folder is not None else "clinical")
        vals = pd.Series(rows["abs_diff"].to_numpy(np.float64), index=rows["subject"].astype(str))
        return vals, False, f"|{metric} prediction - reference| ({INDEX_UNITS[metric]})"
    ps = res.per_subject
    metrics = sorted(set(ps["metric"])) if not ps.empty else []
    if metric not in metrics:
        raise ValueError(f"unknown metric {metric!r}; per_subject.csv has {', '.join(metrics) or 'none'}, and "
                         f"clinical indices are {', '.join(INDEX_UNITS)}")
    classes = sorted(set(ps["class"]))
    if cls not in classes:
        raise ValueError(f"class {cls!r} not in this result (classes: {', '.join(classes)})")
    rows = ps[(ps["metric"] == metric) & (ps["class"] == cls)]
    rows = _of_split(rows, split, folder / "per_subject.csv" if folder is not None else "per_subject")
    vals = pd.Series(rows["mean"].to_numpy(np.float64), index=rows["subject"].astype(str))
    level = res.summary.get("protocol", {}).get("level", "")
    return vals, direction_of(metric) > 0, f"{metric} {cls}, per-subject mean ({level} level)"


def compare_results(a, b, metric: str = "dice", cls: str | None = "LV", split: str | None = None,
                    allow_mismatch: bool = False) -> tuple[PairedComparison, dict]:
    """Paired comparison of two result folders subject by subject (:func:`paired_wilcoxon`).

    Args:
        a, b: result folders written by ``cardbench score`` (or ScoreResults).
        metric, cls, split: see :func:`subject_values`.
        allow_mismatch: compare even when the protocols or datasets differ.

    Returns:
        (comparison, info) where info holds the submissions' names, protocol, dataset and what
        the values are.

    Raises:
        ValueError: protocols (name, version) or datasets differ and ``allow_mismatch`` is False;
            unknown metric or class.
        FileNotFoundError: a folder is not a result folder.
    """
    from cardbench.benchmark.results import ScoreResult, read_per_subject_checked, read_result, read_summary_checked

    def load(x):
        if isinstance(x, ScoreResult):
            return x
        folder = _result_folder(x)
        with _as_result_folder_error():
            if (folder / "per_subject.csv").exists():  # a stranger's table: checked before anything reads it
                read_per_subject_checked(folder, summary=read_summary_checked(folder))
            return read_result(folder)

    sa, sb = load(a).summary, load(b).summary
    pa, pb = sa.get("protocol", {}), sb.get("protocol", {})
    da, db = sa.get("dataset", {}), sb.get("dataset", {})
    problems = []
    if (pa.get("name"), pa.get("version")) != (pb.get("name"), pb.get("version")):
        problems.append(f"protocols differ: {pa.get('name')} v{pa.get('version')} vs {pb.get('name')} "
                        f"v{pb.get('version')}")
    if (da.get("name"), da.get("version")) != (db.get("name"), db.get("version")):
        problems.append(f"datasets differ: {da.get('name')} {da.get('version')} vs {db.get('name')} "
                        f"{db.get('version')}")
    if problems and not allow_mismatch:
        raise ValueError("; ".join(problems) + ": per-subject values are not comparable (score both "
                         "submissions against the same reference and protocol, or pass --force)")
    va, hib, desc = subject_values(a, metric, cls, split)
    vb, _, _ = subject_values(b, metric, cls, split)
    comp = paired_wilcoxon(va, vb, higher_is_better=hib)
    info = {"a": sa.get("submission", {}).get("name", str(a)), "b": sb.get("submission", {}).get("name", str(b)),
            "protocol": f"{pa.get('name')} v{pa.get('version')}", "dataset": da.get("name"),
            "values": desc, "metric": metric, "class": cls, "split": split, "warnings": problems}
    return comp, info
