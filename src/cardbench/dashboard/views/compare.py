"""Compare page: two entries of one benchmark on the same cases: paired per-case differences,
win/tie/loss counts, the subject-level paired difference with its 95 % CI, and the cases that flip."""

import pandas as pd
import streamlit as st

from cardbench.benchmark.metric_registry import direction_of
from cardbench.benchmark.stats import paired_wilcoxon
from cardbench.dashboard import analysis, charts, data

st.title("Compare two submissions")
bench, entries, agg = data.require_board(min_entries=2)
names = entries["entry"].tolist()
proto = bench["protocol"]
level = proto.get("level", "volume")
c1, c2 = st.columns(2)
a_name = data.select_persistent("A", names, "cmp_a", container=c1, query_param="a")
b_default = [n for n in names if n != a_name]
b_name = data.select_persistent("B", b_default, "cmp_b", container=c2, query_param="b")

metrics = [m for m in proto.get("metrics", []) if m in set(agg["metric"])] or ["dice"]
c3, c4, c5 = st.columns(3)
metric = c3.selectbox("Metric", metrics, key="cmp_metric")
levels = ["volume", "image"]
lvl = c4.radio("Level", levels, index=levels.index(level) if level in levels else 0, horizontal=True,
               key="cmp_level", help=f"The protocol scores at the {level} level.")
tol = c5.number_input("Tie tolerance", min_value=0.0, value=0.0, step=0.001, format="%.4f", key="cmp_tol",
                      help="|A - B| at most this much counts as a tie.")

pa = data.entry_or_stop(bench["id"], a_name, details=False)
pb = data.entry_or_stop(bench["id"], b_name, details=False)
if metric not in pa.columns or metric not in pb.columns:
    st.warning(f"'{metric}' is not in both per-case tables.")
    st.stop()
pairs = analysis.paired(pa, pb, metric, lvl, tol=tol)
better = "higher" if direction_of(metric) > 0 else "lower"
st.caption(f"{len(pairs)} paired ({lvl}, class) values; {better} {metric} is better. "
           f"Only in A: {pairs.attrs['only_a']}, only in B: {pairs.attrs['only_b']}, "
           f"excluded (NaN on a side): {pairs.attrs['nan']}.")

st.subheader("Win / tie / loss")
wtl = analysis.win_tie_loss(pairs)
st.dataframe(wtl, hide_index=True, key="cmp_wtl",
             column_config={c: st.column_config.NumberColumn(c, format="%.4f")
                            for c in ("mean A", "mean B", "mean diff (A - B)")})
data.download(wtl, f"{a_name}_vs_{b_name}__win_tie_loss.csv", key="dl_cmp_wtl")

boot = (proto.get("bootstrap") or {})
sd = analysis.subject_differences(pairs, n_boot=int(boot.get("resamples", 2000) or 2000),
                                  seed=int(boot.get("seed", 20210421) or 20210421))
st.markdown("**Paired difference at subject level** (mean over subjects of each subject's mean A - B; 95 % CI: "
            "percentile bootstrap over subjects)")
data.show_intervals(sd, hide_index=True, key="cmp_subject", n_col="subjects")
data.download(sd, f"{a_name}_vs_{b_name}__subject_difference.csv", key="dl_cmp_subject")

# subject-level test (cardbench.benchmark.stats): per-subject means of A and B, Wilcoxon signed-rank

recs = []
for cls, g in pairs.groupby("class", sort=False):
    sa = g.groupby("subject")["a"].mean()
    sb = g.groupby("subject")["b"].mean()
    pw = paired_wilcoxon(sa, sb, higher_is_better=direction_of(metric) > 0)
    recs.append({"class": cls, "subjects": pw.n_subjects, "A better": pw.wins_a, "tie": pw.ties,
                 "B better": pw.wins_b, "median diff (A - B)": pw.median_diff, "Wilcoxon statistic": pw.statistic,
                 "p-value": pw.pvalue})
wt = pd.DataFrame(recs)
st.markdown("**Subject level: Wilcoxon signed-rank test** on the per-subject means (two-sided, scipy.stats."
            "wilcoxon; with few subjects the smallest attainable p-value is large, e.g. 0.25 for 3 subjects)")
st.dataframe(wt, hide_index=True, key="cmp_wilcoxon")
data.download(wt, f"{a_name}_vs_{b_name}__wilcoxon.csv", key="dl_cmp_wilcoxon")

c6, c7 = st.columns(2)
c6.plotly_chart(charts.paired_scatter(pairs, a_name, b_name), key="cmp_scatter")
c7.plotly_chart(charts.diff_histogram(pairs), key="cmp_hist")

st.subheader("Cases that flip")
fl = analysis.flips(pairs)
st.caption("Cases where the per-case winner is the other submission than the overall (mean) winner of that class, "
           "largest difference first.")
st.dataframe(fl.head(500), hide_index=True, key="cmp_flips")
data.download(fl, f"{a_name}_vs_{b_name}__flips.csv", key="dl_cmp_flips")

st.subheader("All paired cases")
st.dataframe(pairs.head(2000), hide_index=True, key="cmp_pairs")
data.download(pairs, f"{a_name}_vs_{b_name}__paired.csv", key="dl_cmp_pairs")
