"""The deep kinds (TFT, NHiTS) on the real one-minute BTCUSDT candles, with tiny networks.

The fast path's batches are checked against pytorch-forecasting's own
TimeSeriesDataSet + DataLoader for the same windows; then fit, predict, save/load,
no look-ahead, seeded reproducibility, warm starts and Optuna pruning.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from ccf.config import TrainConfig
from ccf.ml.dataset import Dataset, Origins, Splits
from ccf.ml.models import base
from ccf.ml.models import windows as W
from ccf.ml.models.deep import DeepForecaster
from tests.ml.data import candle_dataset, candle_rows, candle_settings

KINDS = ("tft", "nhits")
PARAMS = {"tft": {"hidden_size": 8, "attention_head_size": 2}, "nhits": {"hidden_size": 16}}
CFG = TrainConfig(
    max_epochs=2, batch_size=256, max_train_samples=1024, progress_bar=False, patience=2
)


def _data(*overrides: str) -> tuple[Dataset, Splits]:
    settings = candle_settings("ml.encoder_length=30", *overrides)
    ds = candle_dataset(candle_rows(), settings)
    sp = ds.split(0.7, 0.15, 0.15)
    # a short validation split keeps every fit cheap
    return ds, sp._replace(val=sp.val.take(slice(0, 512)))


@pytest.fixture(scope="module")
def one() -> tuple[Dataset, Splits]:
    return _data()


@pytest.fixture(scope="module")
def two() -> tuple[Dataset, Splits]:
    """Two targets (close and open): each origin makes one window per target."""
    return _data("ml.targets=[close,open]")


@pytest.fixture(scope="module")
def fitted(one: tuple[Dataset, Splits], tmp_path_factory: pytest.TempPathFactory) -> dict:
    ds, sp = one
    out = {}
    for kind in KINDS:
        model = base.create(kind, ds.spec, PARAMS[kind])
        wd = tmp_path_factory.mktemp(kind)
        result = model.fit(ds, sp.train, sp.val, CFG, seed=7, workdir=wd)
        out[kind] = (model, result, wd)
    return out


def _origins(sp: Splits, n: int = 200) -> Origins:
    return sp.test.take(slice(0, n))


# -- the fast batch is the library's batch ---------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_fast_batch_equals_timeseriesdataset_batch(kind: str, two: tuple[Dataset, Splits]) -> None:
    ds, sp = two
    model = base.create(kind, ds.spec, PARAMS[kind])
    assert isinstance(model, DeepForecaster)
    torch.manual_seed(0)
    net = model.build(1e-3)
    lay = model.layout
    assert lay is not None
    w = W.training_windows(ds, sp.train.take(slice(-150, None)))
    assert len(w) == 300 and set(w.target) == {0, 1}  # every origin, both targets

    lib = W.reference_dataset(ds, w, lay)
    x_lib, (y_lib, weight) = next(iter(lib.to_dataloader(train=False, batch_size=len(w))))
    x, (y, none) = W.gather(
        W.stack(ds),
        lay,
        torch.as_tensor(w.series),
        torch.as_tensor(w.target),
        torch.as_tensor(w.t),
        len(ds.spec.targets),
    )

    assert set(x) == set(x_lib)
    for key in set(x) - {"decoder_cont", "groups"}:
        assert x[key].dtype == x_lib[key].dtype, key
        assert torch.equal(x[key], x_lib[key]), key
    assert torch.equal(y, y_lib) and weight is None and none is None
    # decoder: known inputs (and the step index) equal; observed inputs and the target are
    # the future: the library's frame carries them, the fast path puts zeros there
    future = [i for i, n in enumerate(lay.reals) if n in lay.unknown or n == W.TARGET]
    ahead = [i for i in range(len(lay.reals)) if i not in future]
    assert torch.equal(x["decoder_cont"][..., ahead], x_lib["decoder_cont"][..., ahead])
    assert not x["decoder_cont"][..., future].any()
    assert x_lib["decoder_cont"][..., future].abs().sum() > 0
    # groups: (series of symbol and target, origin), as the library's decoded index has them
    idx = lib.decoded_index
    assert np.array_equal(x["groups"][:, 0].numpy(), idx["win_series"].to_numpy())
    assert np.array_equal(x["groups"][:, 1].numpy(), idx["win_origin"].to_numpy())
    # and the network, which ignores decoder values of observed inputs, agrees exactly
    net.eval()
    with torch.inference_mode():
        assert torch.equal(net(x)["prediction"], net(x_lib)["prediction"])


def test_only_windows_with_every_target_step_known_are_trained(
    one: tuple[Dataset, Splits],
) -> None:
    ds, _ = one
    s = ds.series[0]
    y = s.y.copy()
    y[5000, 0, 7] = np.nan  # one unknown step (a gap) drops its window
    holed = Dataset(ds.spec, [s._replace(y=y)])
    every = ds.origins()
    w = W.training_windows(holed, every)
    # the last max_horizon origins have no full future either
    assert len(w) == len(every) - ds.spec.max_horizon - 1
    assert 5000 not in set(w.t) and 4999 in set(w.t)
    newest = W.training_windows(holed, every, newest=100)
    assert np.array_equal(newest.t, w.t[-100:])


# -- fit, predict, save, load ----------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_fits_and_forecasts_real_candles(
    kind: str, fitted: dict, one: tuple[Dataset, Splits]
) -> None:
    ds, sp = one
    model, r, wd = fitted[kind]
    assert r.epochs == 2 and len(r.train_loss) == len(r.val_loss) == 2
    assert r.samples == 2 * (1024 // CFG.batch_size) * CFG.batch_size
    assert all(np.isfinite(r.val_loss)) and r.best_val_loss == min(r.val_loss)
    assert r.train_loss[-1] < r.train_loss[0]
    assert r.checkpoint and Path(r.checkpoint).is_file()
    assert any((wd / "tensorboard").rglob("events.out.tfevents.*"))

    o = _origins(sp)
    q = model.predict(ds, o)
    assert q.shape == (len(o), 1, len(ds.spec.horizons), len(ds.spec.quantiles))
    assert np.isfinite(q).all() and (np.diff(q, axis=-1) >= 0).all()
    # wider apart at longer horizons: the scale is vol * sqrt(h)
    spread = (q[..., -1] - q[..., 0]).mean(axis=0)[0]
    assert spread[-1] > spread[0] > 0


@pytest.mark.parametrize("kind", KINDS)
def test_saved_model_forecasts_identically(
    kind: str, fitted: dict, one: tuple[Dataset, Splits], tmp_path: Path
) -> None:
    ds, sp = one
    model = fitted[kind][0]
    model.save(tmp_path / kind)
    loaded = base.load(tmp_path / kind)
    o = _origins(sp)
    assert np.array_equal(loaded.predict(ds, o), model.predict(ds, o))
    assert loaded.fit_result is not None and loaded.fit_result.train_loss


@pytest.mark.parametrize("kind", KINDS)
def test_forecast_never_reads_past_its_origin(
    kind: str, fitted: dict, one: tuple[Dataset, Splits]
) -> None:
    ds, sp = one
    model = fitted[kind][0]
    o = _origins(sp, 50)
    cut = int(o.t.max())
    s = ds.series[0]
    rng = np.random.default_rng(0)
    after = slice(cut + 1, None)
    x, level, vol = s.x.copy(), s.level.copy(), s.vol.copy()
    x[after] = rng.normal(size=x[after].shape).astype(np.float32) * 5
    level[after] += rng.normal(size=level[after].shape) * 0.01
    vol[after] *= 3
    changed = Dataset(ds.spec, [s._replace(x=x, level=level, vol=vol, y=np.full_like(s.y, np.nan))])
    assert np.array_equal(model.predict(changed, o), model.predict(ds, o))


def test_two_targets_forecast_per_target(two: tuple[Dataset, Splits]) -> None:
    ds, sp = two
    model = base.create("nhits", ds.spec, PARAMS["nhits"])
    r = model.fit(ds, sp.train, sp.val, CFG.model_copy(update={"max_epochs": 1}), seed=1)
    assert r.extra["windows"] == 1024
    q = model.predict(ds, _origins(sp, 30))
    assert q.shape == (30, 2, len(ds.spec.horizons), len(ds.spec.quantiles))
    assert np.isfinite(q).all()
    assert not np.array_equal(q[:, 0], q[:, 1])  # each target's own past and scale


# -- reproducibility, warm starts, tuning ----------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_seeded_fit_repeats_its_loss_curve(
    kind: str, fitted: dict, one: tuple[Dataset, Splits]
) -> None:
    ds, sp = one
    first = fitted[kind][1]
    again = base.create(kind, ds.spec, PARAMS[kind]).fit(ds, sp.train, sp.val, CFG, seed=7)
    assert again.train_loss == first.train_loss
    assert again.val_loss == first.val_loss


def test_warm_start_begins_from_the_fitted_weights(
    fitted: dict, one: tuple[Dataset, Splits]
) -> None:
    ds, sp = one
    warm = fitted["nhits"][0]
    still = base.create("nhits", ds.spec, {**PARAMS["nhits"], "learning_rate": 1e-12})
    r = still.fit(
        ds, sp.train, sp.val, CFG.model_copy(update={"max_epochs": 1}), seed=3, warm_start=warm
    )
    assert r.val_loss[0] == pytest.approx(fitted["nhits"][1].best_val_loss, abs=1e-5)
    with pytest.raises(ValueError, match="warm start"):
        base.create("nhits", ds.spec, {"hidden_size": 32}).fit(
            ds, sp.train, sp.val, CFG, warm_start=warm
        )


def test_optuna_pruning_callback_stops_the_fit(one: tuple[Dataset, Splits]) -> None:
    from optuna_integration import PyTorchLightningPruningCallback

    ds, sp = one
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=0.0))
    trial = study.ask()
    params = {**PARAMS["nhits"], **base.model_class("nhits").search_space(trial)}
    model = base.create("nhits", ds.spec, params)
    with pytest.raises(optuna.TrialPruned):
        model.fit(
            ds,
            sp.train,
            sp.val,
            CFG,
            callbacks=[PyTorchLightningPruningCallback(trial, monitor="val_loss")],
        )
    assert trial.number == 0 and list(study.trials[0].intermediate_values) == [0]


@pytest.mark.parametrize("kind", KINDS)
def test_search_space_builds_a_model(kind: str, one: tuple[Dataset, Splits]) -> None:
    cls = base.model_class(kind)
    study = optuna.create_study()
    params = cls.search_space(study.ask())
    assert params and isinstance(base.create(kind, one[0].spec, params).build(1e-3), object)


def test_many_forecasts_keep_memory_flat(fitted: dict, one: tuple[Dataset, Splits]) -> None:
    ds, sp = one
    model = fitted["tft"][0]
    o = _origins(sp, 300)

    def rss_mb() -> float:
        return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20

    for _ in range(5):
        model.predict(ds, o)
    before = rss_mb()
    for _ in range(40):
        model.predict(ds, o)
    assert rss_mb() - before < 25
