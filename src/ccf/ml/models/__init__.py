"""Forecasters: naive, LightGBM quantiles, TFT and NHiTS, all behind ``base.Forecaster``."""
