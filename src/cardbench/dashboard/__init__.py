"""Streamlit leaderboard and drill-down (needs the ``[dashboard]`` extra: streamlit, plotly)."""
