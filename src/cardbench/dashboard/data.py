"""Loading leaderboard data for the pages, with Streamlit caching, and small shared widgets.

Cost model (so hundreds of entries x thousands of cases stay fast): the Leaderboard page reads only
the benchmark's ``index.json`` (metadata and aggregated figures of every entry); a per-case table is
read only when a page needs that entry (Submission, Case, Compare, Dataset), and each read is cached
with :func:`st.cache_data` keyed by the folder, the names and a cheap fingerprint
(:meth:`Leaderboard.stamp`: one ``stat`` per entry), so a new or replaced entry shows after a reload
and nothing is read twice.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import streamlit as st

import cardbench.reproductions  # noqa: F401  (registers the published pre-fill sources)
from cardbench.benchmark.leaderboard import Leaderboard, default_root, open_leaderboard, read_entry, read_per_case


def root() -> str:
    """The leaderboard folder: ``$CARDBENCH_LEADERBOARD`` (set by ``cardbench dashboard``), else the default."""
    return str(default_root())


@st.cache_resource(show_spinner="Scoring the published entries (first use)...")
def _prefilled(folder: str) -> list[str]:
    lb = open_leaderboard(folder, prefill=True)
    return lb.problems()  # e.g. a corrupt pre-fill marker: named on every page


def leaderboard() -> Leaderboard:
    """The :class:`Leaderboard` of this session (pre-filled once per process and folder)."""
    folder = root()
    _prefilled(folder)
    return Leaderboard(folder)


@st.cache_data(show_spinner=False, max_entries=64)
def _benchmarks_full(folder: str, stamp: tuple) -> tuple[list[dict], list[str]]:
    from cardbench.benchmark.leaderboard import LeaderboardError

    lb = Leaderboard(folder)
    out = []
    for b in lb.benchmark_ids():
        try:
            info = lb.benchmark(b)
        except LeaderboardError:  # corrupt benchmark.json: skipped, named by problems()
            continue
        out.append({"id": b, "title": info.title, "dataset": info.dataset, "split": info.split,
                    "protocol": info.protocol, "n_entries": info.n_entries})
    return out, lb.problems()


def _benchmarks(folder: str, stamp: tuple) -> list[dict]:
    return _benchmarks_full(folder, stamp)[0]


def _root_stamp(folder: str) -> tuple:
    """Names and mtimes of the benchmark folders and their entries folders (cheap)."""
    out = []
    p = Path(folder)
    if not p.is_dir():
        return ()
    for d in os.scandir(p):
        if d.name.startswith(".") or not d.is_dir():
            continue
        try:
            e = os.stat(os.path.join(d.path, "entries"))
            out.append((d.name, e.st_mtime_ns))
        except OSError:
            out.append((d.name, 0))
    return tuple(sorted(out))


def benchmarks() -> list[dict]:
    """Every benchmark: id, title, dataset, split, protocol, n_entries."""
    folder = root()
    return _benchmarks(folder, _root_stamp(folder))


@st.cache_data(show_spinner=False, max_entries=64)
def _board_full(folder: str, bench: str, stamp: tuple) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    lb = Leaderboard(folder)
    entries, agg = lb.tables(bench)
    return entries, agg, lb.problems(bench)


def _board(folder: str, bench: str, stamp: tuple) -> tuple[pd.DataFrame, pd.DataFrame]:
    entries, agg, _ = _board_full(folder, bench, stamp)
    return entries, agg


def problems(bench: str | None = None) -> list[str]:
    """Corrupt files the leaderboard skipped: the pre-fill marker, benchmark.json files and (of ``bench``)
    entries, one line each ("skipped <path>: <why>")."""
    folder = root()
    out = list(_prefilled(folder)) + _benchmarks_full(folder, _root_stamp(folder))[1]
    if bench is not None:
        out += _board_full(folder, bench, Leaderboard(folder).stamp(bench))[2]
    return list(dict.fromkeys(out))


def show_problems(bench: str | None = None) -> None:
    """Name every skipped corrupt file on the page (one warning), so nothing is left out silently."""
    lines = problems(bench)
    if lines:
        st.warning("Some leaderboard files are corrupt and were left out:\n\n"
                   + "\n".join(f"- `{ln}`" for ln in lines))


def board(bench: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(entries table, long aggregates table) of a benchmark, cached until an entry changes."""
    folder = root()
    return _board(folder, bench, Leaderboard(folder).stamp(bench))


