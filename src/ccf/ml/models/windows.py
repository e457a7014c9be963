"""Forecast windows as tensors: the fast path that feeds pytorch-forecasting's networks.

A window is (series, target k, origin t). Every (symbol, target) pair is a series
of its own: with targets ``[a_p_0, b_p_0]`` each origin gives two windows, one per
target, sharing the symbol's inputs. The encoder covers rows t-E+1..t, the decoder
the steps t+1..t+H (H = the spec's longest horizon), and the network's ``x`` holds:

- known inputs (calendar) at every step, encoder and decoder;
- observed inputs in the encoder, and **zeros in the decoder**: they are the future
  (the networks ignore them there, and the fast path never puts future values in);
- the target column ``z``: in the encoder each one-bucket log return of target k
  divided by vol[t] (clipped to +-10 like the inputs, NaN as 0); in the decoder at
  step j = 1..H the target the models learn, the log return from t to t+j over
  ``vol[t] * sqrt(j)``: the decoder target, never an input (zeros in ``decoder_cont``);
- ``relative_time_idx`` (TFT only): (-E..H-1) / E, as pytorch-forecasting adds it.

Targets are normalized already, so ``target_scale`` is (0, 1) everywhere (identity).

The series' arrays are stacked once into one tensor per kind (:func:`stack`); a batch
is gathered by index arithmetic (:func:`gather`): no per-sample ``__getitem__``, no
``TimeSeriesDataSet`` at training time. :func:`reference_dataset` builds pytorch-
forecasting's own ``TimeSeriesDataSet`` over the same windows (one group per window,
since the target depends on the origin): tests prove both give the same ``x``, and the
benchmark trains through it as the library's default pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

from ccf.ml.dataset import Origins

if TYPE_CHECKING:
    import pandas as pd
    from pytorch_forecasting import TimeSeriesDataSet

    from ccf.ml.dataset import Dataset, DatasetSpec

TARGET = "z"
REL = "relative_time_idx"
CLIP = 10.0  # the encoder's target column is clipped like the dataset's inputs
_BLOCKS = ("known", "rel", "target", "unknown")


def net_name(name: str) -> str:
    """pytorch-forecasting refuses column names with dots."""
    return name.replace(".", "_")


@dataclass(frozen=True, slots=True)
class Layout:
    """What one network reads: its continuous inputs in order (``x_reals``), by block."""

    reals: tuple[str, ...]
    blocks: tuple[str, ...]  # block names in the order their columns appear in ``reals``
    known: tuple[str, ...]
    unknown: tuple[str, ...]
    relative_time_idx: bool
    encoder_length: int
    horizon: int


def names(spec: DatasetSpec) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Known and observed input names as the network sees them."""
    known = tuple(net_name(n) for n in spec.known)
    unknown = tuple(net_name(n) for n in spec.unknown)
    every = [*known, *unknown, TARGET, REL]
    if len(set(every)) != len(every):
        dup = sorted({n for n in every if every.count(n) > 1})
        raise ValueError(f"deep models: input names collide once dots become '_': {dup}")
    return known, unknown


def tiny_frame(spec: DatasetSpec) -> pd.DataFrame:
    """Two windows of zeros with the spec's columns: all a network needs to be built."""
    import pandas as pd

    known, unknown = names(spec)
    n = spec.encoder_length + spec.max_horizon
    frame = pd.DataFrame(
        np.zeros((2 * n, len(known) + len(unknown) + 1)), columns=[*known, *unknown, TARGET]
    )
    frame["win_series"] = 0
    frame["win_origin"] = np.repeat([0, 1], n)
    frame["time_idx"] = np.tile(np.arange(n), 2)
    return frame


def timeseries_dataset(
    frame: pd.DataFrame, spec: DatasetSpec, relative_time_idx: bool
) -> TimeSeriesDataSet:
    """The library's dataset over a frame of windows (one group per window): identity
    target normalization, no input scalers (inputs are normalized already)."""
    from pytorch_forecasting import TimeSeriesDataSet
    from pytorch_forecasting.data.encoders import TorchNormalizer

    known, unknown = names(spec)
    return TimeSeriesDataSet(
        frame,
        time_idx="time_idx",
        target=TARGET,
        group_ids=["win_series", "win_origin"],
        max_encoder_length=spec.encoder_length,
        min_encoder_length=spec.encoder_length,
        max_prediction_length=spec.max_horizon,
        min_prediction_length=spec.max_horizon,
        time_varying_known_reals=list(known),
        time_varying_unknown_reals=[TARGET, *unknown],
        target_normalizer=TorchNormalizer(method="identity", center=False),
        scalers={n: None for n in (*known, *unknown, REL)},
        add_relative_time_idx=relative_time_idx,
        add_encoder_length=False,
        add_target_scales=False,
        randomize_length=None,
    )


