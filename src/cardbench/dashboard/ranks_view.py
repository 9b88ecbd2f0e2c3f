"""The 'Ranking uncertainty' section of the Leaderboard page (blob plot, significance heatmap),
cached per benchmark state, metric, group and method."""

from __future__ import annotations

import streamlit as st

from cardbench.benchmark.leaderboard import Leaderboard
from cardbench.benchmark.ranking import METHODS, RankingError, display_ranks, rank_uncertainty
from cardbench.dashboard import data


@st.cache_data(show_spinner="Bootstrapping the ranking...", max_entries=64)
def _ranks(folder: str, bench: str, stamp: tuple, metric: str, group: str, method: str):
    return rank_uncertainty(Leaderboard(folder), bench, metric, group=group, method=method)


def section(bench: dict, metric: str, group: str) -> None:
    """Draw the section for ``metric`` (``<metric>_<class>``) and ``group`` of benchmark ``bench``."""
    from cardbench.dashboard import rank_charts

    st.subheader("Ranking uncertainty")
    method = st.radio("Ranking method", METHODS, horizontal=True, key="lb_rank_method",
                      help="aggregate-then-rank: rank the entries' aggregates (the table above); rank-then-aggregate: "
                           "rank the entries within each subject, then rank the mean of these ranks.")
    folder = data.root()
    try:
        ru = _ranks(folder, bench["id"], Leaderboard(folder).stamp(bench["id"]), metric, group, method)
    except RankingError as e:
        st.info(f"No ranking uncertainty: {e}")
        return
    st.caption(f"{ru.n_boot} bootstrap resamples of the {len(ru.subjects)} subjects (the same resamples for every "
               f"entry, seed {ru.seed}); median Kendall's tau between the full-data ranking and the resampled "
               f"rankings: **{ru.kendall_tau_median:.3f}**"
               + (f"; {ru.n_dropped_subjects} subjects without a value for every entry left out"
                  if ru.n_dropped_subjects else "") + ".")
    st.plotly_chart(rank_charts.blob_plot(ru), key="lb_blob")
    st.dataframe(display_ranks(ru), hide_index=True, key="lb_ranks_table")
    st.plotly_chart(rank_charts.significance_heatmap(ru), key="lb_sigmap")
    st.caption("Method: Wiesenfarth et al., Sci Rep 2021;11:2369 (challengeR). With few subjects no pair can reach "
               "significance: with 3 subjects the smallest one-sided exact Wilcoxon p-value is 1/8.")
