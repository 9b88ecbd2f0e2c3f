"""The cardbench dashboard (Streamlit): ``cardbench dashboard`` runs ``streamlit run`` on this file.

Pages (``views/``): Leaderboard, Submission, Case drill-down, Compare, Dataset. The leaderboard folder
comes from ``$CARDBENCH_LEADERBOARD`` (set by ``cardbench dashboard --leaderboard DIR``), else the
default folder, pre-filled with the published entries on first use.
"""

import os
from pathlib import Path

import streamlit as st

HERE = Path(__file__).resolve().parent

st.set_page_config(page_title="cardbench leaderboard", page_icon=":anatomical_heart:", layout="wide")

LEADERBOARD = st.Page(str(HERE / "views" / "leaderboard.py"), title="Leaderboard", icon=":material/leaderboard:",
                      url_path="leaderboard")


def _home() -> None:
    """The root URL opens the Leaderboard page (with the URL's selections), so /leaderboard?benchmark=...
    is a page path of its own: Streamlit serves the default page only at the root."""
    st.switch_page(LEADERBOARD, query_params=st.query_params.to_dict())


PAGES = [
    st.Page(_home, title="Home", url_path="home", default=True, visibility="hidden"),
    LEADERBOARD,
    st.Page(str(HERE / "views" / "submission.py"), title="Submission", icon=":material/description:",
            url_path="submission"),
    st.Page(str(HERE / "views" / "case.py"), title="Case drill-down", icon=":material/image_search:",
            url_path="case"),
    st.Page(str(HERE / "views" / "compare.py"), title="Compare", icon=":material/compare_arrows:",
            url_path="compare"),
    st.Page(str(HERE / "views" / "dataset.py"), title="Dataset", icon=":material/dataset:", url_path="dataset"),
]
if os.environ.get("CARDBENCH_ALLOW_SUBMISSIONS", "") not in ("", "0"):  # --allow-submissions
    PAGES.append(st.Page(str(HERE / "views" / "submit.py"), title="Submit", icon=":material/upload:",
                         url_path="submit"))

page = st.navigation(PAGES)

from cardbench.dashboard import data  # noqa: E402

with st.sidebar:
    st.markdown("**cardbench** leaderboard")
    st.caption(f"folder: `{data.root()}`")
data.leaderboard()
from cardbench.dashboard import public as _public  # noqa: E402

_public.guard(page)  # --public: pages with per-case values are refused, by URL too
page.run()
