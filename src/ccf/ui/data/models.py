"""The model registry as the Models page reads it: versions, aliases, evaluation reports.

Reads go through an MLflow client of their own, never :class:`ccf.ml.registry.Registry`,
which creates the experiment (and a local tracking database) when it is missing: looking
at an empty data dir must not write one.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ccf.config import Settings
from ccf.ui.data.db import to_time

if TYPE_CHECKING:
    from mlflow import MlflowClient

REPORT_DIR = "report"  # where a training run logs its evaluation report


@dataclass(frozen=True)
class Report:
    """One run's evaluation report: the JSON, its charts (PNG bytes) and the HTML page."""

    data: dict | None
    images: dict[str, bytes] = field(default_factory=dict)
    html: bytes | None = None


def registry_exists(settings: Settings) -> bool:
    """A local tracking database that is not there yet means nothing was ever trained."""
    uri = settings.tracking_uri
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).exists()
    return True


def _client(settings: Settings) -> MlflowClient:
    from mlflow import MlflowClient  # lazy: MLflow takes a second or two to import

    return MlflowClient(settings.tracking_uri, settings.tracking_uri)


def versions(settings: Settings) -> pd.DataFrame:
    """Every version of the registered model, newest first, with its aliases and tags."""
    cols = [
        "version",
        "kind",
        "aliases",
        "skill",
        "beats_naive",
        "created",
        "data_to",
        "promoted_at",
        "reason",
        "run_name",
        "run_id",
    ]
    if not registry_exists(settings):
        return pd.DataFrame(columns=cols)
    client = _client(settings)
    name = settings.model_name
    found = client.search_registered_models(filter_string=f"name = '{name}'")
    if not found:
        return pd.DataFrame(columns=cols)
    by_version: dict[str, list[str]] = {}
    for alias, v in found[0].aliases.items():
        by_version.setdefault(str(v), []).append(alias)
    rows = []
    for mv in client.search_model_versions(f"name = '{name}'"):
        tags = dict(mv.tags or {})
        skill = tags.get("skill")
        rows.append(
            {
                "version": str(mv.version),
                "kind": tags.get("kind", "?"),
                "aliases": ", ".join(sorted(by_version.get(str(mv.version), []))),
                "skill": float(skill) if skill not in (None, "", "nan") else None,
                "beats_naive": tags.get("beats_naive") == "true",
                "created": to_time(int(mv.creation_timestamp) * 1_000_000),
                "data_to": tags.get("data_to"),
                "promoted_at": tags.get("promoted_at"),
                "reason": tags.get("reason") or tags.get("challenger_reason"),
                "run_name": tags.get("run_name"),
                "run_id": mv.run_id,
            }
        )
    df = pd.DataFrame(rows, columns=cols)
    return df.sort_values("version", key=lambda v: v.astype(int), ascending=False).reset_index(
        drop=True
    )


def report(settings: Settings, run_id: str) -> Report:
    """The evaluation report a run logged (an empty report when it logged none)."""
    client = _client(settings)
    names = [a.path for a in client.list_artifacts(run_id, REPORT_DIR)]
    if not names:
        return Report(None)
    with tempfile.TemporaryDirectory(prefix="ccf-ui-") as tmp:
        local = Path(client.download_artifacts(run_id, REPORT_DIR, tmp))
        data = (
            json.loads((local / "report.json").read_text())
            if (local / "report.json").exists()
            else None
        )
        images = {p.stem: p.read_bytes() for p in sorted(local.glob("*.png"))}
        html = (local / "report.html").read_bytes() if (local / "report.html").exists() else None
    return Report(data, images, html)
