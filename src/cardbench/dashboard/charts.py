"""Plotly figures of the dashboard: one function per chart, a DataFrame in, a ``go.Figure`` out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from cardbench.benchmark.metric_registry import METRICS, unit_of
from cardbench.labelmaps import CLASSES

CLASS_COLORS = {"LV": "#d62728", "MY": "#2ca02c", "RV": "#1f77b4"}
_LAYOUT = dict(margin=dict(l=10, r=10, t=40, b=10), template="plotly_white")


def _axis_title(metric: str, cls: str | None = None) -> str:
    unit = unit_of(metric)
    name = METRICS[metric].label if metric in METRICS else metric
    return f"{name}{' ' + cls if cls else ''}{f' ({unit})' if unit else ''}"


def leaderboard_bar(ranked: pd.DataFrame, top: int = 30, published: dict | None = None) -> go.Figure:
    """Horizontal bars of the ranking metric, best on top, with 95 % CI error bars where present.

    Args:
        ranked: output of :func:`cardbench.benchmark.leaderboard.rank_table` (its ``attrs`` name
            the column).
        top: show the first ``top`` entries.
        published: entry -> published value, drawn as a diamond marker (the paper's number).
    """
    col = ranked.attrs["rank_column"]
    d = ranked.dropna(subset=[col]).head(top).iloc[::-1]
    lo, hi = d[col + "_ci_low"], d[col + "_ci_high"]
    has_ci = bool(lo.notna().any())
    label = d["entry"].astype(str)
    fig = go.Figure(go.Bar(
        x=d[col], y=label, orientation="h", name=col, marker_color=CLASS_COLORS.get(ranked.attrs.get("class"), "#555"),
        error_x=dict(type="data", symmetric=False, array=(hi - d[col]).fillna(0), arrayminus=(d[col] - lo).fillna(0),
                     visible=has_ci),
        hovertemplate="%{y}: %{x:.4f}<extra></extra>"))
    if published:
        pv = label.map(published)
        if pv.notna().any():
            fig.add_trace(go.Scatter(x=pv, y=label, mode="markers", name="published",
                                     marker=dict(symbol="diamond", size=10, color="black")))
    m = ranked.attrs["metric"]
    fig.update_layout(title=f"{_axis_title(m, ranked.attrs.get('class'))} ({ranked.attrs.get('group')})"
                      + (", 95 % CI" if has_ci else ""), height=max(220, 26 * len(d) + 110),
                      xaxis_title=_axis_title(m, ranked.attrs.get("class")), showlegend=bool(published), **_LAYOUT)
    if m in METRICS and METRICS[m].in_unit_interval:
        xmin = float(np.nanmin(np.r_[lo.dropna().to_numpy(), d[col].to_numpy()])) if len(d) else 0.0
        fig.update_xaxes(range=[max(0.0, xmin - 0.05), 1.0])
    return fig


def distribution(rows: pd.DataFrame, metric: str, title: str = "", max_points: int = 1000) -> go.Figure:
    """Box plot per class (NaN values left out), mean dashed; every case drawn as a point when a
    class has at most ``max_points`` values, else only the outliers (thousands of SVG points would
    slow the browser down)."""
    fig = go.Figure()
    for cls in [c for c in CLASSES if c in set(rows["class"])]:
        v = rows.loc[rows["class"] == cls, metric].dropna()
        fig.add_trace(go.Box(y=v, name=cls, boxpoints="all" if len(v) <= max_points else "outliers", jitter=0.4,
                             pointpos=0, marker=dict(size=4), marker_color=CLASS_COLORS.get(cls), boxmean=True))
    fig.update_layout(title=title, yaxis_title=_axis_title(metric), showlegend=False, height=380, **_LAYOUT)
    return fig


def subject_bars(subj: pd.DataFrame, metric: str) -> go.Figure:
    """Grouped bars: per-subject mean of ``metric`` (rows subjects, columns classes)."""
    fig = go.Figure()
    for cls in subj.columns:
        fig.add_trace(go.Bar(x=subj.index.astype(str), y=subj[cls], name=cls, marker_color=CLASS_COLORS.get(cls)))
    fig.update_layout(barmode="group", title="per subject", yaxis_title=_axis_title(metric), xaxis_title="subject",
                      height=340, **_LAYOUT)
    fig.update_xaxes(type="category")
    return fig


def paired_scatter(pairs: pd.DataFrame, name_a: str, name_b: str) -> go.Figure:
    """Per-case values of B against A, one colour per class, with the identity line."""
    fig = go.Figure()
    for cls in [c for c in CLASSES if c in set(pairs["class"])]:
        g = pairs[pairs["class"] == cls]
        text = g["subject"].astype(str) + " f" + g["frame"].astype(str) + " s" + g["slice"].astype(str)
        fig.add_trace(go.Scattergl(x=g["a"], y=g["b"], mode="markers", name=cls, text=text,
                                   marker=dict(size=5, color=CLASS_COLORS.get(cls), opacity=0.7)))
    if len(pairs):
        lo = float(min(pairs["a"].min(), pairs["b"].min()))
        hi = float(max(pairs["a"].max(), pairs["b"].max()))
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="equal",
                                 line=dict(color="grey", dash="dot")))
    m = pairs.attrs.get("metric", "")
    fig.update_layout(title="per case", xaxis_title=f"{name_a} (A): {_axis_title(m)}",
                      yaxis_title=f"{name_b} (B): {_axis_title(m)}", height=420, **_LAYOUT)
    return fig


def diff_histogram(pairs: pd.DataFrame) -> go.Figure:
    """Histogram of the paired differences A - B per class (as ``cardbench compare``)."""
    fig = go.Figure()
    for cls in [c for c in CLASSES if c in set(pairs["class"])]:
        fig.add_trace(go.Histogram(x=pairs.loc[pairs["class"] == cls, "diff"], name=cls, opacity=0.6,
                                   marker_color=CLASS_COLORS.get(cls)))
    fig.add_vline(x=0, line_color="grey", line_dash="dot")
    fig.update_layout(barmode="overlay", title="paired differences (A - B)",
                      xaxis_title=f"A - B: {_axis_title(pairs.attrs.get('metric', ''))}", yaxis_title="cases",
                      height=420, **_LAYOUT)
    return fig


def bland_altman(ref: np.ndarray, pred: np.ndarray, name: str, unit: str, labels=None) -> go.Figure:
    """Bland-Altman plot: difference (prediction - reference) against the mean of the two, with
    the bias and the 95 % limits of agreement (bias +/- 1.96 SD of the differences; Bland & Altman,
    Lancet 1986;1:307)."""
    ref = np.asarray(ref, float)
    pred = np.asarray(pred, float)
    ok = ~(np.isnan(ref) | np.isnan(pred))
    ref, pred = ref[ok], pred[ok]
    mean = (ref + pred) / 2
    diff = pred - ref
    fig = go.Figure(go.Scatter(x=mean, y=diff, mode="markers", name="subjects",
                               text=None if labels is None else np.asarray(labels)[ok],
                               marker=dict(size=7, color="#1f77b4")))
    if diff.size:
        bias = float(diff.mean())
        sd = float(diff.std(ddof=1)) if diff.size > 1 else 0.0
        for y, dash, txt in ((bias, "solid", f"bias {bias:.2f}"), (bias + 1.96 * sd, "dash", f"+1.96 SD {bias + 1.96 * sd:.2f}"),
                             (bias - 1.96 * sd, "dash", f"-1.96 SD {bias - 1.96 * sd:.2f}")):
            # labels inside the plot area (at its right edge, above the line): never cut by the figure edge
            fig.add_hline(y=y, line_dash=dash, line_color="grey", annotation_text=txt,
                          annotation_position="top right")
    u = f" ({unit})" if unit else ""
    fig.update_layout(title=f"Bland-Altman: {name}", xaxis_title=f"mean of reference and prediction{u}",
                      yaxis_title=f"prediction - reference{u}", height=380, showlegend=False, **_LAYOUT)
    return fig


def scatter_vs_reference(ref: np.ndarray, pred: np.ndarray, name: str, unit: str, labels=None) -> go.Figure:
    """Prediction against reference with the identity line."""
    ref = np.asarray(ref, float)
    pred = np.asarray(pred, float)
    fig = go.Figure(go.Scatter(x=ref, y=pred, mode="markers", text=labels, name="subjects",
                               marker=dict(size=7, color="#1f77b4")))
    ok = ~(np.isnan(ref) | np.isnan(pred))
    if ok.any():
        lo = float(min(ref[ok].min(), pred[ok].min()))
        hi = float(max(ref[ok].max(), pred[ok].max()))
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(color="grey", dash="dot"),
                                 name="identity"))
    u = f" ({unit})" if unit else ""
    fig.update_layout(title=f"{name}: prediction vs reference", xaxis_title=f"reference{u}",
                      yaxis_title=f"prediction{u}", height=380, showlegend=False, **_LAYOUT)
    return fig


def _contours(fig: go.Figure, labels: np.ndarray, dash: str, width: float, opacity: float, suffix: str) -> None:
    from skimage import measure

    # MY first, LV last: the LV contour coincides with MY's inner boundary and must stay visible on top
    for cls in sorted(CLASSES, key=lambda c: c == "LV"):
        mask = labels == CLASSES.index(cls) + 1
        if not mask.any():
            continue
        first = True
        for c in measure.find_contours(np.pad(mask, 1).astype(np.float32), 0.5):
            c = c - 1  # undo the padding
            fig.add_trace(go.Scatter(x=c[:, 0], y=c[:, 1], mode="lines", name=cls + suffix, legendgroup=cls + suffix,
                                     showlegend=first, opacity=opacity, hoverinfo="name",
                                     line=dict(color=CLASS_COLORS[cls], width=width, dash=dash)))
            first = False


def overlay(image: np.ndarray | None, labels: np.ndarray, title: str, spacing: tuple[float, float] = (1.0, 1.0),
            dash: str = "solid", also: np.ndarray | None = None, zoom: tuple[int, int, int, int] | None = None,
            errors_vs: np.ndarray | None = None) -> go.Figure:
    """One 2D slice with the contour of each class drawn on it.

    Args:
        image: 2D grey image ``(x, y)`` as stored in the NIfTI (None: draw on black).
        labels: 2D cardbench label map ``(x, y)`` of the same shape.
        spacing: (x, y) pixel spacing in mm, for the aspect ratio.
        dash: line style of ``labels``' contours.
        also: a second label map drawn thin and faint (e.g. the reference under a prediction).
        zoom: (x0, x1, y0, y1) pixel range to show (None: the whole slice).
        errors_vs: the reference label map: also mark the false-positive and false-negative pixels of
            ``labels`` against it in two colours (:func:`error_masks`), with their counts in the legend.

    The slice is shown with x horizontal and y vertical (``array.T``, row 0 at the top); contours
    are the 0.5 iso-lines of each class mask (:func:`skimage.measure.find_contours`).
    """
    lab = np.asarray(labels)
    img = np.zeros(lab.shape, np.float32) if image is None else np.asarray(image, np.float32)
    fig = go.Figure(go.Heatmap(z=img.T, colorscale="gray", showscale=False, hoverinfo="skip"))
    if errors_vs is not None:
        _error_traces(fig, np.asarray(errors_vs), lab)
    if also is not None:
        _contours(fig, np.asarray(also), "solid", 1.0, 0.6, " (reference)")
    _contours(fig, lab, dash, 2.0, 1.0, "")
    fig.update_yaxes(autorange="reversed" if zoom is None else None, scaleanchor="x",
                     scaleratio=spacing[1] / spacing[0], visible=False)
    fig.update_xaxes(visible=False)
    if zoom is not None:
        x0, x1, y0, y1 = zoom
        fig.update_xaxes(range=[x0 - 0.5, x1 + 0.5])
        fig.update_yaxes(range=[y1 + 0.5, y0 - 0.5])
    fig.update_layout(title=title, height=460, margin=dict(l=0, r=0, t=40, b=0),
                      legend=dict(orientation="h", y=-0.02), template="plotly_white")
    return fig


ERROR_COLORS = {"false positive": "#ff00ff", "false negative": "#00e5ff"}


def error_masks(ref: np.ndarray, pred: np.ndarray, classes: tuple[str, ...] = ("LV", "MY", "RV")
                ) -> tuple[np.ndarray, np.ndarray]:
    """(false positive, false negative) pixel masks of a 2D prediction against its reference.

    False positive: the prediction gives one of ``classes`` where the reference gives another value;
    false negative: the reference gives one of ``classes`` where the prediction gives another value. A
    pixel with reference LV and prediction MY is both (FN of LV, FP of MY). Arrays ``(x, y)``, cardbench
    label values."""
    ref = np.asarray(ref)
    pred = np.asarray(pred)
    vals = [CLASSES.index(c) + 1 for c in classes if c in CLASSES]
    wrong = pred != ref
    return np.isin(pred, vals) & wrong, np.isin(ref, vals) & wrong


def _error_traces(fig: go.Figure, ref: np.ndarray, pred: np.ndarray) -> None:
    fp, fn = error_masks(ref, pred)
    for name, mask in (("false negative", fn), ("false positive", fp)):
        xs, ys = np.nonzero(mask)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name=f"{name} ({int(mask.sum())} px)",
                                 legendgroup=name, hoverinfo="name",
                                 marker=dict(symbol="square", size=5, color=ERROR_COLORS[name], opacity=0.75)))


def label_box(*labels: np.ndarray, margin: int = 12) -> tuple[int, int, int, int] | None:
    """(x0, x1, y0, y1) around every labelled pixel of the 2D maps, with ``margin`` pixels; None
    when all are empty."""
    masks = [np.asarray(lab) > 0 for lab in labels if lab is not None]
    if not masks or not any(m.any() for m in masks):
        return None
    m = np.logical_or.reduce(masks)
    xs, ys = np.nonzero(m)
    return (max(0, int(xs.min()) - margin), min(m.shape[0] - 1, int(xs.max()) + margin),
            max(0, int(ys.min()) - margin), min(m.shape[1] - 1, int(ys.max()) + margin))
