"""The clinical-indices block of the Submission page (EDV, ESV, SV, EF, LV mass).

Reads what :mod:`cardbench.benchmark.clinical` writes: the ``clinical`` block of summary.json
(``available``, ``reason``, ``agreement`` records: index, unit, grouping, group, n_subjects, bias,
sd_diff, loa_low, loa_high, mae, pearson_r, with ``_ci_low``/``_ci_high``) and the per-subject
``clinical.csv`` table (subject, index, unit, ref, pred, diff, status). An entry without them
(scored from a confusion table without voxel sizes, or by an older cardbench) gets a message.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from cardbench.dashboard import charts, data

AGREEMENT_SHOWN = ["index", "unit", "n_subjects", "ref_mean", "pred_mean", "bias", "bias_ci_low", "bias_ci_high",
                   "sd_diff", "loa_low", "loa_high", "mae", "mae_ci_low", "mae_ci_high", "pearson_r"]


def agreement_frame(summary: dict) -> pd.DataFrame:
    """The agreement records of the ``clinical`` block (grouping ``all``), or an empty frame."""
    block = summary.get("clinical") or {}
    recs = block.get("agreement") or []
    df = pd.DataFrame.from_records(recs)
    if df.empty:
        return df
    if "grouping" in df:
        df = df[df["grouping"] == "all"]
    return df[[c for c in AGREEMENT_SHOWN if c in df.columns]].reset_index(drop=True)


def render(summary: dict, extra: dict, key: str = "clin") -> None:
    """Draw the block: agreement table, index selector, Bland-Altman plot and scatter."""
    block = summary.get("clinical")
    table = extra.get("clinical")
    if not block and table is None:
        st.info("No clinical indices in this entry: it was scored from counts without voxel sizes (e.g. the "
                "published confusion tables) or by a cardbench without clinical metrics. Volumes need masks "
                "with spacing (NIfTI, or PNG with the reference's spacing).", icon=":material/info:")
        return
    if block and not block.get("available", True):
        st.info(f"Clinical indices not available for this entry: {block.get('reason', 'no reason given')}.",
                icon=":material/info:")
        return
    agree = agreement_frame(summary)
    if not agree.empty:
        st.markdown("**Agreement with the reference** (difference = prediction - reference; 95 % limits of "
                    "agreement = bias +/- 1.96 SD; CIs: subject bootstrap)")
        st.dataframe(agree, hide_index=True, key=f"{key}_agreement")
        data.download(agree, "clinical_agreement.csv", key=f"dl_{key}_agreement")
    if table is None or table.empty:
        st.caption("No per-subject clinical table (clinical.csv) in this entry.")
        return
    indices = list(dict.fromkeys(table["index"].astype(str)))
    ix = st.selectbox("Index", indices, key=f"{key}_index")
    t = table[table["index"].astype(str) == ix]
    ok = t[t["status"].isin(["ok", "missing"])] if "status" in t else t
    unit = str(t["unit"].iloc[0]) if "unit" in t and len(t) else ""
    if ok.empty:
        st.info(f"No subject has {ix} in both reference and prediction (statuses: "
                f"{', '.join(sorted(set(t['status'])))}).")
    else:
        c1, c2 = st.columns(2)
        c1.plotly_chart(charts.bland_altman(ok["ref"].to_numpy(float), ok["pred"].to_numpy(float), ix, unit,
                                            labels=ok["subject"].astype(str).to_numpy()), key=f"{key}_ba")
        c2.plotly_chart(charts.scatter_vs_reference(ok["ref"].to_numpy(float), ok["pred"].to_numpy(float), ix, unit,
                                                    labels=ok["subject"].astype(str).to_numpy()),
                        key=f"{key}_scatter")
    st.dataframe(t, hide_index=True, key=f"{key}_table")
    data.download(t, f"clinical_{ix}.csv", key=f"dl_{key}_table")