def layout_of(reals: list[str] | tuple[str, ...], spec: DatasetSpec, rel: bool) -> Layout:
    """The blocks in a network's ``x_reals``; ValueError if its order is not block-wise."""
    known, unknown = names(spec)
    members = {
        "known": known,
        "rel": (REL,) if rel else (),
        "target": (TARGET,),
        "unknown": unknown,
    }
    blocks: list[str] = []
    pos = 0
    reals = tuple(reals)
    while pos < len(reals):
        hit = [b for b in _BLOCKS if b not in blocks and members[b] and reals[pos] == members[b][0]]
        if not hit or reals[pos : pos + len(members[hit[0]])] != members[hit[0]]:
            raise ValueError(f"deep models: unexpected network input order {reals}")
        blocks.append(hit[0])
        pos += len(members[hit[0]])
    return Layout(
        reals=reals,
        blocks=tuple(blocks),
        known=known,
        unknown=unknown,
        relative_time_idx=rel,
        encoder_length=spec.encoder_length,
        horizon=spec.max_horizon,
    )


# -- arrays and windows --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Arrays:
    """A dataset's series back to back, one tensor per kind; series i starts at row0[i]."""

    x: torch.Tensor  # (R, U) float32 observed inputs
    known: torch.Tensor  # (Rk, N) float32: each series has max_horizon rows past its end
    ret: torch.Tensor  # (R, K) float64 one-bucket log returns, NaN across a missing bucket
    vol: torch.Tensor  # (R, K) float64
    z: torch.Tensor | None  # (R, K, H) float32 decoder targets (None: forecasting only)
    row0: torch.Tensor  # (S,) int64
    krow0: torch.Tensor  # (S,) int64

    def to(self, device: torch.device) -> Arrays:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return Arrays(**{k: None if v is None else v.to(device) for k, v in moved.items()})


def one_step_returns(level: np.ndarray, ts: np.ndarray, bucket_ns: int) -> np.ndarray:
    """log level[s] - log level[s-1], NaN at the first row and after a missing bucket."""
    ret = np.diff(level, axis=0, prepend=np.nan)
    gap = np.diff(ts, prepend=ts[0] - 2 * bucket_ns) != bucket_ns
    ret[gap] = np.nan
    return ret


def z_targets(y: np.ndarray, vol: np.ndarray) -> np.ndarray:
    """y / (vol[t] * sqrt(k)) for k = 1..H: (T, K, H), float64, NaN where unknown."""
    root = np.sqrt(np.arange(1, y.shape[2] + 1, dtype=float))
    with np.errstate(invalid="ignore", divide="ignore"):
        return y / (vol[:, :, None] * root)


