"""The Streamlit dashboard (``cardbench dashboard``; needs the ``[dashboard]`` extra: streamlit, plotly).

Streamlit and Plotly are imported only inside this package. Modules: ``app.py`` (entry point,
navigation), ``views/`` (one script per page), ``data.py`` (cached loading), ``analysis.py``
(pandas computations behind the pages), ``charts.py`` (Plotly figures), ``images.py`` (finding
the images of a case).
"""
