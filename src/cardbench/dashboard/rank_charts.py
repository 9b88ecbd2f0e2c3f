"""Plotly figures of the ranking's uncertainty (:mod:`cardbench.benchmark.ranking`): the blob plot
and the significance heatmap, as challengeR draws them (Wiesenfarth et al., Sci Rep 2021;11:2369)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

_LAYOUT = dict(margin=dict(l=10, r=10, t=70, b=10), template="plotly_white")


def blob_plot(ru) -> go.Figure:
    """Blob plot: x = entries in full-data rank order, y = rank; a blob's area is the share of
    bootstrap resamples giving the entry that rank; black cross = median rank, black bar = 95 %
    rank interval; the red ring marks the full-data rank.

    Args:
        ru: a :class:`cardbench.benchmark.ranking.RankUncertainty`.
    """
    freq = ru.rank_frequencies()
    s = ru.summary
    K = len(s)
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=freq["entry"], y=freq["rank"], mode="markers", name="bootstrap rank frequency",
        marker=dict(size=np.sqrt(freq["frequency"].to_numpy()) * 40, sizemode="diameter", color="#4c78a8",
                    opacity=0.6, line=dict(width=0)),
        customdata=freq["frequency"], hovertemplate="%{x}: rank %{y} in %{customdata:.1%} of resamples<extra></extra>"))
    fig.add_trace(go.Scatter(
        x=s["entry"], y=s["median_rank"], mode="markers", name="median rank, 95 % interval",
        marker=dict(symbol="x", size=9, color="black"),
        error_y=dict(type="data", symmetric=False, array=s["rank_high"] - s["median_rank"],
                     arrayminus=s["median_rank"] - s["rank_low"], color="black", thickness=1.5, width=6),
        hovertemplate="%{x}: median rank %{y}<extra></extra>"))
    fig.add_trace(go.Scatter(x=s["entry"], y=s["rank"], mode="markers", name="full-data rank",
                             marker=dict(symbol="circle-open", size=14, color="#d62728", line=dict(width=2)),
                             hovertemplate="%{x}: rank %{y} on all subjects<extra></extra>"))
    fig.update_layout(
        title=f"Ranking of {ru.metric} ({ru.group}, {ru.method})<br><sup>{ru.n_boot} subject bootstrap resamples, "
              f"median Kendall's tau {ru.kendall_tau_median:.2f}</sup>",
        height=max(320, 40 * K + 140), xaxis_title="entry (full-data rank order)", yaxis_title="rank",
        legend=dict(orientation="h", y=-0.25), **_LAYOUT)
    fig.update_yaxes(autorange="reversed", dtick=1, range=[K + 0.5, 0.5])
    fig.update_xaxes(categoryorder="array", categoryarray=list(s["entry"]))
    return fig


def significance_heatmap(ru) -> go.Figure:
    """Pairwise significance map: cell (row A, column B) is filled when A is significantly better
    than B (one-sided Wilcoxon signed-rank, Holm-corrected over all ordered pairs, at ``ru.alpha``);
    hover shows the adjusted p-value. Entries in full-data rank order."""
    names = list(ru.summary["entry"])
    sig = ru.significant.loc[names, names].to_numpy(dtype=float)
    ph = ru.pvalues_holm.loc[names, names].to_numpy(dtype=float)
    z = np.where(np.isnan(ph), np.nan, sig)
    text = [[("" if np.isnan(p) else f"{p:.3g}") for p in row] for row in ph]
    fig = go.Figure(go.Heatmap(
        z=z, x=names, y=names, zmin=0, zmax=1, colorscale=[[0, "#e4e4e4"], [1, "#e6550d"]], showscale=False,
        text=text, texttemplate="%{text}", xgap=2, ygap=2,
        hovertemplate="%{y} better than %{x}: Holm-adjusted p = %{text}<extra></extra>"))
    fig.update_layout(title=f"Row significantly better than column (orange)<br><sup>one-sided Wilcoxon signed-rank, "
                            f"Holm-adjusted p in the cells, alpha {ru.alpha}; {len(ru.subjects)} subjects</sup>",
                      height=max(320, 40 * len(names) + 160), xaxis_title="compared with", yaxis_title="entry",
                      **_LAYOUT)
    fig.update_yaxes(autorange="reversed")
    return fig
