"""FEATURES: raw records -> one feature row per symbol per closed time bucket.

The same engine runs live (following the store) and in batch (over history),
so a model sees the same numbers online as it saw in training.

- :mod:`.spec`: a feature set from config, its columns and version
- :mod:`.buckets`, :mod:`.aggregate`: bucket math; one symbol's open bucket
- :mod:`.engine`: reorder buffer, watermark, buckets, features -> rows
- :mod:`.store`, :mod:`.online`: the feature store (SQLite) and in-process windows
- :mod:`.raw`, :mod:`.runner`: reading the raw store; ``ccf features`` live and backfill
- :mod:`.kinds`: the feature kinds, each registered under its config name
"""

from ccf.features.engine import FeatureEngine, FeatureRow
from ccf.features.spec import FeatureSet, feature_set
from ccf.features.store import FeatureStore, Window

__all__ = ["FeatureEngine", "FeatureRow", "FeatureSet", "FeatureStore", "Window", "feature_set"]
