"""Rankings with their uncertainty: subject bootstrap of the ranking, Kendall's tau, pairwise tests.

A leaderboard with a handful of test subjects ranks entries whose confidence intervals overlap
almost entirely. Following challengeR (Wiesenfarth et al., "Methods and open-source toolkit for
analyzing and visualizing challenge results", Sci Rep 2021;11:2369, doi:10.1038/s41598-021-82017-6),
this module reports, for one benchmark and one ranking metric:

- **the ranking** by one of two methods:

  ``aggregate-then-rank`` (the leaderboard's own): the entry's aggregate over subjects (the mean of
  the per-subject means under ``aggregation: subject``; the mean over all values, i.e. per-subject
  means weighted by their number of values, under ``aggregation: pooled``), then ranked;

  ``rank-then-aggregate``: the entries ranked within each subject, then the mean of these
  per-subject ranks, ranked again (smaller mean rank is better).

  Ties share the best rank ("min", as R's ``rank(ties.method = "min")`` in challengeR).
- **bootstrap ranks**: ``B`` resamples of the subjects with replacement, *the same resamples for
  every entry* (paired; :func:`cardbench.benchmark.aggregate.bootstrap_indices` with a fixed
  seed), the ranking recomputed on each. Per entry: the median rank and the 95 % rank interval
  (2.5th and 97.5th percentile of its bootstrap ranks, ``numpy.quantile`` default linear
  interpolation) and the frequency of each rank (the blob plot). Kendall's tau (tau-b, as
  :func:`scipy.stats.kendalltau` gives it; :func:`kendall_tau_b`) between the full-data ranking and each bootstrap ranking
  summarises the stability (1: every resample gives the same order).
- **pairwise significance**: for every ordered pair (A, B) of entries a one-sided Wilcoxon
  signed-rank test (:func:`scipy.stats.wilcoxon`, paired on the subjects both have, zero
  differences dropped as in Wilcoxon's original method) of "A is better than B", and Holm's
  step-down correction (Holm, Scand J Stat 1979;6:65) over all ``K (K - 1)`` ordered pairs, as
  challengeR's significance map does (``p.adjust(method = "holm")``).

Input values are the per-subject means the leaderboard stores (``per_subject.csv``) for the group
``all``; for a phase (``ED``/``ES``) they are recomputed from ``per_case`` rows at the protocol's
level. Subjects without a value for some entry (e.g. all values excluded by the policy) are left
out for every entry (complete cases), so every entry is ranked on the same subjects; their number is
reported. Clinical agreement statistics (mae_lvef...) have no per-subject values and cannot be
bootstrapped here.

Example::

    from cardbench.benchmark.leaderboard import open_leaderboard
    from cardbench.benchmark.ranking import rank_uncertainty
    ru = rank_uncertainty(open_leaderboard(), "cmr-7t__test__cardbench-v1", "dice_lv")
    print(ru.summary)            # entry, rank, value, median_rank, rank_low, rank_high
    print(ru.kendall_tau_median, ru.significant)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cardbench.benchmark.aggregate import bootstrap_indices

METHODS = ("aggregate-then-rank", "rank-then-aggregate")
#: defaults when the protocol has no bootstrap settings (ankenbrand2021).
DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 20210421
ALPHA = 0.05


class RankingError(ValueError):
    """The ranking cannot be computed; the message names the benchmark, the problem and the fix."""


# --------------------------------------------------------------------------------------------
# pure functions on arrays


def _keys(values: np.ndarray, direction: int) -> np.ndarray:
    """Transform values so that smaller is better: -x (higher better), x (lower better), |x| (closer to 0)."""
    v = np.asarray(values, dtype=np.float64)
    if direction == 0:
        return np.abs(v)
    return v * -direction


def min_rank(keys: np.ndarray) -> np.ndarray:
    """"min" ranks along the last axis (1 = smallest key; ties share the smallest rank).

    Args:
        keys: ``(..., K)`` array, smaller is better, no NaN.

    Returns:
        ``(..., K)`` int array of ranks 1..K, as :meth:`pandas.Series.rank` with ``method="min"``.
    """
    k = np.asarray(keys, dtype=np.float64)
    return (k[..., None, :] < k[..., :, None]).sum(axis=-1) + 1


def rank_entries(values: np.ndarray, direction: int, method: str = "aggregate-then-rank",
                 weights: np.ndarray | None = None) -> np.ndarray:
    """Rank K entries from their per-subject values.

    Args:
        values: ``(n_subjects, K)`` per-subject values (no NaN), or ``(B, n_subjects, K)`` for B
            resamples at once.
        direction: +1 higher is better, -1 lower is better, 0 closer to 0 is better.
        method: ``aggregate-then-rank`` or ``rank-then-aggregate`` (see the module docstring).
        weights: same shape as ``values``: weight of each subject's value in the aggregate (its
            number of values under pooled aggregation); None = equal weights.

    Returns:
        ``(K,)`` (or ``(B, K)``) int ranks, 1 = best.

    Raises:
        RankingError: unknown method.
    """
    v = np.asarray(values, dtype=np.float64)
    if method == "aggregate-then-rank":
        if weights is None:
            agg = v.mean(axis=-2)
        else:
            w = np.asarray(weights, dtype=np.float64)
            agg = (v * w).sum(axis=-2) / w.sum(axis=-2)
        return min_rank(_keys(agg, direction))
    if method == "rank-then-aggregate":
        per_subject = min_rank(_keys(v, direction))          # (..., n_subjects, K)
        return min_rank(per_subject.mean(axis=-2))
    raise RankingError(f"unknown ranking method {method!r}; use one of: {', '.join(METHODS)}")


def kendall_tau_b(reference: np.ndarray, rankings: np.ndarray) -> np.ndarray:
    """Kendall's tau-b between one ranking and each of many, as :func:`scipy.stats.kendalltau`'s
    statistic (``variant='b'``) gives it, in one vectorised pass (no p-value is computed).

    tau-b = (C - D) / sqrt(n0 - n1) / sqrt(n0 - n2) (Kendall, Biometrika 1945;33:239), with C - D
    the sum over the ``n0 = K (K - 1) / 2`` pairs of entries of sign(x_i - x_j) sign(y_i - y_j),
    and n1, n2 the pairs tied in ``reference`` and in a ranking; clipped to [-1, 1], and NaN where
    every pair is tied in one of them. The same integer counts and the same floating-point
    operations as scipy, so the values are equal to the bit.

    Args:
        reference: shape (K,), one value (rank) per entry.
        rankings: shape (B, K), one ranking per row, entries in the order of ``reference``.

    Returns:
        shape (B,), float64.
    """
    x = np.asarray(reference)
    y = np.asarray(rankings)
    i, j = np.triu_indices(x.shape[0], k=1)
    sx = np.sign(x[i] - x[j]).astype(np.int64)               # (P,)
    sy = np.sign(y[:, i] - y[:, j]).astype(np.int64)         # (B, P)
    tot = i.size
    xtie = int((sx == 0).sum())
    ytie = (sy == 0).sum(axis=1)
    con_minus_dis = sy @ sx
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = con_minus_dis / np.sqrt(tot - xtie) / np.sqrt(tot - ytie)
    tau = np.clip(tau, -1.0, 1.0)
    tau[(ytie == tot) | (xtie == tot)] = np.nan
    return tau.astype(np.float64)


def holm(pvalues: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979; R's ``p.adjust(method = "holm")``).

    Args:
        pvalues: any shape; NaN entries are ignored (stay NaN) and not counted in m.

    Returns:
        Array of the same shape: ``p_(i) * (m - i + 1)`` for the i-th smallest, made monotone by a
        running maximum and capped at 1.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    flat = p.ravel()
    ok = ~np.isnan(flat)
    out = np.full(flat.shape, np.nan)
    q = flat[ok]
    m = q.size
    if m:
        order = np.argsort(q, kind="stable")
        adj = np.minimum(1.0, np.maximum.accumulate(q[order] * (m - np.arange(m))))
        res = np.empty(m)
        res[order] = adj
        out[ok] = res
    return out.reshape(p.shape)


def pairwise_wilcoxon(values: np.ndarray, direction: int) -> np.ndarray:
    """One-sided Wilcoxon signed-rank p-values of "row entry better than column entry".

    Args:
        values: ``(n_subjects, K)`` per-subject values (paired by subject, no NaN).
        direction: +1 higher is better, -1 lower is better, 0 closer to 0 is better (compares |x|).

    Returns:
        ``(K, K)`` p-values (unadjusted), NaN on the diagonal. A pair whose differences are all zero
        gets p = 1. Uses :func:`scipy.stats.wilcoxon` (``zero_method="wilcox"``, its default exact
        or normal method).
    """
    from scipy.stats import wilcoxon

    k = _keys(values, direction)  # smaller is better
    K = k.shape[1]
    p = np.full((K, K), np.nan)
    for i in range(K):
        for j in range(K):
            if i == j:
                continue
            d = k[:, i] - k[:, j]
            if not np.any(d != 0):
                p[i, j] = 1.0
                continue
            p[i, j] = float(wilcoxon(d, alternative="less").pvalue)
    return p


# --------------------------------------------------------------------------------------------
# leaderboard


@dataclass
class RankUncertainty:
    """Result of :func:`rank_uncertainty`.

    Attributes:
        benchmark, metric (``<metric>_<class>``), group, method, direction.
        subjects: the subjects used (complete cases), in order.
        values: DataFrame ``(subjects x entries)`` of per-subject values (the metric's unit).
        summary: one row per entry, best first: ``entry``, ``rank`` (full data), ``value`` (the
            aggregate, or the mean per-subject rank for rank-then-aggregate), ``median_rank``,
            ``rank_low``, ``rank_high`` (95 % bootstrap rank interval), ``n_better``/``n_worse``
            (entries it is significantly better/worse than after Holm).
        boot_ranks: ``(B, K)`` int ranks of each resample, columns in ``summary`` order.
        kendall_tau: ``(B,)`` Kendall's tau-b between the full-data ranking and each resample.
        pvalues, pvalues_holm: ``(K x K)`` DataFrames, row better than column (one-sided).
        significant: bool DataFrame, ``pvalues_holm <= alpha``.
        n_boot, seed, alpha, n_dropped_subjects.
    """

    benchmark: str
    metric: str
    group: str
    method: str
    direction: int
    subjects: list
    values: pd.DataFrame
    summary: pd.DataFrame
    boot_ranks: np.ndarray
    kendall_tau: np.ndarray
    pvalues: pd.DataFrame
    pvalues_holm: pd.DataFrame
    significant: pd.DataFrame
    n_boot: int
    seed: int
    alpha: float = ALPHA
    n_dropped_subjects: int = 0
    unranked: list = field(default_factory=list)

    @property
    def kendall_tau_median(self) -> float:
        """Median Kendall's tau over the resamples (NaN without resamples)."""
        t = self.kendall_tau[~np.isnan(self.kendall_tau)] if self.kendall_tau.size else self.kendall_tau
        return float(np.median(t)) if t.size else float("nan")

    def rank_frequencies(self) -> pd.DataFrame:
        """Long table ``entry, rank, frequency`` (share of resamples giving the entry that rank)."""
        rows = []
        B = self.boot_ranks.shape[0]
        for j, e in enumerate(self.summary["entry"]):
            r, c = np.unique(self.boot_ranks[:, j], return_counts=True)
            rows += [{"entry": e, "rank": int(a), "frequency": float(b) / B} for a, b in zip(r, c)]
        return pd.DataFrame(rows, columns=["entry", "rank", "frequency"])

    def to_dict(self) -> dict:
        """Aggregates only (no per-subject value): for exports and public views."""
        return {"benchmark": self.benchmark, "metric": self.metric, "group": self.group, "method": self.method,
                "n_subjects": len(self.subjects), "n_dropped_subjects": self.n_dropped_subjects,
                "n_boot": self.n_boot, "seed": self.seed, "alpha": self.alpha,
                "kendall_tau_median": self.kendall_tau_median,
                "entries": self.summary.to_dict(orient="records"),
                "significant": {a: [b for b in self.significant.columns if self.significant.loc[a, b]]
                                for a in self.significant.index}}


def _protocol_bootstrap(protocol: dict) -> tuple[int, int]:
    b = protocol.get("bootstrap") or {}
    n = b.get("resamples") or DEFAULT_RESAMPLES
    seed = b.get("seed") if b.get("seed") is not None else DEFAULT_SEED
    return int(n), int(seed)


def subject_values(lb, bench: str, metric: str = "dice_lv", group: str | None = None
                   ) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Per-subject values of every entry for one metric, class and group.

    Args:
        lb: a :class:`cardbench.benchmark.leaderboard.Leaderboard`.
        bench: benchmark id.
        metric: ``<metric>_<class>[_<phase>]`` (see :func:`parse_metric`).
        group: ``all``, ``ED``, ``ES`` (overrides the phase in ``metric``).

    Returns:
        (values, n_values, info): two DataFrames indexed by subject (str) with one column per entry
        (NaN where an entry has no value), and ``{"metric", "class", "group", "direction",
        "protocol"}``.

    Raises:
        RankingError: unknown metric/class/group, a clinical statistic, no valid entry (every entry
            skipped as corrupt, or none), or no per-subject values.
    """
    from cardbench.benchmark.leaderboard import (
        CLINICAL_INDICES, CLINICAL_STATS, metric_direction, parse_metric, read_per_case,
    )
    from cardbench.benchmark.leaderboard import LeaderboardError
    from cardbench.benchmark.results import ResultFolderError, check_subject_means, read_per_subject_checked

    m, cls, grp = parse_metric(metric)
    group = group or grp
    info = lb.benchmark(bench)
    if m in CLINICAL_STATS or (cls or "") in CLINICAL_INDICES:
        raise RankingError(f"benchmark '{bench}': {metric} is a clinical agreement statistic without per-subject "
                           "values; rank uncertainty needs a segmentation metric, e.g. dice_lv or hd95_my")
    cls = cls or "LV"
    level = info.protocol.get("level", "image")
    vals, counts = {}, {}
    index = lb.index(bench)  # a corrupt entry is skipped (named by lb.problems()), as in the ranked table
    if not index:
        raise RankingError(str(lb._no_valid_entry(bench)))
    aggregation = info.protocol.get("aggregation")
    for name, rec in index.items():
        path = lb.root / bench / "entries" / name
        ps_file = path / "per_subject.csv"
        # the figures of the plain table (index record = the entry's summary.json, compared on every read)
        summary = {"results": rec.get("results") or [], "protocol": {"aggregation": aggregation}}
        if group == "all" and (ps_file.exists() or ps_file.is_symlink()):
            try:
                # a corrupt table, or one that disagrees with summary.json, is skipped and named, never ranked
                ps = read_per_subject_checked(path, summary=summary)
            except (ResultFolderError, OSError) as e:
                lb.skipped[str(path)] = str(e)
                continue
            sel = ps[(ps["class"] == cls) & (ps["metric"] == m)]
            mean = sel.set_index("subject")["mean"].astype(float)
            n = sel.set_index("subject")["n_values"].astype(float)
        else:
            try:
                pc = read_per_case(path)
            except FileNotFoundError:
                continue
            except (LeaderboardError, OSError) as e:
                lb.skipped[str(path)] = str(e)
                continue
            rows = pc[(pc["level"] == level) & (pc["class"] == cls)]
            if group != "all":
                rows = rows[rows["phase"] == group]
            if m not in rows.columns:
                continue
            g = rows.groupby("subject")[m]
            mean, n = g.mean().astype(float), g.count().astype(float)
            try:  # the per-case values must give the figures the plain table shows
                check_subject_means(mean, n, summary["results"], aggregation, cls=cls, metric=m, group=group,
                                    where=path / ("per_case.parquet" if (path / "per_case.parquet").exists()
                                                  else "per_case.csv"))
            except ResultFolderError as e:
                lb.skipped[str(path)] = str(e)
                continue
        if len(mean):
            vals[name], counts[name] = mean, n
    if not vals:
        raise RankingError(f"benchmark '{bench}': no per-subject values for {m} {cls} ({group}); check the metric "
                           f"(metrics: {', '.join(lb.metrics(bench))}) and class")
    values = pd.DataFrame(vals)
    values.index = values.index.astype(str)
    n_values = pd.DataFrame(counts).reindex_like(values)
    return values.sort_index(), n_values.sort_index(), {
        "metric": m, "class": cls, "group": group, "direction": metric_direction(m), "protocol": info.protocol}


def rank_uncertainty(lb, bench: str, metric: str = "dice_lv", *, group: str | None = None,
                     method: str = "aggregate-then-rank", n_boot: int | None = None, seed: int | None = None,
                     alpha: float = ALPHA) -> RankUncertainty:
    """Bootstrap the ranking of a benchmark's entries over subjects (see the module docstring).

    Args:
        lb: a :class:`cardbench.benchmark.leaderboard.Leaderboard`.
        bench: benchmark id.
        metric: ranking metric ``<metric>_<class>[_<phase>]``, e.g. ``dice_lv``, ``hd95_my_es``.
        group: ``all``/``ED``/``ES`` (overrides the phase in ``metric``).
        method: ``aggregate-then-rank`` (default, the leaderboard's order) or ``rank-then-aggregate``.
        n_boot, seed: resamples and seed (default: the protocol's bootstrap settings, else
            :data:`DEFAULT_RESAMPLES` and :data:`DEFAULT_SEED`).
        alpha: significance level of the Holm-corrected pairwise tests.

    Returns:
        :class:`RankUncertainty`.

    Raises:
        RankingError: unknown method, metric or class; fewer than 2 entries or 2 common subjects.
    """
    if method not in METHODS:
        raise RankingError(f"unknown ranking method {method!r}; use one of: {', '.join(METHODS)}")
    values, n_values, info = subject_values(lb, bench, metric, group)
    direction = info["direction"]
    has_any = values.notna().any(axis=0)
    unranked = [e for e in values.columns if not has_any[e]]
    values, n_values = values.loc[:, has_any], n_values.loc[:, has_any]
    complete = values.notna().all(axis=1)
    n_dropped = int((~complete).sum())
    values, n_values = values[complete], n_values[complete]
    spec = f"{info['metric']}_{info['class']}"
    if values.shape[1] < 2:
        raise RankingError(f"benchmark '{bench}': fewer than 2 entries with {spec} values; nothing to rank")
    if values.shape[0] < 2:
        raise RankingError(f"benchmark '{bench}': fewer than 2 subjects with {spec} values for every entry; "
                           "a subject bootstrap needs at least 2")
    pooled = info["protocol"].get("aggregation") == "pooled"
    v = values.to_numpy(np.float64)
    w = n_values.to_numpy(np.float64) if pooled else None
    full = rank_entries(v, direction, method, w)
    if method == "aggregate-then-rank":
        shown = (v * w).sum(0) / w.sum(0) if pooled else v.mean(0)
    else:
        shown = min_rank(_keys(v, direction)).mean(0)
    dn, ds = _protocol_bootstrap(info["protocol"])
    n_boot = dn if n_boot is None else int(n_boot)
    seed = ds if seed is None else int(seed)
    idx = bootstrap_indices(v.shape[0], n_boot, seed)               # (B, n) same for every entry
    boot = rank_entries(v[idx], direction, method, None if w is None else w[idx])  # (B, K)
    taus = kendall_tau_b(full, boot)  # NaN for a resample where every entry ties
    p = pairwise_wilcoxon(v, direction)
    ph = holm(p)
    entries = list(values.columns)
    order = sorted(range(len(entries)), key=lambda j: (full[j], entries[j]))
    sig = ph <= alpha
    rows = []
    for j in order:
        rows.append({"entry": entries[j], "rank": int(full[j]), "value": float(shown[j]),
                     "median_rank": float(np.median(boot[:, j])),
                     "rank_low": float(np.quantile(boot[:, j], 0.025)),
                     "rank_high": float(np.quantile(boot[:, j], 0.975)),
                     "n_better": int(np.nansum(sig[j, :])), "n_worse": int(np.nansum(sig[:, j]))})
    names = [entries[j] for j in order]

    def _mat(a):
        return pd.DataFrame(a[np.ix_(order, order)], index=names, columns=names)
    return RankUncertainty(
        benchmark=bench, metric=spec, group=info["group"], method=method, direction=direction,
        subjects=list(values.index), values=values[names], summary=pd.DataFrame(rows),
        boot_ranks=boot[:, order], kendall_tau=taus, pvalues=_mat(p), pvalues_holm=_mat(ph),
        significant=_mat(sig).astype(bool), n_boot=n_boot, seed=seed, alpha=alpha,
        n_dropped_subjects=n_dropped, unranked=unranked)


def display_ranks(ru: RankUncertainty, digits: int | None = None) -> pd.DataFrame:
    """Readable strings: rank, entry, value, median rank, ``[low, high]`` rank interval, significance."""
    d = digits if digits is not None else (3 if ru.metric.split("_")[0] in ("dice", "iou") else 2)
    s = ru.summary
    value_name = ru.metric if ru.method == "aggregate-then-rank" else "mean subject rank"

    def _r(x):
        return f"{x:g}"
    return pd.DataFrame({
        "rank": s["rank"].astype(str), "entry": s["entry"],
        value_name: s["value"].map(lambda x: f"{x:.{d}f}"),
        "median rank": s["median_rank"].map(_r),
        "95 % rank interval": [f"[{_r(a)}, {_r(b)}]" for a, b in zip(s["rank_low"], s["rank_high"])],
        "sig. better than": s["n_better"].astype(str),
    })
