"""Served models from the MLflow registry, by alias."""

from __future__ import annotations

from ccf.config import Settings
from ccf.ml.models.base import Forecaster


class RegistrySource:
    """The predictor's :class:`~ccf.serving.predictor.ModelSource` over the MLflow registry.

    ``version`` is one cheap query (the registered model's aliases); ``load`` goes through
    the version's pyfunc and reports the version it actually loaded, so an alias that
    moved between the two calls is never mislabelled.
    """

    def __init__(self, settings: Settings) -> None:
        from ccf.ml.registry import Registry

        self._registry = Registry(settings)

    def version(self, alias: str) -> str | None:
        v = self._registry.aliases().get(alias)
        return None if v is None else str(v)  # MLflow gives an int from some stores

    def load(self, alias: str) -> tuple[Forecaster, str, str]:
        model, v = self._registry.load(alias)
        return model, self._registry.name, v.version
