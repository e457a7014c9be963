"""The dashboard (``ccf ui``): Streamlit pages over the stores the other parts write.

``app.py`` is the Streamlit entry; ``data/`` holds the readers (plain functions returning
DataFrames, no Streamlit), ``charts/`` the Plotly figures, ``cache.py`` the readers as the
pages call them, ``pages/`` one module per page: Live, Accuracy, Market data, Models,
Health.
"""
