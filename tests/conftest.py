"""Test-wide settings for the processes tests start.

Every part serves Prometheus metrics on a fixed port by default; tests run many
parts, often at once, so those that start processes get metrics off through the
environment (the metrics tests turn them on with free ports explicitly).
"""

import os

os.environ.setdefault("CCF__METRICS__ENABLED", "false")
