"""One filled data dir for every dashboard test in the session (building it is the slow
part: about 40 s, mostly MLflow), and an empty one."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ui import build


@pytest.fixture(scope="session")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("ui") / "data"
    build(data)
    return data


@pytest.fixture
def empty(tmp_path: Path) -> Path:
    data = tmp_path / "empty"
    data.mkdir()
    return data
