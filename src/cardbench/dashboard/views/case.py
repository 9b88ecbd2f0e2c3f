"""Case drill-down: one case's image with the reference and the prediction contours side by side
(when the images are available), slice and frame sliders, and the case's scores per class and slice."""

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from cardbench.dashboard import analysis, charts, data, images

st.title("Case drill-down")
bench, entries, _ = data.require_board()
entry = data.select_persistent("Entry", entries["entry"].tolist(), "entry", query_param="entry")
summary, _, _, meta, pc = data.entry_or_stop(bench["id"], entry)  # a bad file: one st.error line
vol = analysis.level_rows(pc, "volume")
img_rows = analysis.level_rows(pc, "image")
metric_cols = analysis.metric_columns(pc)

subjects = sorted(pc["subject"].astype(str).unique().tolist())
c1, c2, c3 = st.columns([1, 1, 1])
subject = data.select_persistent("Subject", subjects, "case_subject", container=c1, query_param="subject")
frames_all = sorted(int(f) for f in pc.loc[pc["subject"].astype(str) == subject, "frame"].dropna().unique())
phase_of = {int(r["frame"]): r["phase"] for _, r in vol[vol["subject"].astype(str) == subject].iterrows()
            if not pd.isna(r["frame"]) and isinstance(r["phase"], str) and r["phase"]}
if not frames_all:
    st.warning(f"Subject {subject} has no frame numbers in this entry.")
    st.stop()


def _from_url(key: str, param: str, options: list[int]) -> None:
    """Start a slider at the URL's ``&frame=`` / ``&slice=`` (once per session), drop a stale value."""
    if key in st.session_state and st.session_state[key] not in options:
        del st.session_state[key]
    if key not in st.session_state and param in st.query_params:
        try:
            want = int(st.query_params[param])
        except ValueError:
            return
        if want in options:
            st.session_state[key] = want


def _to_url(param: str, value) -> None:
    if value is not None and st.query_params.get(param) != str(value):
        st.query_params[param] = str(value)


with c2:
    if len(frames_all) > 1:
        _from_url("case_frame", "frame", frames_all)
        frame = st.select_slider("Frame", frames_all, key="case_frame",
                                 format_func=lambda f: f"{f} ({phase_of[f]})" if f in phase_of else str(f))
    else:
        frame = frames_all[0]
        st.markdown(f"Frame {frame}" + (f" ({phase_of[frame]})" if frame in phase_of else ""))
