"""Private benchmarks and aggregate-only publication.

A benchmark whose test images may not be shared (the seed's 7T data, data protection) is run by the
data holder (``cardbench evaluate-model``). Publishing its per-case test scores would let
submitters tune to individual test cases (kits19's public per-case leaderboard), so a benchmark can
be marked private: ``"per_case": "private"`` in its ``benchmark.json``
(:func:`set_private`; ``cardbench evaluate-model ... --private``, ``cardbench leaderboard private``).
The entries keep their per-case tables on the data holder's disk (rank uncertainty needs them); what
leaves it is :func:`export_public`'s folder, and the dashboard in ``--public`` mode.

:func:`export_public` writes, per benchmark: ``<benchmark>/benchmark.json`` (dataset, split, protocol),
``ranked.csv``/``.md``/``.json`` (the leaderboard table), ``aggregates.csv`` (every entry's aggregated
figures), ``submissions.yaml`` (submission metadata, no local paths), ``ranks.json`` (median rank,
rank interval, Kendall's tau, significance: ranks only). Nothing per case or per subject.
Aggregates that would reveal a single subject's value are left out (:func:`public_aggregates`):
the median over subjects (with an odd number of subjects it is one subject's value); the standard
deviation (with the mean it gives both values of 2 subjects); the percentile bootstrap interval with
3 subjects or fewer (a resample drawing one subject n times has probability ``n^-n``, at least 2.5 %
for n <= 3, so the interval's ends are then the lowest and highest subject values); and the mean of
a group with a single subject.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import yaml

from cardbench._util import atomic_write_text
from cardbench.benchmark.results import to_json

PRIVATE = "private"
#: fewest subjects for which a bootstrap interval is published (see the module docstring).
MIN_SUBJECTS_FOR_CI = 4
_LOCAL_KEYS = ("reference_path", "predictions_path")


def is_private(lb, bench: str) -> bool:
    """True when ``benchmark.json`` of ``bench`` says ``"per_case": "private"``."""
    f = Path(lb.root) / bench / "benchmark.json"
    try:
        return json.loads(f.read_text(encoding="utf-8")).get("per_case") == PRIVATE
    except (OSError, ValueError):
        return False


def set_private(root, bench: str, private: bool = True) -> None:
    """Mark a benchmark private (``"per_case": "private"``) or public again, atomically under its lock.

    Raises:
        LeaderboardError: no such benchmark.
    """
    from cardbench.benchmark.leaderboard import Leaderboard, _locked

    lb = Leaderboard(root)
    lb.benchmark(bench)
    f = lb.root / bench / "benchmark.json"
    with _locked(lb.root / bench):
        d = json.loads(f.read_text(encoding="utf-8"))
        if private:
            d["per_case"] = PRIVATE
        else:
            d.pop("per_case", None)
        atomic_write_text(f, to_json(d) + "\n")


def public_aggregates(agg: pd.DataFrame) -> pd.DataFrame:
    """The aggregates table without what reveals one subject (see the module docstring): no
    median, no std, no CI under :data:`MIN_SUBJECTS_FOR_CI` subjects, no mean of one subject."""
    a = agg.drop(columns=[c for c in ("median", "std") if c in agg.columns]).copy()
    if "n_subjects" in a.columns:
        n = pd.to_numeric(a["n_subjects"], errors="coerce").fillna(0)
        for c in ("ci_low", "ci_high"):
            if c in a.columns:
                a.loc[n < MIN_SUBJECTS_FOR_CI, c] = float("nan")
        if "mean" in a.columns:
            a.loc[n < 2, "mean"] = float("nan")
    return a


def public_ranked(ranked: pd.DataFrame) -> pd.DataFrame:
    """A ranked table (:func:`rank_table`) with the CI columns blanked where fewer than
    :data:`MIN_SUBJECTS_FOR_CI` subjects stand behind the ranking metric."""
    r = ranked.copy()
    r.attrs = dict(ranked.attrs)
    if "n_subjects" in r.columns:
        few = pd.to_numeric(r["n_subjects"], errors="coerce").fillna(0) < MIN_SUBJECTS_FOR_CI
        for c in [c for c in r.columns if c.endswith(("_ci_low", "_ci_high"))]:
            r.loc[few, c] = float("nan")
        one = pd.to_numeric(r["n_subjects"], errors="coerce").fillna(0) < 2
        for c in r.attrs.get("classes", []):
            key = f"{r.attrs.get('metric')}_{c}"
            if key in r.columns:
                r.loc[one, key] = float("nan")
        r.attrs["has_ci"] = bool(r[[c for c in r.columns if c.endswith("_ci_low")]].notna().any().any())
    return r


def _meta(m: dict) -> dict:
    return {k: v for k, v in m.items() if k not in _LOCAL_KEYS}


def export_public(lb, out: str | os.PathLike, bench: str | None = None, metric: str = "dice_lv") -> list[Path]:
    """Write the aggregate-only public export (see the module docstring) into ``out/<benchmark>/``.

    Every benchmark is exported this way (private or not); an ``out/<benchmark>`` folder is replaced
    only when an earlier export (cardbench) wrote it, atomically. Returns the written files.

    Raises:
        LeaderboardError: ``out`` is, is inside or holds the leaderboard folder.
        FileExistsError: ``out/<benchmark>`` exists and cardbench did not write it.
    """
    from cardbench._util import atomic_dir
    from cardbench.benchmark.leaderboard import LeaderboardError, render
    from cardbench.benchmark.leaderboard.rendering import check_export_target
    from cardbench.benchmark.ranking import RankingError, rank_uncertainty

    out = check_export_target(lb.root, out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for b in [bench] if bench else lb.benchmark_ids():
        info = lb.benchmark(b)
        dst = out / b
        entries, agg = lb.tables(b)
        try:
            ranked = lb.ranked(b, metric, entries=entries, aggregates=agg)
        except LeaderboardError:
            ms = lb.metrics(b)
            ranked = lb.ranked(b, ms[0] if ms else "dice", entries=entries, aggregates=agg)
        ranked = public_ranked(ranked)
        bj = json.loads((lb.root / b / "benchmark.json").read_text(encoding="utf-8"))
        files = {"benchmark.json": to_json(bj) + "\n",
                 "ranked.csv": render(ranked, "csv"), "ranked.md": render(ranked, "markdown", info.title),
                 "ranked.json": render(ranked, "json", info.title),
                 "aggregates.csv": public_aggregates(agg).to_csv(index=False, float_format="%.10g"),
                 "submissions.yaml": yaml.safe_dump(
                     {n: _meta(lb.entry(b, n).meta) for n in entries["entry"]}, sort_keys=False, allow_unicode=True)}
        try:
            ru = rank_uncertainty(lb, b, ranked.attrs.get("metric", "dice") + "_" + ranked.attrs.get("class", "LV"))
            d = ru.to_dict()
            for e in d["entries"]:
                e.pop("value", None)  # the aggregate is in ranked.csv (with the public rules)
            files["ranks.json"] = json.dumps(d, indent=1, default=float) + "\n"
        except (RankingError, LeaderboardError):
            pass
        with atomic_dir(dst, overwrite=True) as tmp:  # a user's folder of that name is never replaced
            for fname, text in files.items():
                (tmp / fname).write_text(text, encoding="utf-8")
        written += [dst / fname for fname in files]
    return written


def create_benchmark(root, reference, split: str | None = "test", protocol: str = "cardbench-v1",
                     private: bool = False) -> str:
    """Create an empty benchmark (``benchmark.json``) for a reference folder, split and protocol, so it
    can be marked private before its first entry. Returns the benchmark id.

    The dataset name and version come from the reference (its card.yaml), as :func:`score` records
    them, so later entries scored against it join this benchmark.

    Raises:
        ReferenceError: unusable reference folder. ValueError: unknown protocol.
        LeaderboardError: the benchmark exists with another protocol version or dataset version.
    """
    from cardbench.benchmark.leaderboard import Leaderboard, _locked, benchmark_id
    from cardbench.benchmark.protocols import get_protocol
    from cardbench.datasets.reference import load_reference

    ref = load_reference(reference)
    summary = {"dataset": {"name": ref.name, "version": ref.version}, "protocol": get_protocol(protocol).to_dict(),
               "split": split}
    bench = benchmark_id(summary)
    lb = Leaderboard(root)
    with _locked(lb.root / bench):
        lb._ensure_benchmark(bench, summary)
    if private:
        set_private(lb.root, bench, True)
    return bench
