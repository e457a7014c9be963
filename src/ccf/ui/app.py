"""The dashboard's Streamlit entry: ``ccf ui`` runs ``streamlit run app.py -- <overrides>``.

It loads the settings once (a bad value shows the same message as the command line's),
says when the data is replayed, and hands over to the page picked in the sidebar. The
UI only reads the stores; the one thing it writes is a promotion the user confirms on the
Models page, through the same rule as ``ccf promote``.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from ccf.config import ConfigError
from ccf.storage.backends import uses_postgres
from ccf.ui.common import settings
from ccf.ui.data.db import Store

PAGES = Path(__file__).parent / "pages"

st.set_page_config(page_title="CCF", page_icon=":material/query_stats:", layout="wide")
try:
    current = settings()
except ConfigError as e:
    st.error(f"ccf: {e}")
    st.stop()
page = st.navigation(
    [
        st.Page(PAGES / "live.py", title="Live", icon=":material/monitoring:", default=True),
        st.Page(PAGES / "accuracy.py", title="Accuracy", icon=":material/target:"),
        st.Page(PAGES / "market.py", title="Market data", icon=":material/candlestick_chart:"),
        st.Page(PAGES / "models.py", title="Models", icon=":material/model_training:"),
        st.Page(PAGES / "health.py", title="Health", icon=":material/health_and_safety:"),
    ]
)
data = Store(current, "raw").where if uses_postgres(current) else current.data_dir
st.sidebar.caption(
    f"data `{data}` · source `{current.source}` · refresh {current.ui.refresh_s:g} s"
)
page.run()
