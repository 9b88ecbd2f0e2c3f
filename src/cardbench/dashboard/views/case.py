"""Case drill-down: one case's scores per class and slice, and, when the images are available, the
image with the reference and the prediction contours side by side, with slice and frame sliders."""

import numpy as np
import pandas as pd
import streamlit as st

from cardbench.dashboard import analysis, charts, data, images

st.title("Case drill-down")
bench = data.current_benchmark()
if bench is None:
    data.no_benchmark_message()
    st.stop()
entries, _ = data.board(bench["id"])
if entries.empty:
    st.warning("This benchmark has no entries.")
    st.stop()
entry = data.select_persistent("Entry", entries["entry"].tolist(), "entry", query_param="entry")
summary, _, _, _ = data.entry_details(bench["id"], entry)
pc = data.per_case(bench["id"], entry)
vol = analysis.level_rows(pc, "volume")
img_rows = analysis.level_rows(pc, "image")
metric_cols = analysis.metric_columns(pc)

subjects = sorted(pc["subject"].astype(str).unique().tolist())
c1, c2 = st.columns([1, 2])
subject = data.select_persistent("Subject", subjects, "case_subject", container=c1, query_param="subject")
frames_all = sorted(int(f) for f in pc.loc[pc["subject"].astype(str) == subject, "frame"].dropna().unique())
phase_of = {int(r["frame"]): r["phase"] for _, r in vol[vol["subject"].astype(str) == subject].iterrows()
            if not pd.isna(r["frame"]) and isinstance(r["phase"], str) and r["phase"]}
if not frames_all:
    st.warning(f"Subject {subject} has no frame numbers in this entry.")
    st.stop()
with c2:
    if len(frames_all) > 1:
        frame = st.select_slider("Frame", frames_all, key="case_frame",
                                 format_func=lambda f: f"{f} ({phase_of[f]})" if f in phase_of else str(f))
    else:
        frame = frames_all[0]
        st.markdown(f"Frame {frame}" + (f" ({phase_of[frame]})" if frame in phase_of else ""))

case_vol = vol[(vol["subject"].astype(str) == subject) & (vol["frame"] == frame)]
case_img = img_rows[(img_rows["subject"].astype(str) == subject) & (img_rows["frame"] == frame)]
show = ["class", "status", "ref_voxels", "pred_voxels", "tp", "fp", "fn"] + metric_cols
st.subheader(f"Subject {subject}, frame {frame}" + (f" ({phase_of[frame]})" if frame in phase_of else ""))
st.markdown("**Volume** (all slices of the frame)")
vt = case_vol[[c for c in show if c in case_vol.columns]]
st.dataframe(vt, hide_index=True, key="case_volume")
data.download(vt, f"{entry}__{subject}_frame{frame}__volume.csv", key="dl_case_volume")

slices = sorted(int(s) for s in case_img["slice"].dropna().unique())
if slices:
    st.markdown("**Per slice**")
    metric = metric_cols[0] if metric_cols else None
    if metric:
        per_slice = case_img.pivot_table(index="slice", columns="class", values=metric, aggfunc="first")
        per_slice.columns = [f"{metric} {c}" for c in per_slice.columns]
        st.dataframe(per_slice, key="case_slices")
        data.download(per_slice.reset_index(), f"{entry}__{subject}_frame{frame}__slices.csv", key="dl_case_slices")
    sl = st.select_slider("Slice", slices, key="case_slice") if len(slices) > 1 else slices[0]
else:
    sl = None

st.subheader("Images")
ref_file = str(case_vol["ref_file"].iloc[0]) if "ref_file" in case_vol and len(case_vol) else ""
pred_file = str(case_vol["pred_file"].iloc[0]) if "pred_file" in case_vol and len(case_vol) else ""
if sl is not None and "ref_file" in case_img and len(case_img):
    r = case_img[case_img["slice"] == sl]
    if len(r):
        ref_file = str(r["ref_file"].iloc[0])
        pred_file = str(r["pred_file"].iloc[0]) if "pred_file" in r else pred_file
found = images.locate_case(summary, ref_file, pred_file if pred_file != "nan" else "")
if isinstance(found, str):
    st.info(found, icon=":material/visibility_off:")
    st.stop()


@st.cache_data(show_spinner=False, max_entries=32)
def _load(path: str, label_map, kind: str):
    from pathlib import Path

    if kind == "image":
        return images.read_volume(Path(path))
    return images.read_labels(Path(path), label_map), None


try:
    ref_lab, _ = _load(str(found.reference), (summary.get("dataset") or {}).get("label_map"), "labels")
    pred_lab = _load(str(found.prediction), summary.get("label_map"), "labels")[0] if found.prediction else None
    img, spacing = _load(str(found.image), None, "image") if found.image else (None, None)
except Exception as e:  # noqa: BLE001 - show the reason, never a stack trace
    st.error(f"Could not read the case's files: {e}")
    st.stop()
if spacing is None:
    spacing = (1.0, 1.0, 1.0)
k = 0
if ref_lab.shape[2] > 1:
    k = int(sl) if sl is not None and 0 <= int(sl) < ref_lab.shape[2] else 0
elif sl is not None:
    k = 0
if found.image is None:
    st.caption("No image file next to the reference labels (standard layout: images/<subject>/...); contours are "
               "drawn on black.")
img2 = None if img is None else img[:, :, min(k, img.shape[2] - 1)]
c1, c2 = st.columns(2)
c1.plotly_chart(charts.overlay(img2, ref_lab[:, :, k], f"reference (slice {k})", spacing[:2]), key="case_ref")
if pred_lab is not None:
    c2.plotly_chart(charts.overlay(img2, pred_lab[:, :, k], f"prediction (slice {k})", spacing[:2], dash="dash"),
                    key="case_pred")
else:
    c2.info("The prediction file is not available here (the submission folder was moved, or it was an archive).")
st.caption("x horizontal, y vertical, as stored in the NIfTI (array transposed for display). Colours: LV red, MY "
           "green, RV blue. Contours: the 0.5 iso-line of each class mask.")
if pred_lab is not None:
    diff = int(np.sum(ref_lab[:, :, k] != pred_lab[:, :, k]))
    st.caption(f"{diff} pixels differ on this slice.")
