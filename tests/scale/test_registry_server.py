"""The shared registry and distributed tuning, with real servers: an MLflow tracking server
(started by ``ccf.ml.server``) with its backend in PostgreSQL and its artifacts in a
shared folder, ``ccf train`` registering through it, another process serving the
champion from it; and two ``ccf tune`` workers on one Optuna study in PostgreSQL.

The PostgreSQL password must never show: not in a process's command line (``ps`` shows
those to every user), not in the server's log, not in what the registry stores.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

from ccf.config import ConfigError, PostgresConfig, Settings, load_settings
from ccf.ml import server
from ccf.ml.sources import CANDLE_PRESET
from tests.infra import PG_PASSWORD, PG_PASSWORD_ENV, free_port, pg, postgres_server, scale_env  # noqa: F401
from tests.ml.data import BTC

CCF = [sys.executable, "-m", "ccf"]
QUICK = (
    "ml.params.lightgbm.n_estimators=30",
    "ml.train.max_train_samples=4000",
    "ml.train.progress_bar=false",
    "ml.train.num_threads=1",  # LightGBM's OpenMP threads crawl on a busy two-core machine
)
MODEL = "ccf-candles"  # the registered model of the candle preset (features.name=candles)


@pytest.fixture(scope="module")
def candles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """BTC's first 4000 one-minute bars: enough for every split, quick to fit."""
    path = tmp_path_factory.mktemp("candles") / "BTCUSDT-1m-head.csv"
    pd.read_csv(BTC).iloc[:4000].to_csv(path, index=False)
    return path


def pg_keys(cfg: PostgresConfig) -> list[str]:
    """Overrides naming the test database (the password by reference); the tables of CCF
    itself stay where they are."""
    return [
        f"storage.postgres.host={cfg.host}",
        f"storage.postgres.port={cfg.port}",
        f"storage.postgres.dbname={cfg.dbname}",
        f"storage.postgres.user={cfg.user}",
        f"storage.postgres.password={cfg.password}",
    ]


@contextmanager
def registry_server(settings: Settings, log: Path) -> Iterator[subprocess.Popen]:
    """The registry server of ``settings``, up and answering, stopped afterwards."""
    with open(log, "wb") as out:
        proc = server.start_server(settings, out)
    try:
        server.wait_healthy(server.server_url(settings), 120, proc)
        yield proc
    finally:
        server.stop_server(proc)


