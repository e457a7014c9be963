"""PREDICTIONS: the live predictor serving the registry's champion (``ccf predict``)."""
