"""A deep network served through ONNX Runtime: the live path's forward pass.

One TFT window costs about 6 ms in eager PyTorch, most of it Python dispatch across
the network's small modules; the same graph in ONNX Runtime runs in well under one.
:func:`export` traces the network once (``torch.onnx.export``, batch dimension
dynamic), opens an in-memory ONNX Runtime session and checks it against the eager
network on a synthetic batch and on a single window. Anything that goes wrong there
(an operator the exporter lacks, a runtime that refuses the graph, outputs that differ
by more than ``atol``) is logged as a warning and returns ``None``: the caller keeps
the eager network, which stays the reference.

The traced graph fixes what our windows never vary: every window is full length
(``encoder_length`` and ``max_horizon`` steps), which is what
:func:`ccf.ml.models.windows.gather` builds.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ccf.ml.models import windows as W

if TYPE_CHECKING:
    from pytorch_forecasting.models.base import BaseModel

log = logging.getLogger(__name__)

ATOL = 1e-5
"""Largest difference from the eager network's output the exported one may show."""
OPSET = 17


@dataclass(frozen=True)
class OnnxNet:
    """An ONNX Runtime session for one network: ``x`` (the batch dict) -> predictions.

    ``window`` set: the graph was traced for that many windows (the network froze the
    batch size, as NHiTS's reshapes do), so a batch runs that many at a time.
    """

    session: Any  # onnxruntime.InferenceSession
    inputs: tuple[str, ...]  # the batch keys the graph reads (the tracer drops unused ones)
    window: int | None = None

    def __call__(self, x: dict[str, torch.Tensor]) -> np.ndarray:
        feed = {n: x[n].detach().cpu().numpy() for n in self.inputs}
        if self.window is None:
            return self.session.run(None, feed)[0]
        n, w = len(x["encoder_lengths"]), self.window
        parts = [
            self.session.run(None, {k: v[lo : lo + w] for k, v in feed.items()})[0]
            for lo in range(0, n, w)
        ]
        return np.concatenate(parts)


class _Forward(torch.nn.Module):
    """The network with positional tensor inputs and one output, as the exporter wants."""

    def __init__(self, net: BaseModel, names: tuple[str, ...]) -> None:
        super().__init__()
        self.net, self.names = net, names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.net(dict(zip(self.names, tensors, strict=True)))["prediction"]


def _ort_errors(ort: Any) -> tuple[type[Exception], ...]:
    """What ONNX Runtime raises for a graph it cannot load (not ``RuntimeError``s)."""
    state = ort.capi.onnxruntime_pybind11_state
    names = ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NotImplemented")
    return tuple(getattr(state, n) for n in names if hasattr(state, n))


def sample_batch(layout: W.Layout, n_targets: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Two full windows of seeded random inputs in the layout's shapes: the trace input
    and the first check (random, not zeros, so a wrongly frozen input shows)."""
    g = torch.Generator().manual_seed(seed)
    E, H = layout.encoder_length, layout.horizon
    R, Rk = E + 1, E + H + 1
    arrays = W.Arrays(
        x=torch.randn(R, len(layout.unknown), generator=g),
        known=torch.randn(Rk, len(layout.known), generator=g),
        ret=torch.randn(R, n_targets, generator=g, dtype=torch.float64) * 1e-3,
        vol=torch.full((R, n_targets), 1e-3, dtype=torch.float64),
        z=None,
        row0=torch.zeros(1, dtype=torch.int64),
        krow0=torch.zeros(1, dtype=torch.int64),
    )
    series = torch.zeros(2, dtype=torch.int64)
    k = torch.tensor([0, n_targets - 1])
    t = torch.tensor([E - 1, E])
    x, _ = W.gather(arrays, layout, series, k, t, n_targets)
    return x


def export(
    net: BaseModel,
    layout: W.Layout,
    n_targets: int,
    *,
    threads: int = 1,
    kind: str = "deep",
    atol: float = ATOL,
    opset: int = OPSET,
) -> OnnxNet | None:
    """``net`` as an ONNX Runtime session, or ``None`` (with a warning) when it cannot be
    exported or its outputs differ from eager by more than ``atol``.

    First traced with a free batch dimension; when that graph fails on another batch
    size, traced again for one window."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        log.warning("part=ml model=%s onnx: onnxruntime missing (%s): serving eager", kind, e)
        return None
    errors = (RuntimeError, TypeError, ValueError, *_ort_errors(ort))
    x = sample_batch(layout, n_targets)
    names = tuple(x)
    fwd = _Forward(net, names).eval()
    with torch.inference_mode():
        want = fwd(*(x[n] for n in names)).float().numpy()
    why = ""
    for window in (None, 1):
        trace = x if window is None else {n: v[:window] for n, v in x.items()}
        try:
            onnx_net = _session(ort, fwd, trace, names, window, threads, opset)
        except errors as e:
            log.warning(
                "part=ml model=%s onnx export failed (%s: %s): serving eager",
                kind,
                type(e).__name__,
                e,
            )
            return None
        try:  # two windows, then one: the batch dimension must be what it claims
            got = [onnx_net(x), onnx_net({n: v[:1] for n, v in x.items()})]
        except errors as e:
            why = f"{type(e).__name__}: {e}"
            log.info("part=ml model=%s onnx graph fixed its batch size (%s)", kind, why)
            continue
        worst = max(float(np.abs(got[0] - want).max()), float(np.abs(got[1] - want[:1]).max()))
        if not worst <= atol:
            log.warning(
                "part=ml model=%s onnx output differs from eager by %.3g > %.3g: serving eager",
                kind,
                worst,
                atol,
            )
            return None
        log.info(
            "part=ml model=%s onnx runtime path ready (windows per run %s, max diff %.2g)",
            kind,
            window or "any",
            worst,
        )
        return onnx_net
    log.warning("part=ml model=%s onnx graph failed to run (%s): serving eager", kind, why)
    return None


def _session(
    ort: Any,
    fwd: _Forward,
    x: dict[str, torch.Tensor],
    names: tuple[str, ...],
    window: int | None,
    threads: int,
    opset: int,
) -> OnnxNet:
    buf = io.BytesIO()
    free = window is None
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on Python-side branches
        torch.onnx.export(
            fwd,
            tuple(x[n] for n in names),
            buf,
            input_names=list(names),
            output_names=["prediction"],
            dynamic_axes={**{n: {0: "batch"} for n in names}, "prediction": {0: "batch"}}
            if free
            else None,
            opset_version=opset,
            dynamo=False,  # the TorchScript tracer: the exporter checked on TFT and NHiTS
        )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
    return OnnxNet(session, tuple(i.name for i in session.get_inputs()), window)
