"""A walk-forward report (:func:`ccf.ml.evaluate.score`) read two ways: flat numbers for
MLflow metrics, and the headline table the terminal shows.

Flat names are ``<metric>_h<horizon>`` (``mae_h5``, ``ic_h5``, ``coverage80_h5``), with
the target inserted when a model forecasts several (``mae_close_h5``), plus ``skill``,
``beats_naive`` and ``leak_flags``. Errors and pinball losses are in basis points of
log return, as in the report. Coverage by volatility tercile is
``coverage<name>_<low|mid|high>_h<h>``.
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
        "range_flagged_share": (body.get("range_check") or {}).get("share"),
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
                for regime in ("low", "mid", "high"):
                    out[f"coverage{name}_{regime}{sfx}"] = cov.get(regime)
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


NO_PAY = "no hit rate pays after fees"


def breakeven_text(v: float | None) -> str:
    """A break-even hit rate as shown: above 1 no hit rate can pay the fee."""
    if v is None:
        return "-"
    return NO_PAY if v > 1 else format(v, ".3f")


def _verdict(dm: dict | None, alpha: float) -> str:
    if not dm or dm.get("p_two_adj") is None:
        return "-"
    if dm["p_better_adj"] is not None and dm["p_better_adj"] < alpha:
        return f"better p={dm['p_better_adj']:.3g}"
    if dm["p_two_adj"] < alpha and (dm.get("stat") or 0) > 0:
        return f"WORSE p={dm['p_two_adj']:.3g}"
    return f"no diff p={dm['p_two_adj']:.3g}"


def _coverage(cov: dict, name: str) -> str:
    """``all (low/mid/high)`` of one interval: coverage overall and by vol tercile."""
    row = cov.get(name)
    if not row:
        return "-"
    parts = "/".join(_fmt(row.get(r), ".2f") for r in ("low", "mid", "high"))
    return f"{_fmt(row.get('overall'), '.2f')} ({parts})"


def headline(report: dict, labels: list[str] | None = None) -> str:
    """Per model and horizon: rank IC, directional accuracy against the break-even hit
    rate after fees, 50 % and 80 % coverage overall and by volatility tercile (low/mid/
    high), mean pinball loss, MASE to 4 decimals, the DM verdicts against naive on the
    primary loss and on absolute error, and leak flags; then each model's skill and
    whether it beats naive, and what the yardstick was."""
    meta = report["meta"]
    alpha = meta.get("alpha", 0.05)
    loss = meta.get("promote_on", "pinball")
    labels = labels or list(report["models"])
    width = max([22, *(len(label) + 1 for label in labels)])
    head = (
        f"{'model':<{width}} {'target':<8} {'h':>4} {'n':>7} {'IC':>7} {'dir':>6} {'b/e':>6} "
        f"{'cov50 (lo/mid/hi)':>23} {'cov80 (lo/mid/hi)':>23} {'pinball':>8} {'MASE':>7}  "
        f"{'DM vs naive: ' + loss:<22} {'MAE':<20} flags"
    )
    lines = [
        f"walk-forward {meta.get('from')} .. {meta.get('to')}  origins={meta.get('origins')} "
        f"step={meta.get('step')} symbols={','.join(meta.get('symbols', []))} "
        f"refits={meta.get('refits')}",
        f"yardstick: {meta.get('yardstick', 'naive')}; Holm over "
        f"{(meta.get('tests') or {}).get('holm_family_size', '?')} tests per loss",
        head,
        "-" * len(head),
    ]
    no_pay = False
    for label in labels:
        body = report["models"][label]
        flagged = {(f["target"], str(f["horizon"])) for f in body.get("flags", [])}
        for target, by_h in body.get("metrics", {}).items():
            for h, cell in by_h.items():
                d = cell.get("direction", {})
                cov = cell.get("coverage", {})
                be = d.get("breakeven")
                no_pay = no_pay or (be is not None and be > 1)
                betxt = "none*" if be is not None and be > 1 else _fmt(be)
                dms = body.get("dm", {})
                if label == NAIVE:
                    verdict, mae = "(yardstick)", ""
                else:
                    verdict = _verdict(dms.get(loss, {}).get(target, {}).get(h), alpha)
                    mae = _verdict(dms.get("absolute", {}).get(target, {}).get(h), alpha)
                pin = (cell.get("pinball_bps") or {}).get("mean")
                lines.append(
                    f"{label:<{width}} {target:<8} {h:>4} {cell.get('n', 0):>7} "
                    f"{_fmt(cell.get('ic')):>7} {_fmt(d.get('accuracy')):>6} {betxt:>6} "
                    f"{_coverage(cov, '50'):>23} {_coverage(cov, '80'):>23} "
                    f"{_fmt(pin, '.3f'):>8} {_fmt(cell.get('mase'), '.4f'):>7}  "
                    f"{verdict:<22} {mae:<20} {'LEAK?' if (target, h) in flagged else ''}"
                )
    if no_pay:
        lines.append(f"* b/e none: {NO_PAY} (the fee exceeds the mean move at that horizon)")
    lines.append("pinball: bps of log return, mean over quantiles; coverage by vol tercile")
    lines.append("")
    for label in labels:
        body = report["models"][label]
        if label == NAIVE:
            continue
        rc = body.get("range_check") or {}
        lines.append(
            f"{label}: skill {_fmt(body.get('skill'), '+.4f')} (1 - pinball/naive pinball), "
            f"beats naive: {'yes' if body.get('beats_naive') else 'no'}"
            + (f", {len(body['flags'])} leak flag(s)" if body.get("flags") else "")
            + (
                f", INPUTS OUT OF RANGE at {rc['flagged']} of {rc['origins']} origins "
                f"({', '.join(sorted(rc['columns']))})"
                if rc.get("flagged")
                else ""
            )
        )
    return "\n".join(lines)
