"""The evaluation report on disk: report.json, PNG charts, and one self-contained HTML page.

The page leads with what a forecast is worth to a trader and what is hard to
fake: rank IC, directional accuracy beside the break-even hit rate after fees,
and interval coverage by volatility regime; then errors, Diebold-Mariano
verdicts and the signal. Leak flags sit at the top in a warning box. Charts are
drawn on bare matplotlib ``Figure`` objects with the Agg canvas (no pyplot, so
no global figure state) and embedded as base64 PNG, so the page travels alone.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ccf.ml import metrics as m
from ccf.ml.evaluate import NAIVE, Evaluation
from ccf.ml.summary import breakeven_text

log = logging.getLogger(__name__)

FAN_ORIGINS = 240  # origins of the test period shown in the forecast fans
_COLORS = ("#7f7f7f", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def write_report(report: dict, ev: Evaluation, out_dir: Path) -> list[Path]:
    """report.json, one PNG per chart and report.html (charts embedded) in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "report.json"]
    paths[0].write_text(json.dumps(report, indent=1, allow_nan=False))
    charts = {
        "calibration": _calibration(report),
        **{f"fan_{label}": _fan(ev, label) for label in report["models"]},
        "errors": _errors(report),
        "skill_over_time": _skill_over_time(report),
        "signal": _signal(report),
    }
    images: dict[str, bytes] = {}
    for name, fig in charts.items():
        path = out_dir / f"{_safe(name)}.png"
        FigureCanvasAgg(fig).print_png(str(path))
        images[name] = path.read_bytes()
        paths.append(path)
    page = out_dir / "report.html"
    page.write_text(_html(report, images))
    paths.append(page)
    log.info("part=ml evaluate report=%s files=%d", page, len(paths))
    return paths


# -- charts ------------------------------------------------------------------------------


def _grid(report: dict, title: str, width: float = 4.6) -> tuple[Figure, np.ndarray]:
    """A figure with one panel per target (rows) and horizon (columns)."""
    targets, horizons = report["meta"]["targets"], report["meta"]["horizons"]
    fig = Figure(figsize=(width * len(horizons), 3.4 * len(targets)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(targets), len(horizons), squeeze=False))
    fig.suptitle(title)
    for k, t in enumerate(targets):
        for j, h in enumerate(horizons):
            axes[k, j].set_title(f"{t}, h = {h}", fontsize=10)
            axes[k, j].grid(alpha=0.3)
    return fig, axes


def _color(report: dict, label: str) -> str:
    return _COLORS[list(report["models"]).index(label) % len(_COLORS)]


def _style(report: dict, label: str) -> dict[str, Any]:
    """Line style per model; naive dashed, so a model drawn over it does not hide it."""
    return {"color": _color(report, label), "linestyle": "--" if label == NAIVE else "-"}


def _fan(ev: Evaluation, label: str) -> Figure:
    """Central intervals as bands and the median against the realized return, for the first
    FAN_ORIGINS origins of the first symbol."""
    spec = ev.spec
    q = np.asarray(spec.quantiles)
    mid = int(np.argmin(np.abs(q - 0.5)))
    sym = ev.symbols[0] if len(ev.symbols) else ""
    rows = np.flatnonzero(ev.symbols == sym)[:FAN_ORIGINS]
    x = ev.ts[rows].astype("datetime64[ns]")
    f = ev.forecasts[label][rows] * m.BPS
    y = ev.truth[rows] * m.BPS
    report_like = {"meta": {"targets": spec.targets, "horizons": spec.horizons}}
    fig, axes = _grid(report_like, f"{label}: forecast intervals vs realized return ({sym}, bps)")
    ivals = sorted(m.intervals(q), key=lambda v: -v.nominal)
    for k in range(len(spec.targets)):
        for j in range(len(spec.horizons)):
            ax = axes[k, j]
            for i, iv in enumerate(ivals):
                ax.fill_between(
                    x,
                    f[:, k, j, iv.lo],
                    f[:, k, j, iv.hi],
                    color="#1f77b4",
                    alpha=0.18 + 0.2 * i,
                    linewidth=0,
                    label=f"{iv.label} %",
                )
            ax.plot(x, f[:, k, j, mid], color="#1f77b4", linewidth=1, label="median")
            ax.plot(x, y[:, k, j], ".", color="black", markersize=2.5, label="realized")
            ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    axes[0, 0].legend(fontsize=7, loc="upper left")
    return fig


