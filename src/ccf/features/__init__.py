"""FEATURES: raw records -> one feature row per symbol per closed time bucket.

The same engine runs live (following the store) and in batch (over history),
so a model sees the same numbers online as it saw in training.
"""
