"""Issue 13: honest figures on data the models have never seen.

For each shipped candle file (BTC, ETH): the first two thirds train (``ccf train``:
naive, LightGBM and a small NHiTS, registered), the last third is "new data", scored
with ``ccf evaluate --test all`` on every registered model at once (one report, one
Holm family; the registered naive is the yardstick). The same is then scored with the
online naive yardstick (no registered naive), and the old way, the refitted tiny split
(``ml.split.train=0.01``), is shown to be refused.

Prints, per model and horizon, MASE (4 decimals), pinball, the DM verdicts (primary loss
and MAE) under the one correction, IC, directional accuracy against break-even, and 50 %
and 80 % coverage by volatility tercile, as Markdown for docs/evaluation.md.

    python bench/bench_evaluate_new_data.py --out /tmp/ccf-eval [--models naive,lightgbm,nhits]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import pandas as pd

from ccf.config import load_settings, shared_dir
from ccf.ml import pipeline, promotion, sources
from ccf.ml.prepare import MLError, Source
from ccf.ml.summary import breakeven_text

KLINES = shared_dir() / "data" / "klines"
FILES = {
    "btcusdt": KLINES / "BTCUSDT-1m-2026-03-23_2026-04-11.csv.gz",
    "ethusdt": KLINES / "ETHUSDT-1m-2026-03-23_2026-04-11.csv.gz",
}
QUICK = [
    "ml.train.num_threads=1",
    "ml.train.progress_bar=false",
    "ml.train.max_epochs=4",
    "ml.train.patience=2",
    "ml.params.nhits.hidden_size=32",
    "ml.params.tft.hidden_size=8",
]


def split_file(path: Path, out: Path) -> tuple[Path, Path]:
    df = pd.read_csv(path)
    cut = len(df) * 2 // 3
    sym = path.name.split("-")[0]
    old, new = out / f"{sym}-1m-train.csv.gz", out / f"{sym}-1m-new.csv.gz"
    df.iloc[:cut].to_csv(old, index=False)
    df.iloc[cut:].to_csv(new, index=False)
    return old, new


def rows_md(report: dict) -> list[str]:
    meta = report["meta"]
    alpha, loss = meta["alpha"], meta["promote_on"]
    out = []
    for label, body in report["models"].items():
        for h, c in body["metrics"][meta["targets"][0]].items():
            dm = body["dm"]
            if label == "naive":
                v_pin = v_mae = "yardstick"
            else:
                v_pin = verdict(dm[loss][meta["targets"][0]][h], alpha)
                v_mae = verdict(dm["absolute"][meta["targets"][0]][h], alpha)
            d = c["direction"]
            cov = c["coverage"]
            out.append(
                f"| {label} | {h} | {c['mase']:.4f} | {c['pinball_bps']['mean']:.3f} | {v_pin} | "
                f"{v_mae} | {fmt(c['ic'], '.3f')} | {fmt(d['accuracy'], '.3f')} | "
                f"{breakeven_text(d['breakeven'])} | {terciles(cov['50'])} | "
                f"{terciles(cov['80'])} |"
            )
    return out


def verdict(r: dict, alpha: float) -> str:
    if r["p_better_adj"] is not None and r["p_better_adj"] < alpha:
        return f"better (p={r['p_better_adj']:.2g})"
    if r["p_two_adj"] is not None and r["p_two_adj"] < alpha and r["mean_diff_bps"] > 0:
        return f"WORSE (p={r['p_two_adj']:.2g})"
    return f"no diff (p={r['p_two_adj']:.2g})"


def fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def terciles(row: dict) -> str:
    return (
        f"{fmt(row['overall'], '.3f')} ({fmt(row['low'], '.2f')}/{fmt(row['mid'], '.2f')}/"
        f"{fmt(row['high'], '.2f')})"
    )


HEAD = (
    "| model | h | MASE | pinball bps | DM pinball | DM MAE | IC | dir acc | break-even | "
    "cov 50 % (low/mid/high) | cov 80 % (low/mid/high) |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)


def quote_units(settings, uris: tuple[str, ...], new: Path, out: Path) -> dict:
    """The new file with volume in quote units (volume * close), scored like the base
    file: with scale-free inputs the models must see the same thing."""
    df = pd.read_csv(new)
    df["volume"] = df["volume"] * df["close"]
    path = out / (new.name.replace("-new", "-new-quote"))
    df.to_csv(path, index=False)
    res = pipeline.evaluate(
        settings, Source((path,)), model_uris=uris, test="all", out_dir=out / "eval-quote"
    )
    meta = res.report["meta"]
    return {
        label: {
            "mase": {h: c["mase"] for h, c in body["metrics"][meta["targets"][0]].items()},
            "cov80": {
                h: c["coverage"]["80"]["overall"]
                for h, c in body["metrics"][meta["targets"][0]].items()
            },
            "range_flagged": (body.get("range_check") or {}).get("flagged"),
        }
        for label, body in res.report["models"].items()
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--models", default="naive,lightgbm,nhits")
    ap.add_argument("--symbols", default="btcusdt,ethusdt")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    kinds = tuple(args.models.split(","))
    results = {}
    for sym in args.symbols.split(","):
        out = args.out / sym
        out.mkdir(parents=True, exist_ok=True)
        old, new = split_file(FILES[sym], out)
        over = [f"data_dir={out / 'data'}", *QUICK]
        settings = load_settings(over, [sources.CANDLE_PRESET])
        t0 = time.perf_counter()
        rnd = pipeline.train_round(settings, Source((old,)), kinds)
        train_s = time.perf_counter() - t0
        uris = tuple(f"models:/{settings.model_name}/{t.version.version}" for t in rnd.trained)
        t0 = time.perf_counter()
        res = pipeline.evaluate(
            settings, Source((new,)), model_uris=uris, test="all", out_dir=out / "eval-all"
        )
        eval_s = time.perf_counter() - t0
        online = pipeline.evaluate(
            settings,
            Source((new,)),
            model_uris=tuple(
                u for u, t in zip(uris, rnd.trained, strict=True) if t.kind != "naive"
            ),
            test="all",
            out_dir=out / "eval-online",
        )
        tiny = load_settings(
            [*over, "ml.split.train=0.01", "ml.split.val=0", "ml.split.test=0.99"],
            [sources.CANDLE_PRESET],
        )
        try:
            pipeline.evaluate(tiny, Source((new,)), model_uris=uris[-1:])
            refused = "NOT refused"
        except MLError as e:
            refused = f"refused: {e}"
        quote = quote_units(settings, uris, new, out)
        print(f"\nvolume in quote units: {json.dumps(quote)}")
        choice = promotion.choose(
            res.report, {label: label.split("/")[0] for label in res.report["models"]}
        )
        results[sym] = {
            "train_s": train_s,
            "eval_s": eval_s,
            "aliases": rnd.aliases,
            "round_choice": choice,
            "tiny_split": refused,
            "quote_units": quote,
        }
        print(
            f"\n### {sym}: new data {res.report['meta']['from']} .. {res.report['meta']['to']}, "
            f"{res.report['meta']['origins']} origins, Holm family "
            f"{res.report['meta']['tests']['holm_family_size']} tests per loss; "
            f"yardstick: {res.report['meta']['yardstick']}\n"
        )
        print(HEAD)
        print("\n".join(rows_md(res.report)))
        print(
            f"\nonline-naive yardstick ({online.report['meta']['yardstick']}; "
            f"{online.report['meta']['origins']} origins):\n"
        )
        print(HEAD)
        print("\n".join(rows_md(online.report)))
        print(f"\nbreak-even (every non-zero move): {res.report['meta']['breakeven']}")
        for label, body in res.report["models"].items():
            print(
                f"{label}: skill {body['skill']}, beats naive {body['beats_naive']}, "
                f"range check {body.get('range_check')}"
            )
        print(json.dumps(results[sym], indent=1, default=str))
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