def _errors(report: dict) -> Figure:
    """MAE and mean pinball loss by horizon, one line per model (per target)."""
    meta = report["meta"]
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax_mae, ax_pin = fig.subplots(1, 2)
    for label, body in report["models"].items():
        for t in meta["targets"]:
            cells = [body["metrics"][t][str(h)] for h in meta["horizons"]]
            name = label if len(meta["targets"]) == 1 else f"{label} {t}"
            kw = {"marker": "o", "label": name, **_style(report, label)}
            ax_mae.plot(meta["horizons"], [_num(c["mae_bps"]) for c in cells], **kw)
            ax_pin.plot(meta["horizons"], [_num(c["pinball_bps"]["mean"]) for c in cells], **kw)
    for ax, title in ((ax_mae, "MAE of the median (bps)"), (ax_pin, "mean pinball loss (bps)")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("horizon (buckets)")
        ax.set_xticks(meta["horizons"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("error by horizon")
    return fig


def _calibration(report: dict) -> Figure:
    """Coverage of each central interval overall and by volatility regime, against nominal."""
    fig, axes = _grid(report, "interval coverage by volatility regime (dashed: nominal)")
    groups = ("overall", *m.REGIMES)
    labels = list(report["models"])
    width = 0.8 / max(1, len(labels))
    for k, t in enumerate(report["meta"]["targets"]):
        for j, h in enumerate(report["meta"]["horizons"]):
            ax = axes[k, j]
            for i, label in enumerate(labels):
                cov = report["models"][label]["metrics"][t][str(h)]["coverage"]
                for n_iv, (name, row) in enumerate(cov.items()):
                    xs = np.arange(len(groups)) + (i - (len(labels) - 1) / 2) * width
                    ax.plot(
                        xs,
                        [_num(row[g]) for g in groups],
                        "os^D"[n_iv % 4],
                        color=_color(report, label),
                        label=f"{label} {name} %" if k == j == 0 else None,
                    )
                    ax.axhline(row["nominal"], color="#999999", linestyle="--", linewidth=0.8)
            ax.set_xticks(range(len(groups)), groups)
            ax.set_ylim(0, 1)
    axes[0, 0].legend(fontsize=7, loc="lower left")
    return fig


def _skill_over_time(report: dict) -> Figure:
    fig, axes = _grid(
        report,
        "pinball skill vs naive over time blocks (> 0: better than naive)\nyardstick: "
        + _wrap(report["meta"].get("yardstick", "naive"), 110),
    )
    for k, t in enumerate(report["meta"]["targets"]):
        for j, h in enumerate(report["meta"]["horizons"]):
            ax = axes[k, j]
            ax.axhline(0, color="black", linewidth=0.8)
            for label, body in report["models"].items():
                if label == NAIVE:
                    continue  # the yardstick against itself is 0 by construction
                b = body["skill_over_time"][t][str(h)]
                x = [_time(s) for s in b["from"]]
                ax.plot(
                    x,
                    [_num(v) for v in b["pinball_skill"]],
                    marker="o",
                    label=label,
                    **_style(report, label),
                )
            ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    if len(report["models"]) > 1:  # naive alone draws no line against itself
        axes[0, 0].legend(fontsize=7)
    return fig


def _signal(report: dict) -> Figure:
    meta = report["meta"]
    fig, axes = _grid(
        report,
        f"threshold signal: cumulative return after {meta['fee_bps']:g} bps per trade (bps)",
    )
    for k, t in enumerate(meta["targets"]):
        for j, h in enumerate(meta["horizons"]):
            ax = axes[k, j]
            ax.axhline(0, color="black", linewidth=0.8)
            for label, body in report["models"].items():
                c = body["signal"][t][str(h)]["curve"]
                x = [_time(s) for s in c["ts"]]
                ax.plot(x, [_num(v) for v in c["bps"]], label=label, **_style(report, label))
            ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    axes[0, 0].legend(fontsize=7)
    return fig


# -- page --------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:13px}
th{background:#f2f2f2} td.l,th.l{text-align:left}
.warn{background:#fff3cd;border:2px solid #d39e00;padding:0.8em 1.2em;margin:1em 0}
.good{color:#1a7f37;font-weight:bold} .bad{color:#b00020}
img{max-width:100%;margin:0.5em 0 1.5em;display:block}
.note{color:#555;font-size:13px}
"""


def _html(report: dict, images: dict[str, bytes]) -> str:
    meta = report["meta"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>CCF evaluation {_e(meta['feature_set'])}</title><style>{_CSS}</style></head>",
        "<body><h1>Walk-forward evaluation</h1>",
        f"<p>{_e(meta['feature_set'])} v{_e(meta['feature_version'])}, "
        f"{_e(', '.join(meta['symbols']))}, targets {_e(', '.join(meta['targets']))}, "
        f"{meta['origins']} origins from {_e(meta['from'])} to {_e(meta['to'])}, every "
        f"{meta['step']} bucket(s) of {meta['bucket_s']:g} s; refit every "
        f"{meta['refit_every']} steps (refits: "
        f"{_e(', '.join(f'{k} {v}' for k, v in meta['refits'].items()))}); fee "
        f"{meta['fee_bps']:g} bps per trade, signal threshold {meta['threshold_bps']:g} bps.</p>",
        f"<p>Yardstick: {_e(meta.get('yardstick', 'naive'))}. One Holm family per loss of "
        f"{_e((meta.get('tests') or {}).get('holm_family_size', '?'))} tests (every model x "
        "target x horizon against naive, and the head-to-head pairs).</p>",
        _flags(report),
        "<h2>Ranking, direction, calibration</h2>",
        "<p class='note'>IC: Spearman rank correlation of the median forecast with the "
        "outcome. Direction: hit rate where move and forecast are both non-zero; break-even: "
        "the hit rate needed to cover the fee with the model's calls, or (in brackets) with "
        "every non-zero outcome; above 1 no hit rate pays. Coverage of central intervals "
        "overall and in the low / mid / high volatility terciles of the test period.</p>",
        _summary(report),
        _img(images, "calibration"),
        "<h2>Verdict</h2>",
        _verdicts(report),
        "<h2>Errors</h2>",
        "<p class='note'>bps of log return. MASE: MAE over the naive forecast's MAE on the "
        "same origins.</p>",
        _errors_table(report),
        _img(images, "errors"),
        "<h2>Diebold-Mariano tests against naive</h2>",
        f"<p class='note'>Newey-West variance with ceil(h/step)-1 lags, Harvey-Leybourne-"
        f"Newbold correction, Student-t; p-values Holm-corrected over models x targets x "
        f"horizons (and head-to-head pairs) per loss; alpha {meta['alpha']:g}. Negative "
        "statistic: lower loss than naive.</p>",
        _dm_table(report),
        "<h2>Skill over time</h2>",
        _img(images, "skill_over_time"),
        "<h2>Signal</h2>",
        "<p class='note'>BUY when the median forecast is above the threshold, SELL below "
        "minus it; each trade pays the fee. Overlapping trades are summed.</p>",
        _signal_table(report),
        _img(images, "signal"),
        "<h2>Forecast fans</h2>",
        *[_img(images, f"fan_{label}") for label in report["models"]],
        "</body></html>",
    ]
    return "\n".join(parts)


def _flags(report: dict) -> str:
    rows = [
        f"<li><b>{_e(label)}</b> {_e(f['target'])} h={f['horizon']}: {_e(f['message'])} "
        f"(MAE ratio {_f(f['mae_ratio'], 4)}, direction {_f(f['direction'], 3)})</li>"
        for label, body in report["models"].items()
        for f in body["flags"]
    ]
    if not rows:
        return ""
    return (
        "<div class='warn'><b>Warning: results too good for candle features.</b> Measured "
        "before this project, the best models reached MAE ratios of 0.996-1.003 and hit rates "
        "of 0.50-0.53.<ul>" + "".join(rows) + "</ul></div>"
    )


def _verdicts(report: dict) -> str:
    meta = report["meta"]
    rows = []
    for label, body in report["models"].items():
        if label == NAIVE:
            verdict = "yardstick"
        elif body["beats_naive"]:
            verdict = "<span class='good'>beats naive</span>"
        else:
            verdict = "<span class='bad'>does not beat naive</span>"
        rows.append(
            f"<tr><td class='l'>{_e(label)}</td><td>{_f(body['skill'], 4)}</td>"
            f"<td class='l'>{verdict}</td><td>{len(body['flags'])}</td></tr>"
        )
    return (
        f"<table><tr><th class='l'>model</th><th>pinball skill</th><th class='l'>verdict "
        f"({_e(meta['promote_on'])} loss)</th><th>leak flags</th></tr>{''.join(rows)}</table>"
    )


def _cells(report: dict):
    for label, body in report["models"].items():
        for t, by_h in body["metrics"].items():
            for h, c in by_h.items():
                yield label, t, h, c


def _summary(report: dict) -> str:
    ivs = list(next(_cells(report))[3]["coverage"])
    head = "".join(f"<th>cov {iv} % (low/mid/high)</th>" for iv in ivs)
    rows = []
    for label, t, h, c in _cells(report):
        d = c["direction"]
        cov = "".join(
            f"<td>{_f(v['overall'], 3)} ({_f(v['low'], 2)}/{_f(v['mid'], 2)}/"
            f"{_f(v['high'], 2)})</td>"
            for v in c["coverage"].values()
        )
        rows.append(
            f"<tr><td class='l'>{_e(label)}</td><td class='l'>{_e(t)}</td><td>{h}</td>"
            f"<td>{c['n']}</td><td>{_f(c['ic'], 4)}</td><td>{_f(d['accuracy'], 4)} "
            f"(n={d['n']})</td><td>{_e(breakeven_text(d['breakeven']))} "
            f"({_e(breakeven_text(report['meta']['breakeven'][t][h]))})</td>{cov}</tr>"
        )
    return (
        "<table><tr><th class='l'>model</th><th class='l'>target</th><th>h</th><th>n</th>"
        f"<th>IC</th><th>direction</th><th>break-even</th>{head}</tr>{''.join(rows)}</table>"
    )


def _errors_table(report: dict) -> str:
    rows = [
        f"<tr><td class='l'>{_e(label)}</td><td class='l'>{_e(t)}</td><td>{h}</td>"
        f"<td>{_f(c['mae_bps'], 3)}</td><td>{_f(c['rmse_bps'], 3)}</td><td>{_f(c['mase'], 4)}"
        f"</td><td>{_f(c['pinball_bps']['mean'], 3)}</td></tr>"
        for label, t, h, c in _cells(report)
    ]
    return (
        "<table><tr><th class='l'>model</th><th class='l'>target</th><th>h</th><th>MAE</th>"
        f"<th>RMSE</th><th>MASE</th><th>pinball</th></tr>{''.join(rows)}</table>"
    )


def _dm_table(report: dict) -> str:
    alpha = report["meta"]["alpha"]
    rows = []
    for label, body in report["models"].items():
        for loss, by_t in body["dm"].items():
            for t, by_h in by_t.items():
                for h, r in by_h.items():
                    if r["p_better_adj"] is not None and r["p_better_adj"] < alpha:
                        v = "<span class='good'>better</span>"
                    elif (
                        r["p_two_adj"] is not None
                        and r["p_two_adj"] < alpha
                        and r["mean_diff_bps"] > 0
                    ):
                        v = "<span class='bad'>worse</span>"
                    else:
                        v = "no difference"
                    rows.append(
                        f"<tr><td class='l'>{_e(label)}</td><td class='l'>{_e(loss)}</td>"
                        f"<td class='l'>{_e(t)}</td><td>{h}</td><td>{_f(r['stat'], 3)}</td>"
                        f"<td>{_f(r['mean_diff_bps'], 4)}</td><td>{_f(r['p_better'], 4)}</td>"
                        f"<td>{_f(r['p_better_adj'], 4)}</td><td>{_f(r['p_two_adj'], 4)}</td>"
                        f"<td>{r['lags']}</td><td class='l'>{v}</td></tr>"
                    )
    if not rows:
        return "<p>No model besides naive was evaluated.</p>"
    return (
        "<table><tr><th class='l'>model</th><th class='l'>loss</th><th class='l'>target</th>"
        "<th>h</th><th>DM</th><th>mean diff (bps)</th><th>p better</th><th>p better (Holm)"
        "</th><th>p two-sided (Holm)</th><th>lags</th><th class='l'>verdict</th></tr>"
        f"{''.join(rows)}</table>"
    )


def _signal_table(report: dict) -> str:
    rows = [
        f"<tr><td class='l'>{_e(label)}</td><td class='l'>{_e(t)}</td><td>{h}</td>"
        f"<td>{s['buy']}</td><td>{s['sell']}</td><td>{s['hold']}</td>"
        f"<td>{_f(s['hit_buy'], 3)}</td><td>{_f(s['hit_sell'], 3)}</td>"
        f"<td>{_f(s['mean_bps'], 2)}</td><td>{_f(s['total_bps'], 1)}</td></tr>"
        for label, body in report["models"].items()
        for t, by_h in body["signal"].items()
        for h, s in by_h.items()
    ]
    return (
        "<table><tr><th class='l'>model</th><th class='l'>target</th><th>h</th><th>BUY</th>"
        "<th>SELL</th><th>HOLD</th><th>hit BUY</th><th>hit SELL</th><th>mean / trade (bps)"
        f"</th><th>total (bps)</th></tr>{''.join(rows)}</table>"
    )


def _img(images: dict[str, bytes], name: str) -> str:
    data = base64.b64encode(images[name]).decode()
    return f"<img alt='{_e(name)}' src='data:image/png;base64,{data}'>"


def _e(x: Any) -> str:
    return html.escape(str(x))


def _f(v: float | None, digits: int) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _num(v: float | None) -> float:
    return np.nan if v is None else v


def _time(iso: str) -> np.datetime64:
    return np.datetime64(datetime.fromisoformat(iso).replace(tzinfo=None), "ns")


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
