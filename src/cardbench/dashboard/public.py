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


def _refusal(title: str):
    def page():
        import streamlit as st

        st.title(title)
        st.error("Not available: this dashboard is public and shows aggregates only (no per-case or per-subject "
                 "value, no case drill-down). Open the Leaderboard page.", icon=":material/lock:")
    page.__name__ = f"refused_{title.lower().replace(' ', '_').replace('-', '_')}"
    return page


def filter_pages(pages: list) -> list:
    """In public mode, every page of :data:`PER_CASE_PAGES` becomes a refusal at the same URL."""
    if not public_mode():
        return pages
    import streamlit as st

    out = []
    for p in pages:
        if p.url_path in PER_CASE_PAGES:
            out.append(st.Page(_refusal(p.title), title=f"{p.title} (not public)", icon=":material/lock:",
                               url_path=p.url_path))
        else:
            out.append(p)
    return out
