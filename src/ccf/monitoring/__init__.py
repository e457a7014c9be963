"""METRICS: forecast scores, rolling accuracy, drift and quality, Prometheus per part.

Every part imports :mod:`ccf.monitoring.metrics`, so this package exports only
that light module's names; the monitor itself is :class:`ccf.monitoring.monitor.Monitor`
and its tables :class:`ccf.monitoring.store.MonitorStore`.
"""

from ccf.monitoring.metrics import MetricsPortError, MonitorMetrics, PartMetrics

__all__ = ["MetricsPortError", "MonitorMetrics", "PartMetrics"]
