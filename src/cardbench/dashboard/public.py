"""Public mode of the dashboard (``cardbench dashboard --public``): aggregates only.

With ``$CARDBENCH_DASHBOARD_PUBLIC=1`` (set by ``--public``) the app shows the Leaderboard page with
the public rules of :mod:`cardbench.benchmark.private` (no median, no CI under 4 subjects) and
replaces every page that shows per-case or per-subject values (Submission, Case drill-down,
Compare, Dataset) by a refusal, reachable by its URL too, so a link cannot open them.
"""

from __future__ import annotations

import os

ENV_PUBLIC = "CARDBENCH_DASHBOARD_PUBLIC"
#: url paths of the pages that show per-case or per-subject values.
PER_CASE_PAGES = ("submission", "case", "compare", "dataset")


def public_mode() -> bool:
    """True when the dashboard runs in public mode."""
    return os.environ.get(ENV_PUBLIC, "") not in ("", "0", "false")


def guard(page) -> None:
    """In public mode, stop the run with a refusal when ``page`` (the page :func:`st.navigation`
    selected, by the sidebar or by its URL) shows per-case or per-subject values."""
    if not public_mode() or getattr(page, "url_path", None) not in PER_CASE_PAGES:
        return
    import streamlit as st

    st.title(page.title)
    st.error("Not available: this dashboard is public and shows aggregates only (no per-case or per-subject "
             "value, no case drill-down). Open the Leaderboard page.", icon=":material/lock:")
    st.stop()
