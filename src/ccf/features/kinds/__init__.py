"""Feature kinds: each is one small factory registered under its config name.

Importing this package registers every built-in kind (see ``base.REGISTRY``).
"""

from ccf.features.kinds.base import REGISTRY, Feature, Row, build, kind

__all__ = ["REGISTRY", "Feature", "Row", "build", "kind"]