def encoder_target(ret: np.ndarray, vol_t: np.ndarray) -> np.ndarray:
    """The encoder's target column (numpy; :func:`gather` does the same in torch)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        v = ret / vol_t
    return np.nan_to_num(np.clip(v, -CLIP, CLIP), nan=0.0).astype(np.float32)


def stack(data: Dataset, targets: bool = True) -> Arrays:
    """Every series of ``data`` stacked once (decoder targets too when ``targets``)."""
    s = data.series
    rows = np.cumsum([0] + [len(x.ts) for x in s])[:-1]
    krows = np.cumsum([0] + [len(x.known) for x in s])[:-1]
    bucket = data.spec.bucket_ns
    z = None
    if targets:
        z = torch.from_numpy(np.concatenate([z_targets(x.y, x.vol) for x in s]).astype(np.float32))
    return Arrays(
        x=torch.from_numpy(np.concatenate([x.x for x in s])),
        known=torch.from_numpy(np.concatenate([x.known for x in s])),
        ret=torch.from_numpy(np.concatenate([one_step_returns(x.level, x.ts, bucket) for x in s])),
        vol=torch.from_numpy(np.concatenate([x.vol for x in s])),
        z=z,
        row0=torch.from_numpy(rows.astype(np.int64)),
        krow0=torch.from_numpy(krows.astype(np.int64)),
    )


class Windows(NamedTuple):
    """Windows in (series, target, origin) order: dataset series i, target k, row t."""

    series: np.ndarray
    target: np.ndarray
    t: np.ndarray

    def __len__(self) -> int:
        return len(self.t)

    def sid(self, n_targets: int) -> np.ndarray:
        """The (symbol, target) series id a window belongs to."""
        return self.series * n_targets + self.target


def forecast_windows(data: Dataset, origins: Origins) -> Windows:
    """One window per origin and target, origin-major (reshape to (n, K) afterwards)."""
    K = len(data.spec.targets)
    for i, s in enumerate(data.series):
        t = origins.t[origins.series == i]
        inside = (t >= 0) & (t < len(s.ts))
        bad = int((~inside).sum() + (~s.valid[t[inside]]).sum())
        if bad:
            raise ValueError(
                f"deep models: {bad} origins of {s.symbol} have no full window of "
                f"{data.spec.encoder_length} contiguous rows"
            )
    return Windows(
        np.repeat(origins.series, K), np.tile(np.arange(K), len(origins)), np.repeat(origins.t, K)
    )


def training_windows(data: Dataset, origins: Origins, newest: int | None = None) -> Windows:
    """The windows whose targets are finite at every step 1..max_horizon; with ``newest``,
    only the newest N of them by origin time. Ordered by (series, target, origin)."""
    w = forecast_windows(data, origins)
    ok = np.zeros(len(w), bool)
    for i, s in enumerate(data.series):
        m = w.series == i
        ok[m] = np.isfinite(s.y[w.t[m], w.target[m]]).all(axis=1)
    w = Windows(*(a[ok] for a in w))
    if newest is not None and len(w) > newest:
        ts = data.ts(Origins(w.series, w.t))
        keep = np.sort(np.argsort(ts, kind="stable")[len(w) - newest :])
        w = Windows(*(a[keep] for a in w))
    order = np.lexsort((w.t, w.target, w.series))
    return Windows(*(a[order] for a in w))


# -- batches -------------------------------------------------------------------------------


def gather(
    a: Arrays,
    layout: Layout,
    series: torch.Tensor,
    k: torch.Tensor,
    t: torch.Tensor,
    n_targets: int,
) -> tuple[dict[str, torch.Tensor], tuple[torch.Tensor, None]]:
    """The batch ``(x, (y, None))`` for windows (series, k, t), in pytorch-forecasting's
    format, gathered from the stacked arrays by index arithmetic."""
    E, H = layout.encoder_length, layout.horizon
    dev = a.x.device
    B = len(t)
    r = a.row0[series] + t  # row of the origin
    enc = r[:, None] + torch.arange(1 - E, 1, device=dev)
    kr = (a.krow0[series] + t)[:, None] + torch.arange(1 - E, H + 1, device=dev)
    vol_t = a.vol[r, k]
    tgt = a.ret[enc, k[:, None]] / vol_t[:, None]
    tgt = torch.nan_to_num(torch.clamp(tgt, -CLIP, CLIP), nan=0.0).to(torch.float32)
    parts = {
        "known": a.known[kr],
        "unknown": torch.cat([a.x[enc], a.x.new_zeros(B, H, a.x.shape[1])], dim=1),
        "target": torch.cat([tgt, tgt.new_zeros(B, H)], dim=1)[..., None],
    }
    if layout.relative_time_idx:
        rel = torch.arange(-E, H, dtype=torch.float32, device=dev) / E
        parts["rel"] = rel[None, :, None].expand(B, E + H, 1)
    cont = torch.cat([parts[b] for b in layout.blocks], dim=2)
    if a.z is not None:
        dec_y = a.z[r, k]
    else:
        dec_y = torch.zeros(B, H, dtype=torch.float32, device=dev)
    long = torch.int64
    x = {
        "encoder_cat": torch.zeros(B, E, 0, dtype=long, device=dev),
        "encoder_cont": cont[:, :E].contiguous(),
        "encoder_target": tgt,
        "encoder_lengths": torch.full((B,), E, dtype=long, device=dev),
        "decoder_cat": torch.zeros(B, H, 0, dtype=long, device=dev),
        "decoder_cont": cont[:, E:].contiguous(),
        "decoder_target": dec_y,
        "decoder_lengths": torch.full((B,), H, dtype=long, device=dev),
        "decoder_time_idx": t[:, None] + torch.arange(1, H + 1, device=dev),
        "groups": torch.stack([series * n_targets + k, t], dim=1),
        "target_scale": torch.tensor([[0.0, 1.0]], device=dev).repeat(B, 1),
    }
    return x, (dec_y, None)


class WindowBatches(torch.utils.data.Dataset):
    """Indexed by a list of window numbers, it returns their whole batch at once."""

    def __init__(self, a: Arrays, layout: Layout, w: Windows, n_targets: int) -> None:
        dev = a.x.device
        self.a, self.layout, self.n_targets = a, layout, n_targets
        self.series = torch.as_tensor(w.series, dtype=torch.int64, device=dev)
        self.k = torch.as_tensor(w.target, dtype=torch.int64, device=dev)
        self.t = torch.as_tensor(w.t, dtype=torch.int64, device=dev)

    def __len__(self) -> int:
        return len(self.t)

    def __getitem__(self, idx: list[int]) -> Any:
        i = torch.as_tensor(idx, dtype=torch.int64, device=self.t.device)
        return gather(self.a, self.layout, self.series[i], self.k[i], self.t[i], self.n_targets)


def _as_is(batch: Any) -> Any:
    return batch


def loader(batches: WindowBatches, batch_size: int, train: bool) -> DataLoader:
    """Batches in the order TimeSeriesDataSet.to_dataloader would draw them: a
    RandomSampler on the global torch RNG for training (the last short batch dropped, so
    shapes stay fixed), in order for validation."""
    n = len(batches)
    base = RandomSampler(range(n)) if train else SequentialSampler(range(n))
    sampler = BatchSampler(base, batch_size, drop_last=train and n > batch_size)
    return DataLoader(batches, batch_size=None, sampler=sampler, collate_fn=_as_is)


# -- the library's own pipeline over the same windows ----------------------------------------


def reference_frame(data: Dataset, w: Windows, layout: Layout) -> pd.DataFrame:
    """One group per window, rows t-E+1..t+H, built with numpy from the series arrays: the
    frame TimeSeriesDataSet needs to produce the same windows as :func:`gather`. Observed
    inputs past the origin hold their real (future) values here, as they would in any
    frame; the networks do not read them."""
    import pandas as pd

    E, H = layout.encoder_length, layout.horizon
    n, L = len(w), E + H
    K = len(data.spec.targets)
    steps = np.arange(1 - E, H + 1)
    cols: dict[str, np.ndarray] = {}
    known = np.empty((n, L, len(layout.known)))
    unknown = np.empty((n, L, len(layout.unknown)))
    target = np.empty((n, L))
    for i, s in enumerate(data.series):
        m = np.flatnonzero(w.series == i)
        if not len(m):
            continue
        t, k = w.t[m], w.target[m]
        rows = t[:, None] + steps
        known[m] = s.known[rows]
        # a training window's rows all exist: its targets are finite up to t + H
        unknown[m] = s.x[np.minimum(rows, len(s.ts) - 1)]
        ret = one_step_returns(s.level, s.ts, data.spec.bucket_ns)
        target[m, :E] = encoder_target(ret[rows[:, :E], k[:, None]], s.vol[t, k][:, None])
        target[m, E:] = z_targets(s.y[t], s.vol[t])[np.arange(len(m)), k]
    for j, name in enumerate(layout.known):
        cols[name] = known[:, :, j].ravel()
    for j, name in enumerate(layout.unknown):
        cols[name] = unknown[:, :, j].ravel()
    cols[TARGET] = target.ravel()
    cols["win_series"] = np.repeat(w.sid(K), L)
    cols["win_origin"] = np.repeat(w.t, L)
    cols["time_idx"] = (w.t[:, None] + steps).ravel()
    return pd.DataFrame(cols)


def reference_dataset(data: Dataset, w: Windows, layout: Layout) -> TimeSeriesDataSet:
    """pytorch-forecasting's TimeSeriesDataSet over exactly the windows ``w``."""
    return timeseries_dataset(reference_frame(data, w, layout), data.spec, layout.relative_time_idx)