def group_cmdlines(pgid: int) -> list[str]:
    """The command lines of every process in a process group, as ``ps`` shows them."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # after pid (comm): state, ppid, pgrp
                out.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (OSError, IndexError, ValueError):  # a process that ended meanwhile
            continue
    return out


def stored_strings(url: str) -> list[str]:
    """Every param and tag value of every run and model version the registry holds."""
    from mlflow import MlflowClient

    client = MlflowClient(url, url)
    values = []
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id]):
            values += [*run.data.params.values(), *run.data.tags.values()]
    for mv in client.search_model_versions(f"name = '{MODEL}'"):
        values += list(mv.tags.values())
    return values


def test_the_server_command_line_holds_no_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PG_PASSWORD_ENV, PG_PASSWORD)
    db = PostgresConfig(user="ccf_test", password=f"env:{PG_PASSWORD_ENV}")
    settings = load_settings(
        [
            *pg_keys(db),
            "ml.registry.server.backend_store=postgres",
            "ml.registry.server.tls_cert=/etc/ccf/server.pem",
            "ml.registry.server.tls_key=/etc/ccf/server.key",
        ],
        environ={},
    )
    cmd = server.server_command(settings)
    assert PG_PASSWORD not in " ".join(cmd)
    assert cmd[cmd.index("--backend-store-uri") + 1].startswith("postgresql+psycopg://ccf_test@")
    assert "--ssl-certfile /etc/ccf/server.pem" in cmd[cmd.index("--uvicorn-opts") + 1]
    assert server.server_url(settings) == "https://127.0.0.1:5000"
    env = server.server_env(settings, base={})
    assert env == {
        "PGPASSWORD": PG_PASSWORD,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }


def test_client_credentials_come_from_secret_references(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = tmp_path / "token"
    token.write_text("tok-123\n")
    names = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_SERVER_CERT_PATH")
    for name in names:
        monkeypatch.setenv(name, "before")  # so the test's changes are undone afterwards
    keys = [f"ml.registry.token=file:{token}", "ml.registry.ca_bundle=/etc/ccf/ca.pem"]
    local = load_settings([*keys, f"data_dir={tmp_path}"], environ={})
    server.configure_client(local)  # a local store: nothing to tell MLflow
    assert [os.environ[n] for n in names] == ["before", "before"]
    remote = load_settings([*keys, "ml.registry.tracking_uri=https://mlflow.lan"], environ={})
    server.configure_client(remote)
    assert [os.environ[n] for n in names] == ["tok-123", "/etc/ccf/ca.pem"]
    assert "tok-123" not in repr(remote)  # the config holds where the token is, not the token

    with pytest.raises(ConfigError) as e:
        load_settings(["ml.tune.storage=postgresql://ccf:hunter2@db/ccf"], environ={})
    assert "ml.tune: storage: a URL here must not hold a password" in str(e.value)
    assert "hunter2" not in str(e.value)


def test_train_registers_through_a_postgres_backed_server_and_another_process_serves_it(
    pg: PostgresConfig,  # noqa: F811
    candles: Path,
    tmp_path: Path,
) -> None:
    from mlflow import MlflowClient

    from ccf.ml.models.base import load
    from ccf.ml.pyfunc import forecast_frame
    from ccf.ml.registry import load_forecaster
    from ccf.ml.sources import from_candles
    from ccf.storage.postgres.connect import connect

    shared = tmp_path / "shared-artifacts"
    settings = load_settings(
        [
            *pg_keys(pg),
            "ml.registry.server.backend_store=postgres",
            f"ml.registry.server.port={free_port()}",
            f"ml.registry.server.artifacts_dir={shared}",
            f"data_dir={tmp_path / 'server'}",
        ],
        environ={},
    )
    url = server.server_url(settings)
    trainer = tmp_path / "trainer"
    with registry_server(settings, tmp_path / "server.log") as proc:
        train = subprocess.run(
            [
                *CCF,
                "train",
                "--candles",
                str(candles),
                f"data_dir={trainer}",
                "ml.models=[naive,lightgbm]",
                *QUICK,
                f"ml.registry.tracking_uri={url}",
            ],
            env=scale_env(),
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert train.returncode == 0, train.stdout + train.stderr[-5000:]
        assert "naive: version 1" in train.stdout and "lightgbm: version 2" in train.stdout
        cmdlines = group_cmdlines(proc.pid)

        # another process, with nothing but the server's URL, serves the champion
        client = load_settings(
            [f"ml.registry.tracking_uri={url}", f"data_dir={tmp_path / 'client'}"],
            files=[CANDLE_PRESET],
            environ={},
        )
        served, version = load_forecaster(client)
        champion = MlflowClient(url, url).get_model_version_by_alias(MODEL, "champion")
        assert version == str(champion.version)
        stored = stored_strings(url)

    # the model the trainer fitted, from its own folder, forecasts what the served one does
    run_name = champion.tags["run_name"]
    fitted = load(trainer / "training" / run_name / "model")
    rows = from_candles(client, candles).frame.tail(400)
    expected = forecast_frame(fitted, rows)
    assert len(expected) > 0
    pd.testing.assert_frame_equal(forecast_frame(served, rows), expected)

    # runs and versions live in PostgreSQL, the models in the shared folder only
    with connect(pg) as con:
        assert con.execute("SELECT count(*) FROM model_versions").fetchone() == (2,)
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] >= 2
    assert len(list(shared.rglob("MLmodel"))) == 2
    assert not (trainer / "mlartifacts").exists() and not (trainer / "mlflow.db").exists()

    # and the password is nowhere to be read
    assert any(f"postgresql+psycopg://{pg.user}@" in c for c in cmdlines), cmdlines
    assert any("uvicorn" in c for c in cmdlines), cmdlines
    for text in [*cmdlines, (tmp_path / "server.log").read_text(), train.stdout, train.stderr]:
        assert PG_PASSWORD not in text
    assert stored and not [v for v in stored if PG_PASSWORD in v]


TRIALS = 4


def test_two_tune_workers_share_one_study_in_postgres(
    pg: PostgresConfig,  # noqa: F811
    candles: Path,
    tmp_path: Path,
) -> None:
    """Both workers run trials; the study ends with exactly TRIALS finished trials (claims
    are made under a PostgreSQL advisory lock, counting the running ones), numbered
    0..TRIALS-1, with no suggestion repeated; both workers wait for the last trial and
    register the study's best parameters."""
    import optuna
    from mlflow import MlflowClient

    from ccf.ml import tune

    settings = load_settings(
        [f"ml.registry.server.port={free_port()}", f"data_dir={tmp_path / 'server'}"],
        environ={},
    )
    url = server.server_url(settings)
    study = "shared-lightgbm"
    common = [
        *CCF,
        "tune",
        "--model",
        "lightgbm",
        "--trials",
        str(TRIALS),
        "--candles",
        str(candles),
        *pg_keys(pg),
        "ml.tune.storage=postgres",
        f"ml.tune.study={study}",
        f"ml.registry.tracking_uri={url}",
        "ml.params.lightgbm.n_estimators=150",  # trials last longer than the workers' start skew
        *QUICK[1:],
    ]
    with registry_server(settings, tmp_path / "server.log"):
        logs = [tmp_path / f"worker{i}.log" for i in (0, 1)]
        workers = []
        for i, log in enumerate(logs):
            with open(log, "wb") as out:
                workers.append(
                    subprocess.Popen(
                        [*common, f"data_dir={tmp_path / f'worker{i}'}"],
                        env=scale_env(),
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        try:
            codes = [w.wait(timeout=240) for w in workers]
        finally:
            for w in workers:
                if w.poll() is None:
                    w.kill()
                    w.wait()
        outputs = [log.read_text() for log in logs]
        for code, out in zip(codes, outputs, strict=True):
            assert code == 0, out[-5000:]
        client = MlflowClient(url, url)
        registered = client.search_model_versions(f"name = '{MODEL}'")
        runs = {mv.version: client.get_run(mv.run_id) for mv in registered}
        challenger = client.get_model_version_by_alias(MODEL, "challenger").version
        stored = stored_strings(url)

    storage = tune.study_storage(
        load_settings([*pg_keys(pg), "ml.tune.storage=postgres"], environ={})
    )
    rdb = optuna.storages.RDBStorage(storage.url, engine_kwargs=storage.engine_kwargs)
    trials = optuna.load_study(study_name=study, storage=rdb).trials
    states = Counter(t.state for t in trials)
    assert states == {optuna.trial.TrialState.COMPLETE: TRIALS}, states
    assert [t.number for t in trials] == list(range(TRIALS))
    by_worker = Counter(t.user_attrs["worker"] for t in trials)
    assert len(by_worker) == 2 and all(n > 0 for n in by_worker.values()), by_worker
    assert len({tuple(sorted(t.params.items())) for t in trials}) == TRIALS  # no repeats

    # each worker reports the whole study and what it ran itself; together, every trial
    ran = []
    best = {t.number: t for t in trials if t.value is not None}
    best_trial = min(best.values(), key=lambda t: t.value)
    for out in outputs:
        m = re.search(
            rf"{TRIALS} complete, 0 pruned, 0 failed \((\d+) run now\); best trial (\d+)", out
        )
        assert m, out[-3000:]
        ran.append(int(m.group(1)))
        assert int(m.group(2)) == best_trial.number
    assert sorted(ran) == sorted(by_worker.values())

    # both registered the study's best parameters in the shared registry
    assert len(runs) == 2 and challenger in runs
    for run in runs.values():
        assert run.data.tags["ccf.study"] == study
        assert run.data.tags["ccf.best_trial"] == str(best_trial.number)
        for key, value in best_trial.params.items():
            assert float(run.data.params[f"model.{key}"]) == float(value)
    for text in [*outputs, (tmp_path / "server.log").read_text()]:
        assert PG_PASSWORD not in text
    assert not [v for v in stored if PG_PASSWORD in v]
