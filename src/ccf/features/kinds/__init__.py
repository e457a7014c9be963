"""Feature kinds: each is one small factory registered under its config name.

Importing this package registers every built-in kind (see ``base.REGISTRY``):
every module beside this one is imported, so a new kind needs no edit here.
"""

import importlib
import pkgutil

from ccf.features.kinds.base import REGISTRY, Feature, Row, build, kind

for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _mod != "base" and not _mod.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod}")

__all__ = ["REGISTRY", "Feature", "Row", "build", "kind"]
