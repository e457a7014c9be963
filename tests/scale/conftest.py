"""The scale-out tests' servers (PostgreSQL, a Tansu broker, InfluxDB) as fixtures."""

from tests.infra import influxd, kafka, pg, postgres_server  # noqa: F401
