"""Benchmarks of the data and feature layers, each against a baseline timed in the same process.

What is measured, on one synthetic data set of about ``--rows`` transactions
(30 days; ``n_cards`` is chosen so the expected row count hits the target):

1. the generator (``riskloop.data.synthetic.generate``) against a raw numpy fill
   of the same number of rows for the same 14 columns (float64 uniforms from one
   ``numpy.random.Generator``): the ratio is the cost of realism over bare RNG;
   writing the generated frame to parquet is timed as a second point of reference;
2. the data contract (``split_batch`` with the ``synthetic-fraud`` contract);
3. feature computation: batch tier, real-time tier, card state snapshots;
4. Feast historical retrieval (DuckDB offline store, point-in-time join) against
   ``pandas.merge_asof`` of the same ``card_daily`` table onto the transactions
   (by ``card_id``, backward, tolerance = the view's TTL). Two Feast timings: the
   library's full ``historical_features`` (card and merchant views, the on-demand
   view and the real-time tier), and Feast asked for ``card_daily`` alone, which
   is the same work as the baseline; the two outputs are compared value by value.

Performance is reported as seconds, rows/s and ratios to the baselines; nothing
here asserts a time. Wall and CPU seconds are both recorded: on a shared machine
wall time moves with the neighbours' load, and CPU above wall shows threads.

Usage::

    .venv/bin/python benchmarks/bench_data.py
    .venv/bin/python benchmarks/bench_data.py --rows 100000 --repeat 1 --out /tmp/data.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from riskloop.data.spec import load_spec
from riskloop.data.synthetic import GeneratorParams, generate
from riskloop.data.validate import split_batch
from riskloop.features.compute import (
    CARD_BATCH_FEATURES,
    CARD_STRING_FEATURES,
    FEATURE_TIMESTAMP,
    compute_batch_features,
    compute_realtime_features,
    state_snapshots,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a file: _common sits beside it
from _common import machine_info

T = TypeVar("T")

DAYS = 30
SEED = 7
N_MERCHANTS = 1_000
GENERATED_COLUMNS = 14  # the columns of one synthetic transaction row
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "data.json"
VERSIONED = ("numpy", "pandas", "pyarrow", "pandera", "feast", "duckdb", "xgboost")
CARD_DAILY_COLUMNS = (*CARD_BATCH_FEATURES, *CARD_STRING_FEATURES)


@dataclass(frozen=True)
class Timing:
    """Wall and CPU seconds of each repeated run of one measured call."""

    wall_seconds: tuple[float, ...]
    cpu_seconds: tuple[float, ...]

    @property
    def best(self) -> float:
        return min(self.wall_seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.wall_seconds)

    def report(self, rows: int) -> dict[str, Any]:
        """Seconds and rows/s (best and median) for a run over ``rows`` rows."""
        return {
            "rows": rows,
            "seconds_best": round(self.best, 4),
            "seconds_median": round(self.median, 4),
            "rows_per_second_best": round(rows / self.best),
            "rows_per_second_median": round(rows / self.median),
            "wall_seconds_runs": [round(s, 4) for s in self.wall_seconds],
            "cpu_seconds_runs": [round(s, 4) for s in self.cpu_seconds],
        }


def time_runs(fn: Callable[[], T], repeat: int) -> tuple[T, Timing]:
    """Call ``fn`` ``repeat`` times (at least once); return the last result and every run's timing."""
    walls, cpus = [], []

    def once() -> T:
        c0, w0 = time.process_time(), time.perf_counter()
        out = fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
        return out

    result = once()
    for _ in range(repeat - 1):
        del result  # let the previous result go before the next run allocates its own
        result = once()
    return result, Timing(tuple(walls), tuple(cpus))


def ratio(numerator: Timing, denominator: Timing) -> dict[str, float]:
    """How many times slower the numerator is, best-to-best and median-to-median."""
    return {
        "best": round(numerator.best / denominator.best, 2),
        "median": round(numerator.median / denominator.median, 2),
    }


def params_for(rows: int) -> GeneratorParams:
    """Generator parameters whose expected row count over ``DAYS`` days is ``rows``.

    Per card and day: ``tx_per_card_day`` legitimate transactions on average, plus
    ``compromise_rate * (1 + 2.5)`` fraudulent ones (the mean episode length).
    """
    base = GeneratorParams(days=DAYS, n_merchants=N_MERCHANTS, seed=SEED)
    per_card = DAYS * (base.tx_per_card_day + base.compromise_rate * 3.5)
    return base.model_copy(update={"n_cards": max(10, round(rows / per_card))})


