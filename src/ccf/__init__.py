"""CCF: real-time crypto forecasting.

Six parts share the vocabulary in :mod:`ccf.records` and :mod:`ccf.config`:
DATA (:mod:`ccf.sources`), FEATURES, ML, PREDICTIONS, METRICS and UI, with
storage reached through the small interface in :mod:`ccf.storage`.
"""

__version__ = "0.1.0"
