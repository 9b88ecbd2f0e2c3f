"""Submission page: one entry's figures, per-case distribution, worst cases first, per-subject and
per-phase breakdown, clinical indices (Bland-Altman, scatter) when the entry has them, provenance."""

import pandas as pd
import streamlit as st

from cardbench.benchmark.metric_registry import digits_of, direction_of
from cardbench.dashboard import analysis, charts, clinical_view, data
from cardbench.labelmaps import CLASSES

st.title("Submission")
bench, entries, agg = data.require_board()
labels = dict(zip(entries["entry"], entries["label"].fillna("")))
entry = data.select_persistent("Entry", entries["entry"].tolist(), "entry", query_param="entry",
                               format_func=lambda e: f"{e}  ({labels[e]})" if labels.get(e) else e)
proto = bench["protocol"]
level = proto.get("level", "volume")
summary, per_subject, extra, meta, pc = data.entry_or_stop(bench["id"], entry)  # a bad file: one st.error line

row = entries.set_index("entry").loc[entry]
bits = [f"**{entry}**"] + [f"{k}: {row[k]}" for k in ("label", "team", "method", "training_data") if
                           isinstance(row.get(k), str) and row.get(k)]
st.markdown(" | ".join(bits))
if isinstance(row.get("url"), str) and row.get("url"):
    st.caption(f"[{row['url']}]({row['url']})")
st.caption(data.protocol_caption(proto))

# ---- headline figures
ea = agg[(agg["entry"] == entry) & (agg["grouping"] == "all")]
metrics = [m for m in proto.get("metrics", []) if m in set(ea["metric"])] + \
    [m for m in dict.fromkeys(ea["metric"]) if m not in proto.get("metrics", [])]
metric = st.selectbox("Metric", metrics or ["dice"], key="sub_metric")
classes = [c for c in CLASSES if c in set(ea["class"])]
cols = st.columns(max(1, len(classes)))
for col, cls in zip(cols, classes):
    r = ea[(ea["class"] == cls) & (ea["metric"] == metric)]
    if r.empty:
        continue
    r = r.iloc[0]
    d = digits_of(metric)
    ci = "" if pd.isna(r["ci_low"]) else f"95 % CI [{r['ci_low']:.{d}f}, {r['ci_high']:.{d}f}]"
    col.metric(f"{metric} {cls}", "-" if pd.isna(r["mean"]) else f"{r['mean']:.{d}f}", help=ci or None)
    col.caption(f"{ci}{'; ' if ci else ''}{int(r['n_subjects'])} subjects, {int(r['n_values'])} values, "
                f"{int(r['n_excluded'])} excluded")

table_all = ea[ea["metric"] == metric][["class", "mean", "ci_low", "ci_high", "std", "median", "n_subjects",
                                        "n_values", "n_excluded"]]
data.show_intervals(table_all, hide_index=True, key="sub_headline")
data.download(table_all, f"{entry}__{metric}__summary.csv", key="dl_sub_headline")

# ---- distribution
st.subheader("Per-case distribution")
levels = [lv for lv in ("volume", "image") if lv in set(pc["level"])]
lvl = st.radio("Level", levels, index=levels.index(level) if level in levels else 0, horizontal=True, key="sub_level",
               help=f"The protocol scores at the {level} level; the other level is shown for insight.")
rows = analysis.level_rows(pc, lvl)
if metric in rows.columns:
    st.plotly_chart(charts.distribution(rows, metric, f"{metric} per {lvl} ({len(rows)} rows)"), key="sub_dist")
else:
    st.info(f"No per-case column '{metric}' in this entry.")

st.markdown("**Status counts** (ok: both present; both_empty, ref_empty, pred_empty, not_annotated, missing, failed)")
stt = analysis.status_table(pc, lvl)
st.dataframe(stt, key="sub_status")
data.download(stt.reset_index(), f"{entry}__status_{lvl}.csv", key="dl_sub_status")

# ---- worst cases
if metric in rows.columns:
    st.subheader("Worst cases first")
    worse = "lowest" if direction_of(metric) > 0 else "highest"
    wc = analysis.worst_cases(pc, metric, lvl, n=None)
    st.caption(f"{worse} {metric} first; values excluded by the policy (NaN) last. Open one in the Case drill-down page.")
    st.dataframe(wc.head(200), hide_index=True, key="sub_worst",
                 column_config={metric: st.column_config.NumberColumn(metric, format="%.4f")})
    data.download(wc, f"{entry}__worst_{lvl}.csv", key="dl_sub_worst")
    st.page_link("views/case.py", label="Case drill-down", icon=":material/image_search:",
                 query_params={"benchmark": bench["id"], "entry": entry})

# ---- per subject and per phase
if metric in rows.columns:
    st.subheader("Per subject and per phase")
    c1, c2 = st.columns(2)
    subj = analysis.subject_table(pc, metric, level)
    c1.plotly_chart(charts.subject_bars(subj, metric), key="sub_subject_chart")
    c1.dataframe(subj, key="sub_subject")
    with c1:
        data.download(subj.reset_index(), f"{entry}__per_subject_{metric}.csv", key="dl_sub_subject")
    ph = agg[(agg["entry"] == entry) & (agg["grouping"] == "phase") & (agg["metric"] == metric)]
    ph = ph[["group", "class", "mean", "ci_low", "ci_high", "n_subjects", "n_values", "n_excluded"]].rename(
        columns={"group": "phase"})
    c2.markdown("**Per phase** (`-`: frames that are neither ED nor ES)")
    data.show_intervals(ph, c2, hide_index=True, key="sub_phase")
    with c2:
        data.download(ph, f"{entry}__per_phase_{metric}.csv", key="dl_sub_phase")

# ---- clinical indices
st.subheader("Clinical indices (EDV, ESV, EF, LV mass)")
clinical_view.render(summary, extra, key="sub")

# ---- provenance
with st.expander("Provenance: protocol, versions, inputs, notes"):
    ins = summary.get("inputs") or {}
    n_files = {k: len(v) for k, v in ins.items() if isinstance(v, dict)}
    st.write({"cardbench_version": summary.get("cardbench_version"), "created": summary.get("created"),
              "dataset": {k: v for k, v in (summary.get("dataset") or {}).items() if k != "label_map"},
              "split": summary.get("split"), "inputs (files hashed)": n_files,
              "submission.yaml": meta})
    for n in summary.get("notes") or []:
        st.warning(n)
    small = {k: v for k, v in ins.items() if isinstance(v, dict) and len(v) <= 5}
    if small:
        st.write({"sha256": small})
