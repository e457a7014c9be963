"""Optional sinks that copy what the parts write somewhere else (InfluxDB).

A sink is secondary: it never blocks or stops the part it serves. The part
hands it records; a background thread batches and ships them, holds them
while the far side is down and drops the oldest, counted, past its limit.
"""

from ccf.sinks.influx import InfluxStats, InfluxTee, InfluxWriter, open_influx

__all__ = ["InfluxStats", "InfluxTee", "InfluxWriter", "open_influx"]
