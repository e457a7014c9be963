"""librdkafka settings for CCF's producers and consumers, built from ``transport.kafka``.

Credentials are resolved here, at connect time, from the references the config holds
(``env:NAME`` or ``file:/path``, see :mod:`ccf.secrets`); the dictionaries these functions
return carry them, so they go straight into a client and are never logged. Log
:func:`describe` instead.

Settings that make the transport what DESIGN.md promises:

- producers are idempotent (``enable.idempotence``, ``acks=all``): a retried batch is
  written once, in order, per partition;
- consumers never commit on their own (``enable.auto.commit=false``): a part commits an
  offset only once what it made of the records is durable;
- consumers see the end of each partition (``enable.partition.eof``), which tells the
  event-time aligner that an input holds nothing more *for now*;
- the ``range`` assignor gives a consumer the same partition numbers in every topic it
  reads, so one symbol's books, trades and gaps (keyed alike) go to the same worker.
"""

from __future__ import annotations

import logging
from typing import Any

from ccf.config import KafkaConfig
from ccf.secrets import resolve

log = logging.getLogger(__name__)

# librdkafka's own log lines go through Python logging, not straight to stderr
_LIBRDKAFKA_LOG = logging.getLogger("ccf.transport.librdkafka")


class TransportError(RuntimeError):
    """The broker refused or lost something; the message says what and, where known, how
    to fix it. Parts stop on it rather than go on without durability."""


def _uses_sasl(cfg: KafkaConfig) -> bool:
    return cfg.security_protocol.startswith("SASL_")


def _uses_tls(cfg: KafkaConfig) -> bool:
    return cfg.security_protocol in ("SSL", "SASL_SSL")


def client_config(cfg: KafkaConfig, client_id: str = "ccf") -> dict[str, Any]:
    """What every client needs: brokers, security and credentials (resolved: never log)."""
    conf: dict[str, Any] = {
        "bootstrap.servers": cfg.bootstrap,
        "client.id": client_id,
        "security.protocol": cfg.security_protocol,
        "logger": _LIBRDKAFKA_LOG,
        "log.connection.close": False,  # a broker closing an idle connection is no news
    }
    if _uses_sasl(cfg):
        if not cfg.sasl_username or not cfg.sasl_password:
            raise TransportError(
                f"transport.kafka.security_protocol={cfg.security_protocol} needs "
                "transport.kafka.sasl_username and transport.kafka.sasl_password "
                "(env:NAME or file:/path)"
            )
        conf["sasl.mechanism"] = cfg.sasl_mechanism
        conf["sasl.username"] = cfg.sasl_username
        conf["sasl.password"] = resolve(cfg.sasl_password)
    if _uses_tls(cfg):
        for key, value in (
            ("ssl.ca.location", cfg.ssl_ca_location),
            ("ssl.certificate.location", cfg.ssl_certificate_location),
            ("ssl.key.location", cfg.ssl_key_location),
        ):
            if value is not None:
                conf[key] = str(value)
        if cfg.ssl_key_password is not None:
            conf["ssl.key.password"] = resolve(cfg.ssl_key_password)
    return conf


def producer_config(cfg: KafkaConfig, client_id: str = "ccf") -> dict[str, Any]:
    """An idempotent, batching, compressing producer that reports only failed deliveries
    (success is what ``flush`` returning with no error means)."""
    return {
        **client_config(cfg, client_id),
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": cfg.compression,
        "linger.ms": cfg.linger_ms,
        "batch.size": cfg.batch_bytes,
        "delivery.report.only.error": True,
    }


def consumer_config(cfg: KafkaConfig, group: str, client_id: str = "ccf") -> dict[str, Any]:
    """A group member that commits by hand, sees partition ends and gets the same partition
    numbers in every topic it reads. A group with no committed offset starts at the
    beginning: nothing the producers wrote before the first consumer came is skipped."""
    return {
        **client_config(cfg, client_id),
        "group.id": group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": cfg.session_timeout_ms,
        "heartbeat.interval.ms": max(100, cfg.session_timeout_ms // 3),
        "partition.assignment.strategy": "range",
    }


def secrets_of(cfg: KafkaConfig) -> tuple[str | None, ...]:
    """The resolved secret values, for :func:`ccf.secrets.redact` on client error texts."""
    out: list[str | None] = []
    if _uses_sasl(cfg) and cfg.sasl_password:
        out.append(resolve(cfg.sasl_password))
    if _uses_tls(cfg) and cfg.ssl_key_password:
        out.append(resolve(cfg.ssl_key_password))
    return tuple(out)


def describe(cfg: KafkaConfig) -> str:
    """Where and how the clients connect, for logs: no secret, only where it comes from.

    >>> describe(KafkaConfig(bootstrap="k1:9093", security_protocol="SASL_SSL",
    ...                      sasl_username="ccf", sasl_password="env:KAFKA_PW"))
    'kafka://k1:9093 security=SASL_SSL sasl=SCRAM-SHA-512 user=ccf password=env:KAFKA_PW'
    """
    text = f"kafka://{cfg.bootstrap} security={cfg.security_protocol}"
    if _uses_sasl(cfg):
        text += f" sasl={cfg.sasl_mechanism} user={cfg.sasl_username}"
        if cfg.sasl_password:
            text += f" password={cfg.sasl_password}"  # the reference, never the value
    if _uses_tls(cfg) and cfg.ssl_ca_location:
        text += f" ca={cfg.ssl_ca_location}"
    return text