def numpy_fill(rows: int, seed: int) -> dict[str, np.ndarray]:
    """The baseline: ``rows`` uniform float64 values for each of the generator's columns."""
    rng = np.random.default_rng(seed)
    return {f"c{i}": rng.random(rows) for i in range(GENERATED_COLUMNS)}


def merge_asof_card_daily(entities: pd.DataFrame, card_daily: pd.DataFrame, ttl: timedelta) -> pd.DataFrame:
    """The baseline join: each entity row gets the newest card_daily row at or before it, within ``ttl``."""
    left = entities[["transaction_id", "card_id", "event_timestamp"]].sort_values("event_timestamp", kind="stable")
    right = card_daily.sort_values(FEATURE_TIMESTAMP, kind="stable")
    return pd.merge_asof(
        left,
        right,
        left_on="event_timestamp",
        right_on=FEATURE_TIMESTAMP,
        by="card_id",
        direction="backward",
        tolerance=pd.Timedelta(ttl),
    )


def agreement(a: pd.DataFrame, b: pd.DataFrame, columns: tuple[str, ...]) -> dict[str, Any]:
    """Share of cells equal in both frames (matched on transaction_id; both missing counts as equal)."""
    left = a.set_index("transaction_id")[list(columns)]
    right = b.set_index("transaction_id").loc[left.index, list(columns)]
    equal = 0
    for name in columns:
        x, y = left[name], right[name]
        both_missing = x.isna().to_numpy() & y.isna().to_numpy()
        if name in CARD_STRING_FEATURES:
            same = x.astype(object).to_numpy() == y.astype(object).to_numpy()
        else:
            same = np.isclose(x.to_numpy(np.float64), y.to_numpy(np.float64), rtol=1e-9, atol=0.0)
        equal += int((same | both_missing).sum())
    cells = len(left) * len(columns)
    return {"cells": cells, "equal_cells": equal, "share": round(equal / cells, 6) if cells else 1.0}


