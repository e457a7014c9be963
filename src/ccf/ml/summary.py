"""A walk-forward report (:func:`ccf.ml.evaluate.score`) read two ways: flat numbers for
MLflow metrics, and the headline table the terminal shows.

Flat names are ``<metric>_h<horizon>`` (``mae_h5``, ``ic_h5``, ``coverage80_h5``), with
the target inserted when a model forecasts several (``mae_close_h5``), plus ``skill``,
``beats_naive`` and ``leak_flags``. Errors and pinball losses are in basis points of
log return, as in the report.
"""

from __future__ import annotations

from typing import Any

NAIVE = "naive"


def flat_metrics(report: dict, label: str) -> dict[str, float]:
    """One model's report as ``name -> number`` (missing values left out)."""
    body = report["models"][label]
    out: dict[str, Any] = {
        "skill": body.get("skill"),
        "beats_naive": float(bool(body.get("beats_naive"))),
        "leak_flags": float(len(body.get("flags", []))),
    }
    loss = report["meta"].get("promote_on", "pinball")
    targets = body.get("metrics", {})
    for target, by_h in targets.items():
        for h, cell in by_h.items():
            sfx = f"_{target}_h{h}" if len(targets) > 1 else f"_h{h}"
            d = cell.get("direction", {})
            out["n" + sfx] = cell.get("n")
            out["ic" + sfx] = cell.get("ic")
            out["dir_acc" + sfx] = d.get("accuracy")
            out["dir_breakeven" + sfx] = d.get("breakeven")
            for name, cov in cell.get("coverage", {}).items():
                out[f"coverage{name}{sfx}"] = cov.get("overall")
            out["mae" + sfx] = cell.get("mae_bps")
            out["rmse" + sfx] = cell.get("rmse_bps")
            out["mase" + sfx] = cell.get("mase")
            out["pinball" + sfx] = (cell.get("pinball_bps") or {}).get("mean")
            dm = body.get("dm", {}).get(loss, {}).get(target, {}).get(h)
            if dm:
                out["dm_stat" + sfx] = dm.get("stat")
                out["dm_p_better" + sfx] = dm.get("p_better_adj")
            sig = body.get("signal", {}).get(target, {}).get(h)
            if sig:
                out["signal_total_bps" + sfx] = sig.get("total_bps")
    return {k: float(v) for k, v in out.items() if isinstance(v, int | float)}


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def _verdict(dm: dict | None, alpha: float) -> str:
    if not dm or dm.get("p_two_adj") is None:
        return "-"
    if dm["p_better_adj"] is not None and dm["p_better_adj"] < alpha:
        return f"better p={dm['p_better_adj']:.3g}"
    if dm["p_two_adj"] < alpha and (dm.get("stat") or 0) > 0:
        return f"WORSE p={dm['p_two_adj']:.3g}"
    return f"no diff p={dm['p_two_adj']:.3g}"


def headline(report: dict, labels: list[str] | None = None) -> str:
    """Per model and horizon: rank IC, directional accuracy against the break-even hit
    rate after fees, 80% (widest) coverage, MASE, the DM verdict and leak flags; then each
    model's skill and whether it beats naive."""
    meta = report["meta"]
    alpha = meta.get("alpha", 0.05)
    loss = meta.get("promote_on", "pinball")
    labels = labels or list(report["models"])
    head = (
        f"{'model':<22} {'target':<8} {'h':>4} {'n':>7} {'IC':>7} {'dir':>6} {'b/e':>6} "
        f"{'cov':>11} {'MASE':>7}  {'DM vs naive (' + loss + ')':<24} flags"
    )
    lines = [
        f"walk-forward {meta.get('from')} .. {meta.get('to')}  origins={meta.get('origins')} "
        f"step={meta.get('step')} symbols={','.join(meta.get('symbols', []))} "
        f"refits={meta.get('refits')}",
        head,
        "-" * len(head),
    ]
    for label in labels:
        body = report["models"][label]
        flagged = {(f["target"], str(f["horizon"])) for f in body.get("flags", [])}
        for target, by_h in body.get("metrics", {}).items():
            for h, cell in by_h.items():
                d = cell.get("direction", {})
                cov = cell.get("coverage", {})
                wide = max(cov, key=lambda k: cov[k].get("nominal", 0)) if cov else None
                covtxt = f"{_fmt(cov[wide].get('overall'), '.2f')}/{wide}%" if wide else "-"
                dm = body.get("dm", {}).get(loss, {}).get(target, {}).get(h)
                verdict = "(yardstick)" if label == NAIVE else _verdict(dm, alpha)
                lines.append(
                    f"{label:<22} {target:<8} {h:>4} {cell.get('n', 0):>7} "
                    f"{_fmt(cell.get('ic')):>7} {_fmt(d.get('accuracy')):>6} "
                    f"{_fmt(d.get('breakeven')):>6} {covtxt:>11} {_fmt(cell.get('mase')):>7}  "
                    f"{verdict:<24} {'LEAK?' if (target, h) in flagged else ''}"
                )
    lines.append("")
    for label in labels:
        body = report["models"][label]
        if label == NAIVE:
            continue
        lines.append(
            f"{label}: skill {_fmt(body.get('skill'), '+.4f')} (1 - pinball/naive pinball), "
            f"beats naive: {'yes' if body.get('beats_naive') else 'no'}"
            + (f", {len(body['flags'])} leak flag(s)" if body.get("flags") else "")
        )
    return "\n".join(lines)
