"""Leaderboard page: ranked table per class and phase, bar chart with 95 % CIs, protocol and policy."""

import streamlit as st

from cardbench.benchmark.leaderboard import CLINICAL_INDICES, LeaderboardError, direction_text
from cardbench.benchmark.metric_registry import digits_of
from cardbench.dashboard import charts, data
from cardbench.labelmaps import CLASSES

st.title("Leaderboard")
bench, entries, agg = data.require_board(min_entries=0)
proto = bench["protocol"]
ds = bench["dataset"]
version = f" (version {ds.get('version')})" if ds.get("version") else ""
st.caption(f"Dataset **{ds.get('name')}**{version}, split **{bench['split']}**, {len(entries)} "
           f"entr{'y' if len(entries) == 1 else 'ies'}.")
st.info(data.protocol_caption(proto), icon=":material/rule:")
with st.expander("Policy: what each status counts as"):
    pol = data.policy_table(proto)
    st.dataframe(pol, width="content")
    data.download(pol.reset_index(), f"policy_{proto.get('name')}_v{proto.get('version')}.csv", key="dl_policy")
    st.caption("value: the computed value; nan: excluded (and counted); worst: the metric's worst value (Dice 0; "
               "the field-of-view diagonal for distances); a number: that value. "
               + (f"Citation: {proto.get('citation')}" if proto.get("citation") else ""))

if agg.empty:
    st.warning("No aggregated figures in this benchmark's entries.")
    st.stop()

metrics = [m for m in proto.get("metrics", []) if m in set(agg["metric"])] + \
    [m for m in dict.fromkeys(agg["metric"]) if m not in proto.get("metrics", [])]
groups = ["all"] + sorted(set(agg.loc[agg["grouping"] == "phase", "group"]) - {"-"}) + \
    sorted(set(agg.loc[agg["grouping"] == "split", "group"]) - {"-", bench["split"]}) + \
    [p for p in ("base", "mid", "apex") if p in set(agg.loc[agg["grouping"] == "position", "group"])]

c1, c2, c3, c4 = st.columns([1, 1, 1, 2])
metric = c1.selectbox("Metric", metrics, key="lb_metric",
                      help="Segmentation metrics (Dice, IoU, HD95, ASSD...) per class; clinical agreement (mae, bias, "
                           "sd_diff, pearson_r) per index (LVEDV, LVESV, LVEF, LVM...) where entries have volumes.")
present = set(agg.loc[agg["metric"] == metric, "class"])
classes = [c for c in (*CLASSES, *CLINICAL_INDICES) if c in present] + sorted(
    c for c in present if c not in CLASSES and c not in CLINICAL_INDICES)
cls = c2.selectbox("Rank by class / index", classes, key="lb_class")
group = c3.selectbox("Phase / group", groups, key="lb_group",
                     help="all: every case of the split; ED / ES: only end-diastolic / end-systolic frames; "
                          "base / mid / apex: the images of that third of the LV slices (per-image values).")
query = c4.text_input("Filter entries", key="lb_filter", placeholder="name, label or team contains...")

try:
    ranked = data.ranked(bench, f"{metric}_{cls}", group)
except LeaderboardError as e:
    st.warning(str(e))
    st.stop()

view = ranked
if query:
    q = query.lower()
    hay = (view["entry"].astype(str) + " " + view["label"].fillna("").astype(str) + " "
           + view["team"].fillna("").astype(str)).str.lower()
    view = view[hay.str.contains(q, regex=False)]
    if view.empty:
        st.info(f"No entry matches '{query}'.")
        st.stop()

a = ranked.attrs
unit = f" ({a['unit']})" if a.get("unit") else ""
st.subheader(f"Ranked by {metric} {cls}{unit} ({group}), {direction_text(a['direction'])}")

cols = ["rank", "entry", "label", "team"]
colcfg = {"rank": st.column_config.NumberColumn("rank", width="small"),
          "entry": st.column_config.TextColumn("entry"), "label": st.column_config.TextColumn("label", width="medium")}
fmt = "%.4f" if digits_of(metric, 3 if metric == "pearson_r" else 2) >= 3 else "%.2f"
for c in a["classes"]:
    key = f"{metric}_{c}"
    cols.append(key)
    colcfg[key] = st.column_config.NumberColumn(f"{metric} {c}", format=fmt)
    if a["has_ci"]:
        cols += [key + "_ci_low", key + "_ci_high"]
        colcfg[key + "_ci_low"] = st.column_config.NumberColumn(f"{c} CI low", format=fmt)
        colcfg[key + "_ci_high"] = st.column_config.NumberColumn(f"{c} CI high", format=fmt)
if "paper_" + a["rank_column"] in view:
    cols.append("paper_" + a["rank_column"])
    colcfg["paper_" + a["rank_column"]] = st.column_config.NumberColumn(
        f"published {metric} {cls}", format="%.3f", help="The value the paper published for this comparison "
        "(from submission.yaml), next to cardbench's recomputation.")
cols += ["n_subjects", "n_values", "n_excluded", "published", "added"]
colcfg.update({"n_subjects": st.column_config.NumberColumn("subjects"),
               "n_values": st.column_config.NumberColumn("values"),
               "n_excluded": st.column_config.NumberColumn("excluded"),
               "published": st.column_config.CheckboxColumn("published"),
               "added": st.column_config.TextColumn("added")})
table = view[[c for c in cols if c in view.columns]].copy()
for c in ("label", "team"):
    if c in table:
        table[c] = table[c].fillna("")
st.dataframe(table, hide_index=True, column_config=colcfg, key="lb_table", width="stretch")
st.caption(f"Click a column header to sort. Values are means over {'subjects' if proto.get('aggregation') == 'subject' else 'all cases'}"
           f" of the split ({proto.get('level')} level); 'values' counts the cases used and 'excluded' those the "
           "policy set aside (NaN).")
data.download(table, f"{bench['id']}__{metric}_{cls}_{group}.csv", key="dl_leaderboard")

paper_col = "paper_" + a["rank_column"]
pub = dict(zip(view["entry"], view[paper_col])) if paper_col in view else {}
top = st.slider("Entries in the chart", 1, max(1, len(view)), min(30, max(1, len(view))), key="lb_top") \
    if len(view) > 1 else 1
chart_df = view.reset_index(drop=True)
chart_df.attrs = dict(ranked.attrs)
st.plotly_chart(charts.leaderboard_bar(chart_df, top=top, published=pub or None), key="lb_chart")
if pub:
    st.caption("Black diamonds: the value published in the paper for that comparison.")

st.page_link("views/submission.py", label="Open an entry: Submission page", icon=":material/description:")

if metric not in ("mae", "bias", "sd_diff", "pearson_r"):
    from cardbench.dashboard import ranks_view

    ranks_view.section(bench, f"{metric}_{cls}", group)