case_vol = vol[(vol["subject"].astype(str) == subject) & (vol["frame"] == frame)]
case_img = img_rows[(img_rows["subject"].astype(str) == subject) & (img_rows["frame"] == frame)]
slices = sorted(int(s) for s in case_img["slice"].dropna().unique())
with c3:
    if len(slices) > 1:
        _from_url("case_slice", "slice", slices)
        kw = {} if "case_slice" in st.session_state else {"value": slices[len(slices) // 2]}
        sl = st.select_slider("Slice", slices, key="case_slice", help="Starts at the middle slice of the stack "
                              "(or at the URL's &slice=).", **kw)
    else:
        sl = slices[0] if slices else None
        if sl is not None:
            st.markdown(f"Slice {sl}")

_to_url("frame", frame)
_to_url("slice", sl)
title = f"Subject {subject}, frame {frame}" + (f" ({phase_of[frame]})" if frame in phase_of else "")
st.subheader(title + (f", slice {sl}" if sl is not None else ""))


# ---- images
@st.cache_data(show_spinner=False, max_entries=32)
def _load(path: str, label_map, kind: str):
    if kind == "image":
        return images.read_volume(Path(path))
    return images.read_labels(Path(path), label_map), None


def _images() -> None:
    ref_file = str(case_vol["ref_file"].iloc[0]) if "ref_file" in case_vol and len(case_vol) else ""
    pred_file = str(case_vol["pred_file"].iloc[0]) if "pred_file" in case_vol and len(case_vol) else ""
    with st.spinner("Looking for the case's images..."):
        found = images.locate_case(summary, ref_file, "" if pred_file == "nan" else pred_file, meta)
    if isinstance(found, str):
        st.info(found, icon=":material/visibility_off:")
        return
    try:
        ref_lab, _ = _load(str(found.reference), (summary.get("dataset") or {}).get("label_map"), "labels")
        pred_lab = _load(str(found.prediction), summary.get("label_map"), "labels")[0] if found.prediction else None
    except Exception as e:  # noqa: BLE001 - show the reason, never a stack trace
        st.error(f"Could not read the case's files ({found.reference}): {e}")
        return
    img, spacing = None, None
    if found.image:
        try:  # bounded read (images.read_volume); a bad image: one line, the contours on black
            img, spacing = _load(str(found.image), None, "image")
        except Exception as e:  # noqa: BLE001 - show the reason, never a stack trace
            st.warning(f"Image not shown: {e}")
    spacing = spacing or (1.0, 1.0, 1.0)
    k = int(sl) if sl is not None and 0 <= int(sl) < ref_lab.shape[2] else 0
    o1, o2, o3 = st.columns(3)
    zoom_on = o1.checkbox("Zoom to the heart", value=True, key="case_zoom")
    both = o2.checkbox("Reference contours on the prediction too", value=True, key="case_both")
    errors = o3.checkbox("Error pixels (false positive / false negative)", value=True, key="case_errors")
    zoom = charts.label_box(ref_lab.any(axis=2), None if pred_lab is None else pred_lab.any(axis=2)) \
        if zoom_on else None
    if found.image is None:
        st.caption("No image next to the reference labels (standard layout: images/<subject>/...): contours are "
                   "drawn on black.")
    img2 = None if img is None else img[:, :, min(k, img.shape[2] - 1)]
    i1, i2 = st.columns(2)
    i1.plotly_chart(charts.overlay(img2, ref_lab[:, :, k], "reference", spacing[:2], zoom=zoom), key="case_ref")
    if pred_lab is not None:
        i2.plotly_chart(charts.overlay(img2, pred_lab[:, :, k], "prediction (dashed)", spacing[:2], dash="dash",
                                       also=ref_lab[:, :, k] if both else None, zoom=zoom,
                                       errors_vs=ref_lab[:, :, k] if errors else None), key="case_pred")
        diff = int(np.sum(ref_lab[:, :, k] != pred_lab[:, :, k]))
        st.caption(f"{diff} pixels differ on this slice. x horizontal, y vertical as stored in the NIfTI (array "
                   "transposed for display). LV red, MY green, RV blue; contours are the 0.5 iso-lines of each mask.")
        if errors:
            st.caption("Error pixels on the prediction: false positive (magenta), the prediction gives a class "
                       "the reference does not give at that pixel; false negative (cyan), the prediction misses "
                       "the reference's class there (counts in the legend).")
    else:
        i2.info("The prediction file is not available here (the submission folder was moved, or it was an "
                "archive).")


_images()

# ---- scores
st.markdown("**Volume** (all slices of the frame)")
show = ["class", "status", "ref_voxels", "pred_voxels", "tp", "fp", "fn"] + metric_cols
vt = case_vol[[c for c in show if c in case_vol.columns]]
st.dataframe(vt, hide_index=True, key="case_volume")
data.download(vt, f"{entry}__{subject}_frame{frame}__volume.csv", key="dl_case_volume")
if slices and metric_cols:
    metric = st.selectbox("Per-slice metric", metric_cols, key="case_metric")
    st.markdown(f"**Per slice**: {metric}")
    per_slice = case_img.pivot_table(index="slice", columns="class", values=metric, aggfunc="first", dropna=False)
    per_slice.columns = [f"{metric} {c}" for c in per_slice.columns]
    st.dataframe(per_slice, key="case_slices")
    data.download(per_slice.reset_index(), f"{entry}__{subject}_frame{frame}__slices.csv", key="dl_case_slices")
