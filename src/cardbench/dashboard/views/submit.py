"""Submit page (``cardbench dashboard --allow-submissions``): upload a prediction archive (benchmarks
with public images) or an ONNX model with its model.yaml (private benchmarks); the upload is
queued and scored one at a time (:mod:`cardbench.evaluate.intake`), and the page shows the result or
the one-line reasons for refusal."""

import streamlit as st

from cardbench.benchmark.private import is_private
from cardbench.dashboard import data
from cardbench.evaluate.intake import IntakeError, IntakeLimits, process_queue, status, submit

st.title("Submit")
bench = data.current_benchmark()
if bench is None:
    data.no_benchmark_message()
    st.stop()
lb = data.leaderboard()
limits = IntakeLimits()
private = is_private(lb, bench["id"])
cap_mb = max(1, limits.max_upload_bytes // 2**20)  # the browser refuses larger files before uploading
st.caption(f"Benchmark **{bench['title']}**. "
           + ("Private benchmark: its images are not shared, so upload a **model** (ONNX) with its **model.yaml**; "
              "it runs here with onnxruntime (no code of yours is executed)." if private else
              "Upload a **prediction archive** (.zip or .tar.gz of the prediction folder, as `cardbench score` "
              "takes).")
           + f" Limits: {limits.max_upload_bytes // 2**20} MiB per upload, {limits.per_name_per_day} submissions per "
           "name per day (UTC).")

with st.form("submit_form", clear_on_submit=False):
    name = st.text_input("Entry name", key="submit_name", placeholder="my-unet",
                         help="Letters, digits, '.', '_', '+', '-'; shown on the leaderboard.")
    if private:
        ups = [st.file_uploader("ONNX model", type=["onnx"], key="submit_model", max_upload_size=cap_mb),
               st.file_uploader("model.yaml", type=["yaml", "yml"], key="submit_card", max_upload_size=1)]
    else:
        ups = [st.file_uploader("Prediction archive", type=["zip", "gz", "tgz"], key="submit_archive",
                                max_upload_size=cap_mb)]
    sent = st.form_submit_button("Submit")

if sent:
    files = {u.name: u.getvalue() for u in ups if u is not None}
    try:
        if not files:
            raise IntakeError("choose the file(s) to upload")
        sid = submit(lb, bench["id"], (name or "").strip(), files, limits)
    except IntakeError as e:
        st.error(f"Refused: {e}")
    else:
        st.session_state["submit_last"] = sid
        with st.spinner("Scoring (one submission at a time)..."):
            process_queue(lb, limits)

sid = st.session_state.get("submit_last")
if sid:
    s = status(lb.root, sid)
    if s["status"] == "done":
        rank = f" Rank {s['rank']} of {s['of']} by {s['ranked_by']}." if s.get("rank") else ""
        st.success(f"Submission {sid}: {s['message']}.{rank}")
    elif s["status"] == "refused":
        st.error(f"Submission {sid} refused: {s['message']}")
        for p in s.get("problems", []):
            st.error(p)
    else:
        st.info(f"Submission {sid}: {s['message']} (another submission is being scored).")
        if st.button("Refresh", key="submit_refresh"):
            process_queue(lb, limits)
            st.rerun()