@st.cache_data(show_spinner=False, max_entries=256)
def _ranked(folder: str, bench: str, stamp: tuple, metric: str, group: str, protocol_json: str) -> pd.DataFrame:
    import json

    from cardbench.benchmark.leaderboard import rank_table

    entries, agg = _board(folder, bench, stamp)
    r = rank_table(agg, entries, metric, group=group, protocol=json.loads(protocol_json), bench=bench)
    return r


def ranked(bench: dict, metric: str, group: str) -> pd.DataFrame:
    """The ranked table (see :func:`cardbench.benchmark.leaderboard.rank_table`), cached per
    benchmark state, metric and group. Raises LeaderboardError like rank_table."""
    import json

    folder = root()
    r = _ranked(folder, bench["id"], Leaderboard(folder).stamp(bench["id"]), metric, group,
                json.dumps(bench["protocol"], sort_keys=True))
    out = r.copy()
    out.attrs = dict(r.attrs)
    from cardbench.dashboard.public import public_mode

    if public_mode():  # --public: no CI that would reveal a subject's value (cardbench.benchmark.private)
        from cardbench.benchmark.private import public_ranked

        out = public_ranked(out)
    return out


def _entry_stamp(folder: str, bench: str, entry: str) -> int:
    try:
        return os.stat(Path(folder) / bench / "entries" / entry / "summary.json").st_mtime_ns
    except OSError:
        return 0


@st.cache_data(show_spinner="Loading the per-case table...", max_entries=24)
def _per_case(folder: str, bench: str, entry: str, stamp: int) -> pd.DataFrame:
    return read_per_case(Path(folder) / bench / "entries" / entry)


def per_case(bench: str, entry: str) -> pd.DataFrame:
    """The per-case table of one entry (read once, cached)."""
    folder = root()
    return _per_case(folder, bench, entry, _entry_stamp(folder, bench, entry))


@st.cache_data(show_spinner=False, max_entries=24)
def _entry_extra(folder: str, bench: str, entry: str, stamp: int) -> tuple[dict, pd.DataFrame, dict, dict]:
    lb = Leaderboard(folder)
    e = lb.entry(bench, entry)
    res = read_entry(e.path)
    return res.summary, res.per_subject, res.extra_tables, e.meta


def entry_details(bench: str, entry: str) -> tuple[dict, pd.DataFrame, dict, dict]:
    """(summary, per-subject table, extra tables {name: DataFrame}, submission.yaml) of one entry, every
    file checked (:func:`cardbench.benchmark.leaderboard.read_entry`).

    Raises:
        LeaderboardError: a file of the entry is refused (one line naming it).
        FileNotFoundError: summary.json or the per-case table is missing.
    """
    folder = root()
    return _entry_extra(folder, bench, entry, _entry_stamp(folder, bench, entry))


#: what reading an entry's files may raise: each is one line naming the file, shown instead of a traceback.
ENTRY_ERRORS = (ValueError, FileNotFoundError, OSError)  # LeaderboardError and ResultFolderError are ValueErrors


def entry_or_stop(bench: str, entry: str, *, details: bool = True):
    """``(summary, per_subject, extra, meta, per_case)`` of one entry (``details`` False: the per-case
    table only), or, when a file of the entry is refused (a link, too large, cut mid-row, unreadable,
    an impossible value, per-subject values that do not give summary.json's figures), one
    ``st.error`` line naming the file and the page stops: never a traceback."""
    try:
        pc = per_case(bench, entry)
        if not details:
            return pc
        return (*entry_details(bench, entry), pc)
    except ENTRY_ERRORS as e:
        st.error(f"Entry {entry} cannot be shown: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
                 icon=":material/error:")
        st.stop()


# ------------------------------------------------------------------------------------------
# shared widgets


def select_persistent(label: str, options: list, key: str, *, container=None, format_func=str, help=None,
                      query_param: str | None = None):
    """A selectbox whose choice survives page switches (kept in ``st.session_state['_keep_<key>']``)
    and, with ``query_param``, is read from and written to the URL (shareable links)."""
    c = container or st
    keep = f"_keep_{key}"
    want = st.session_state.get(key, st.session_state.get(keep))
    if want is None and query_param and query_param in st.query_params:
        want = st.query_params[query_param]
    if query_param == "entry" and want is not None and want not in options:
        why = _skipped_entry(str(want))
        if why:  # a link to an entry that was left out as corrupt: say why, never show another entry instead
            st.error(f"Entry {want} cannot be shown: {why.splitlines()[0]}", icon=":material/error:")
            st.stop()
    index = options.index(want) if want in options else 0
    if key in st.session_state and st.session_state[key] not in options:
        del st.session_state[key]
    value = c.selectbox(label, options, index=index, key=key, format_func=format_func, help=help)
    st.session_state[keep] = value
    if query_param and value is not None and st.query_params.get(query_param) != str(value):
        st.query_params[query_param] = str(value)
    return value


