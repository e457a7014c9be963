"""Each part installs alone: its extra in a fresh virtual environment, then the part runs.

A collector machine gets no torch and no Streamlit; a dashboard machine no torch. The
project is built into a wheel once; every environment installs that wheel with one
extra (``ccf[collect]``, ``ccf[features]``, ``ccf[ml]``, ``ccf[monitor]``, ``ccf[ui]``)
from the package index, then runs its part against the replay exchange's data.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.infra import free_port
from tests.ml.data import BTC
from tests.test_cli import port_open, wait_for

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "streamlit", "mlflow", "lightgbm", "evidently", "pandas", "numpy", "aiohttp")
# what each extra may bring in, of the heavy libraries above
ALLOWED = {
    "collect": {"aiohttp"},
    "features": {"numpy"},
    "ml": {"torch", "mlflow", "lightgbm", "pandas", "numpy", "aiohttp"},  # mlflow needs aiohttp
    "monitor": {"evidently", "pandas", "numpy"},
    "ui": {"streamlit", "pandas", "numpy"},
}


class Env:
    """A fresh virtual environment holding the project's wheel with one extra."""

    def __init__(self, root: Path, wheel: Path, extra: str) -> None:
        self.dir = root / f"venv-{extra}"
        self.extra = extra
        subprocess.run([sys.executable, "-m", "venv", str(self.dir)], check=True)
        pip = [str(self.dir / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
        subprocess.run(
            [
                *pip,
                "install",
                "-q",
                "--no-compile",
                "-c",
                str(ROOT / "constraints.txt"),
                f"ccf[{extra}] @ {wheel.as_uri()}",
            ],
            check=True,
            capture_output=True,
            text=True,
        )

    @property
    def ccf(self) -> str:
        return str(self.dir / "bin" / "ccf")

    def installed(self) -> set[str]:
        """The heavy libraries importable in this environment."""
        code = (
            "import importlib.util, json; "
            f"print(json.dumps([m for m in {list(HEAVY)!r} if importlib.util.find_spec(m)]))"
        )
        out = subprocess.run(
            [str(self.dir / "bin" / "python"), "-c", code],
            check=True,
            capture_output=True,
            text=True,
        )
        return set(json.loads(out.stdout))

    @contextmanager
    def part(self, *args: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
        env = {**os.environ, "CCF__METRICS__ENABLED": "false", "CCF_SHARED": str(shared())}
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [self.ccf, *args], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.dir
            )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def run(self, *args: str) -> str:
        env = {**os.environ, "CCF__METRICS__ENABLED": "false", "CCF_SHARED": str(shared())}
        out = subprocess.run(
            [self.ccf, *args], capture_output=True, text=True, env=env, cwd=self.dir, timeout=600
        )
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        return out.stdout


def shared() -> Path:
    from ccf.config import shared_dir

    return shared_dir().resolve()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--disable-pip-version-check",
            str(ROOT),
            "-w",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    return next(out.glob("ccf-*.whl"))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("extras")


def check_alone(env: Env) -> None:
    heavy = env.installed()
    assert heavy <= ALLOWED[env.extra], f"ccf[{env.extra}] installed {heavy - ALLOWED[env.extra]}"


def status(env: Env, data: Path) -> dict:
    return json.loads(env.run("status", "--json", f"data_dir={data}"))


def test_collect_and_features_each_run_from_their_own_extra(wheel: Path, root: Path) -> None:
    data = root / "data"
    collect = Env(root, wheel, "collect")
    check_alone(collect)
    port = free_port()
    common = [f"data_dir={data}", f"replay.port={port}", "symbols=[btcusdt]"]
    with collect.part("exchange", *common, "replay.speed=5", log=root / "exchange.log"):
        wait_for(lambda: port_open(port), 60, "the replay exchange")
        with collect.part("collect", *common, "collect.print_every_s=0", log=root / "c.log"):

            def trades() -> int:
                if not (data / "ccf.sqlite").exists():
                    return 0
                got = status(collect, data)
                return sum(s["rows"] for s in got["streams"] if s["kind"] == "trade")

            wait_for(lambda: trades() > 500, 120, "trades collected by ccf[collect]")

        features = Env(root, wheel, "features")
        check_alone(features)
        with features.part("features", *common, "features.print_every_s=0", log=root / "f.log"):
            wait_for(
                lambda: (status(features, data).get("features") or [{}])[0].get("rows", 0) > 10,
                120,
                "feature rows from ccf[features]",
            )


def test_ml_trains_from_its_own_extra(wheel: Path, root: Path) -> None:
    ml = Env(root, wheel, "ml")
    check_alone(ml)
    out = ml.run(
        "train",
        "--candles",
        str(BTC),
        f"data_dir={root / 'ml'}",
        "ml.models=[naive,lightgbm]",
        "ml.params.lightgbm.n_estimators=20",
        "ml.train.max_train_samples=2000",
        "ml.train.progress_bar=false",
        "ml.train.num_threads=1",
    )
    assert "lightgbm: version 2" in out, out[-2000:]


def test_monitor_and_ui_start_from_their_own_extras(wheel: Path, root: Path) -> None:
    data = root / "empty"
    monitor = Env(root, wheel, "monitor")
    check_alone(monitor)
    with monitor.part("monitor", f"data_dir={data}", log=root / "m.log") as proc:
        wait_for(
            lambda: "monitor" in {p["part"] for p in status(monitor, data)["parts"]},
            60,
            "the monitor's heartbeat",
        )
        assert proc.poll() is None, (root / "m.log").read_text()[-2000:]

    ui = Env(root, wheel, "ui")
    check_alone(ui)
    port = free_port()
    with ui.part("ui", f"data_dir={data}", f"ui.port={port}", log=root / "ui.log"):
        wait_for(lambda: port_open(port), 90, "the dashboard")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=30) as r:
            assert r.read() == b"ok"