def quiet_third_party_warnings() -> None:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(rows_target: int, repeat: int, workdir: Path) -> dict[str, Any]:
    """Run every benchmark once per repeat and return the JSON-ready report."""
    from riskloop.features.definitions import BATCH_TTL, FEATURE_SERVICE
    from riskloop.features.store import (
        StoreConfig,
        apply_definitions,
        entity_frame,
        historical_features,
        open_store,
        write_feature_tables,
    )

    params = params_for(rows_target)
    progress(f"generator: {params.days} days x {params.n_cards} cards, {repeat} run(s)")
    tx, t_gen = time_runs(lambda: generate(params), repeat)
    n = len(tx)
    progress(f"generated {n:,} rows (target {rows_target:,}); best {t_gen.best:.2f} s")
    _, t_fill = time_runs(lambda: numpy_fill(n, params.seed), repeat)
    parquet_path = workdir / "transactions.parquet"
    _, t_parquet = time_runs(lambda: tx.to_parquet(parquet_path, index=False), repeat)
    parquet_bytes = parquet_path.stat().st_size
    parquet_path.unlink()

    contract = load_spec("synthetic-fraud").contract
    # a fixed "now" after the last event keeps the not-in-future check independent of the clock
    now = datetime.combine(params.start + timedelta(days=params.days + 1), datetime.min.time(), tzinfo=UTC)
    progress("validation (pandera contract)")
    checked, t_val = time_runs(lambda: split_batch(tx, contract, now=now), repeat)
    valid = checked.valid

    progress("features: batch tier, real-time tier, state snapshots")
    (card_daily, merchant_daily), t_batch = time_runs(lambda: compute_batch_features(valid), repeat)
    _, t_rt = time_runs(lambda: compute_realtime_features(valid), repeat)
    boundaries = [pd.Timestamp(b) for b in sorted(card_daily[FEATURE_TIMESTAMP].unique())]
    snapshots, t_snap = time_runs(lambda: state_snapshots(valid, boundaries), repeat)

    progress("Feast: write offline tables, apply definitions")
    cfg = StoreConfig.local(workdir / "feast")
    _, t_write = time_runs(lambda: write_feature_tables(valid, cfg.offline_dir), 1)
    store = open_store(cfg)
    quiet_third_party_warnings()  # after open_store: importing feast resets the warning filters
    _, t_apply = time_runs(lambda: apply_definitions(store, cfg.offline_dir), 1)

    progress("Feast: historical retrieval, full feature service")
    _, t_full = time_runs(lambda: historical_features(store, valid, FEATURE_SERVICE), repeat)
    entities = entity_frame(valid)
    refs = [f"card_daily:{name}" for name in CARD_DAILY_COLUMNS]
    progress("Feast: historical retrieval, card_daily only")
    feast_card, t_feast_card = time_runs(
        lambda: store.get_historical_features(entity_df=entities, features=refs).to_df(), repeat
    )
    progress("baseline: pandas merge_asof of card_daily")
    asof, t_asof = time_runs(lambda: merge_asof_card_daily(entities, card_daily, BATCH_TTL), repeat)
    agree = agreement(feast_card, asof, CARD_DAILY_COLUMNS)

    n_valid = len(valid)
    return {
        "generator": {
            **t_gen.report(n),
            "rows_target": rows_target,
            "params": params.model_dump(mode="json"),
        },
        "baseline_numpy_fill": {
            **t_fill.report(n),
            "what": f"numpy Generator.random: {n} float64 values for each of {GENERATED_COLUMNS} columns, "
            "no DataFrame, no dependence between rows",
        },
        "generator_over_numpy_fill": ratio(t_gen, t_fill),
        "reference_parquet_write": {
            **t_parquet.report(n),
            "bytes": parquet_bytes,
            "what": "DataFrame.to_parquet of the generated frame (pyarrow, default snappy)",
        },
        "generator_over_parquet_write": ratio(t_gen, t_parquet),
        "validation": {
            **t_val.report(n),
            "valid_rows": n_valid,
            "quarantined_rows": len(checked.quarantine),
        },
        "features_batch": {
            **t_batch.report(n_valid),
            "card_daily_rows": len(card_daily),
            "merchant_daily_rows": len(merchant_daily),
        },
        "features_realtime": t_rt.report(n_valid),
        "features_state_snapshots": {
            **t_snap.report(n_valid),
            "boundaries": len(boundaries),
            "snapshot_rows": len(snapshots),
        },
        "feast_write_feature_tables": {
            **t_write.report(n_valid),
            "what": "write_feature_tables: both tiers recomputed and written as parquet (one run)",
        },
        "feast_apply": {"seconds": round(t_apply.best, 4), "what": "apply_definitions (one run)"},
        "feast_historical_full": {
            **t_full.report(n_valid),
            "what": "historical_features(fraud_detector_v1): DuckDB point-in-time join of card_daily and "
            "merchant_daily, the python-mode on-demand view, plus compute_realtime_features",
        },
        "feast_historical_card_daily": {
            **t_feast_card.report(n_valid),
            "what": "get_historical_features for the card_daily view alone (same work as the baseline)",
        },
        "baseline_merge_asof": {
            **t_asof.report(n_valid),
            "what": "pandas.merge_asof of card_daily onto the transactions by card_id, backward, "
            f"tolerance {BATCH_TTL} (the view's TTL), sorts included",
        },
        "feast_full_over_merge_asof": ratio(t_full, t_asof),
        "feast_card_daily_over_merge_asof": ratio(t_feast_card, t_asof),
        "feast_card_daily_vs_merge_asof_agreement": agree,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="target row count (default 1000000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per timed step (default 3)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    if args.rows < 1_000 or args.repeat < 1:
        parser.error("--rows must be >= 1000 and --repeat >= 1")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("FEAST_USAGE", "False")
    quiet_third_party_warnings()

    started = datetime.now(UTC)
    machine = machine_info(VERSIONED)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="riskloop-bench-") as tmp:
        results = run(args.rows, args.repeat, Path(tmp))
    report = {
        "benchmark": "data",
        "command": " ".join([".venv/bin/python", "benchmarks/bench_data.py", *sys.argv[1:]]),
        "started_at": started.isoformat(timespec="seconds"),
        "total_seconds": round(time.perf_counter() - t0, 1),
        "repeat": args.repeat,
        "machine": machine,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(summary(report))
    print(f"\nwrote {args.out}")
    return 0


def summary(report: dict[str, Any]) -> str:
    """A short human table of the report."""
    r = report["results"]
    lines = [f"{'step':<34}{'rows':>11}{'best s':>10}{'median s':>10}{'rows/s (best)':>15}"]
    for key in (
        "generator",
        "baseline_numpy_fill",
        "reference_parquet_write",
        "validation",
        "features_batch",
        "features_realtime",
        "features_state_snapshots",
        "feast_historical_full",
        "feast_historical_card_daily",
        "baseline_merge_asof",
    ):
        v = r[key]
        lines.append(
            f"{key:<34}{v['rows']:>11,}{v['seconds_best']:>10.3f}{v['seconds_median']:>10.3f}"
            f"{v['rows_per_second_best']:>15,}"
        )
    for key in (
        "generator_over_numpy_fill",
        "generator_over_parquet_write",
        "feast_full_over_merge_asof",
        "feast_card_daily_over_merge_asof",
    ):
        lines.append(f"{key:<34} best {r[key]['best']}x, median {r[key]['median']}x")
    lines.append(
        f"{'feast card_daily == merge_asof':<34} {r['feast_card_daily_vs_merge_asof_agreement']['share']:.2%} of cells"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