def _skipped_entry(name: str) -> str | None:
    """Why the leaderboard left out entry ``name`` of the benchmark chosen in the sidebar (or named in the
    URL) as corrupt (:meth:`~cardbench.benchmark.leaderboard.Leaderboard.problems`), else None."""
    bench = st.session_state.get("benchmark", st.session_state.get("_keep_benchmark")) or \
        st.query_params.get("benchmark")
    if not bench:
        return None
    pre = f"skipped {Leaderboard(root()).root / str(bench) / 'entries' / name}: "
    return next((ln[len(pre):] for ln in problems(str(bench)) if ln.startswith(pre)), None)


def download(df: pd.DataFrame, file_name: str, label: str = "Download CSV", key: str | None = None) -> None:
    """A CSV download button for a table shown on the page."""
    st.download_button(label, df.to_csv(index=False, float_format="%.6g").encode("utf-8"), file_name=file_name,
                       mime="text/csv", key=key or f"dl_{file_name}")


def current_benchmark() -> dict | None:
    """The benchmark chosen in the sidebar (a dict from :func:`benchmarks`), or None when there is none."""
    bs = benchmarks()
    if not bs:
        show_problems()
        return None
    ids = [b["id"] for b in bs]
    by_id = {b["id"]: b for b in bs}
    chosen = select_persistent("Benchmark", ids, "benchmark", container=st.sidebar,
                               format_func=lambda i: by_id[i]["title"], query_param="benchmark",
                               help="A benchmark is a dataset, a split and a protocol: only entries scored the "
                                    "same way are ranked together.")
    show_problems(chosen)
    return by_id[chosen]


def require_board(min_entries: int = 1) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """(benchmark, entries, aggregates) of the benchmark chosen in the sidebar; stops the page with
    a message when there is no benchmark or fewer than ``min_entries`` entries."""
    bench = current_benchmark()
    if bench is None:
        no_benchmark_message()
        st.stop()
    entries, agg = board(bench["id"])
    if len(entries) < min_entries:
        if min_entries > 1:
            st.info("This benchmark has fewer than two entries: nothing to compare.")
        else:
            st.warning("This benchmark has no entries.")
        st.stop()
    return bench, entries, agg


def no_benchmark_message() -> None:
    st.warning(f"The leaderboard folder {root()} holds no benchmark yet. Add an entry with "
               f"`cardbench score PREDICTIONS --reference REF --leaderboard {root()} --name NAME`, or fill it with "
               f"the published entries: `cardbench leaderboard prefill -L {root()}`.")


def protocol_caption(protocol: dict) -> str:
    """One-line description of a protocol: name, version, level, aggregation, CI."""
    boot = protocol.get("bootstrap")
    ci = (f"95 % CI: percentile bootstrap over {boot.get('unit', 'subject')}s, {boot.get('resamples')} resamples"
          if boot else "no confidence interval under this protocol")
    return (f"**Protocol {protocol.get('name')} v{protocol.get('version')}**: {protocol.get('description', '')} "
            f"({ci}.)")


def policy_table(protocol: dict) -> pd.DataFrame:
    """Policy as a table: rows status, columns metric, cells the rule (value, nan, worst, a number)."""
    pol = protocol.get("policy") or {}
    return pd.DataFrame({m: {s: str(r) for s, r in rules.items()} for m, rules in pol.items()}).rename_axis("status")


def show_intervals(df: pd.DataFrame, container=None, *, key: str, n_col: str = "n_subjects",
                   ci_cols: tuple[str, str] = ("ci_low", "ci_high"), **kw) -> None:
    """``st.dataframe`` of a table with 95 % interval columns: an interval that does not exist (fewer
    than 2 subjects: a subject bootstrap needs at least 2) shows "–" instead of "None", with a caption
    saying why. The table's values are unchanged (a pandas Styler only changes how they are shown)."""
    c = container or st
    cols = [x for x in ci_cols if x in df.columns]
    c.dataframe(df.style.format(na_rep="–", subset=cols) if cols else df, key=key, **kw)
    if cols and n_col in df.columns and df[cols[0]].isna().any():
        few = df.loc[df[cols[0]].isna(), n_col]
        if (pd.to_numeric(few, errors="coerce") < 2).any():
            c.caption("–: no 95 % interval where fewer than 2 subjects are scored (the subject bootstrap needs at "
                      "least 2).")
