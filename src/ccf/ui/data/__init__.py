"""What the dashboard reads: plain functions over the stores, returning DataFrames.

No Streamlit here, so every reader runs (and is tested) on its own. Every reader takes a
:class:`~ccf.ui.data.db.Store` (the settings and which store), so one reader serves the
SQLite files and PostgreSQL alike (``storage.backend``). It opens its store read-only,
reads a bounded window anchored at the store's newest row (a replay of 2024 data has
windows as full as a live run's), and returns an empty frame when the store or table is
not there yet: the pages turn that into an empty state.
"""
