"""ML: datasets from feature rows, forecasters behind one interface, training, tuning,
walk-forward evaluation and the MLflow registry."""
