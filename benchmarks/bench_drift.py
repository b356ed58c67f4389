"""Benchmark of the drift check: a sampled run against a full Evidently run on the same 1M rows, same process.

What is measured, on one generated window of ``--rows`` current rows × 20 features
(16 numeric: 6 normal, 5 log-normal, 5 Poisson counts with ties; 4 categorical
with 3-10 levels) plus a score, against a reference of each size in
``--reference-rows``:

1. ``sampled``: ``detect_drift(..., max_rows=--max-rows)``, the production call
   (a seeded uniform sample of the current window; Evidently's KS on the numeric
   columns and the score, the two-sample chi-square on the categorical ones,
   Evidently's HTML written);
2. ``full``: the same call with ``max_rows=None``, Evidently on every row (the baseline);
3. ``sampled_from_log``: the sampled call preceded by what a monitoring job does
   first: read the window from a prediction-log parquet file (``feature_<name>``
   columns, categoricals as codes) and decode it with ``current_frame``. Its
   p-values must equal those of ``sampled`` (same rows, same seed).

Each is run ``--repeat`` times, rotating which goes first; wall and CPU
seconds of every run are kept. Evidently's import and first-call warm-up are
timed once, apart. Then both reports are compared: per-feature p-values, the
features each calls drifted (Benjamini-Hochberg at 5 % within the report) and
the action :func:`riskloop.monitoring.assessment.assess` takes on each.

The window carries known drift, so "same assessment" is not trivially "no drift":
``x0`` shifted by 0.1 SD, ``x6`` (log-normal) scaled by 1.05, ``c0`` with 2
points of probability moved between two levels, ``x1`` shifted by only 0.02 SD
(below what a 5,000-row reference can see), and the score depends on ``x0``.

Finally the power of the KS test is estimated by simulation (``--power-reps``
runs per cell of reference size × current size × shift, with
``scipy.stats.ks_2samp``, which is what Evidently's ``ks`` calls).

Usage::

    .venv/bin/python benchmarks/bench_drift.py
    .venv/bin/python benchmarks/bench_drift.py --rows 200000 --reference-rows 5000 --repeat 1 --power-reps 0 \\
        --out /tmp/drift.json
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
from scipy.stats import ks_2samp

from riskloop.model import FeatureSpec
from riskloop.monitoring.assessment import MonitorPolicy, MonitorState, assess
from riskloop.monitoring.drift import DriftReport, detect_drift
from riskloop.monitoring.frames import current_frame

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a file: _common sits beside it
from _common import machine_info

T = TypeVar("T")

SEED = 11
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "drift.json"
VERSIONED = ("numpy", "pandas", "scipy", "evidently", "plotly", "pyarrow")
NORMAL = [f"x{i}" for i in range(6)]
LOGNORMAL = [f"x{i}" for i in range(6, 11)]
COUNTS = [f"x{i}" for i in range(11, 16)]
NUMERIC = [*NORMAL, *LOGNORMAL, *COUNTS]
CATEGORICAL = ["c0", "c1", "c2", "c3"]
LEVELS = {"c0": 10, "c1": 3, "c2": 3, "c3": 6}
# drift injected into the current window
SHIFT_X0_SD = 0.1
SHIFT_X1_SD = 0.02
SCALE_X6 = 1.05
C0_MOVED = 0.02  # probability moved from level 0 to level 9 of c0
POWER_ALPHAS = (0.05, 0.05 / 147)  # per test; and BH's line for one discovery among 7 days × 21 tests


@dataclass(frozen=True)
class Timing:
    wall_seconds: tuple[float, ...]
    cpu_seconds: tuple[float, ...]

    def report(self) -> dict[str, Any]:
        return {
            "seconds_best": round(min(self.wall_seconds), 3),
            "seconds_median": round(statistics.median(self.wall_seconds), 3),
            "wall_seconds_runs": [round(s, 3) for s in self.wall_seconds],
            "cpu_seconds_runs": [round(s, 3) for s in self.cpu_seconds],
        }


def timed(fn: Callable[[], T]) -> tuple[T, float, float]:
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def level_probabilities(k: int) -> np.ndarray:
    p: np.ndarray = 1.0 / np.arange(1, k + 1)  # Zipf-like: a few common levels, a tail of rare ones
    return np.asarray(p / p.sum())


def generate(n: int, rng: np.random.Generator, *, drift: bool) -> pd.DataFrame:
    """``n`` rows in the monitor's representation (float64 numerics, categorical levels, a score)."""
    data: dict[str, Any] = {}
    for name in NORMAL:
        shift = (SHIFT_X0_SD if name == "x0" else SHIFT_X1_SD if name == "x1" else 0.0) if drift else 0.0
        data[name] = rng.normal(shift, 1.0, n)
    for name in LOGNORMAL:
        scale = SCALE_X6 if drift and name == "x6" else 1.0
        data[name] = rng.lognormal(3.0, 1.0, n) * scale
    for j, name in enumerate(COUNTS):
        data[name] = rng.poisson(0.5 + j, n).astype(np.float64)
    for name in CATEGORICAL:
        k = LEVELS[name]
        p = level_probabilities(k)
        if drift and name == "c0":
            p = p.copy()
            p[0] -= C0_MOVED
            p[-1] += C0_MOVED
        codes = rng.choice(k, size=n, p=p)
        data[name] = pd.Categorical.from_codes(codes, categories=pd.Index([f"{name}_{i}" for i in range(k)]))
    logit = -4.0 + 0.8 * data["x0"] + 0.3 * rng.normal(size=n)
    data["score"] = 1.0 / (1.0 + np.exp(-logit))
    return pd.DataFrame(data)


def check(reference: pd.DataFrame, current: pd.DataFrame, max_rows: int | None, html: Path) -> DriftReport:
    return detect_drift(
        reference,
        current,
        numeric=NUMERIC,
        categorical=CATEGORICAL,
        max_rows=max_rows,
        seed=SEED,
        html_path=html,
        model_version="1",
        window_end=datetime(2026, 1, 2, tzinfo=UTC),
    )


def assessment_of(report: DriftReport) -> dict[str, Any]:
    now = datetime(2026, 1, 2, 1, 0, tzinfo=UTC)
    assessment, _ = assess([report], None, MonitorPolicy(), MonitorState(), model_version="1", now=now)
    return {
        "action": assessment.action,
        "drifted_features": list(assessment.drifted_features),
        "score_drift": assessment.score_drift,
        "reasons": list(assessment.reasons),
    }


def compare(sampled: DriftReport, full: DriftReport) -> dict[str, Any]:
    rows = []
    for a, b in zip([*sampled.features, sampled.score], [*full.features, full.score], strict=True):
        assert a is not None and b is not None and a.feature == b.feature
        rows.append(
            {
                "feature": a.feature,
                "test": a.test,
                "p_sampled": a.p_value,
                "p_full": b.p_value,
                "log10_p_sampled": round(float(np.log10(max(a.p_value, 1e-300))), 2),
                "log10_p_full": round(float(np.log10(max(b.p_value, 1e-300))), 2),
            }
        )
    drifted_s, drifted_f = set(sampled.drifted_features()), set(full.drifted_features())
    dec_s, dec_f = assessment_of(sampled), assessment_of(full)
    both = [
        (a.p_value, b.p_value)
        for a, b in zip([*sampled.features, sampled.score], [*full.features, full.score], strict=True)
        if a is not None and b is not None
    ]
    agree_at_05 = sum((ps < 0.05) == (pf < 0.05) for ps, pf in both)
    return {
        "per_feature": rows,
        "drifted_sampled_bh05": sorted(drifted_s),
        "drifted_full_bh05": sorted(drifted_f),
        "drifted_agreement": drifted_s == drifted_f,
        "tests_agreeing_at_alpha_05": f"{agree_at_05}/{len(both)}",
        "decision_sampled": dec_s,
        "decision_full": dec_f,
        "same_action": dec_s["action"] == dec_f["action"],
    }


def ks_power(n_ref: int, n_cur: int, shift_sd: float, reps: int, seed: int) -> dict[str, float]:
    """Share of ``reps`` two-sample KS tests that reject at each alpha for a normal location shift."""
    rng = np.random.default_rng(seed)
    p = np.array([ks_2samp(rng.normal(size=n_ref), rng.normal(shift_sd, 1.0, n_cur)).pvalue for _ in range(reps)])
    return {f"alpha_{a:.6g}": round(float(np.mean(p <= a)), 3) for a in POWER_ALPHAS}


def power_table(reps: int) -> list[dict[str, Any]]:
    cells = []
    for n_ref in (5_000, 50_000):
        for n_cur in (100_000, 1_000_000):
            for shift in (0.02, 0.05, 0.1):
                t0 = time.perf_counter()
                power = ks_power(n_ref, n_cur, shift, reps, seed=n_ref + n_cur + int(shift * 1000))
                effective = n_ref * n_cur / (n_ref + n_cur)
                cells.append(
                    {
                        "n_reference": n_ref,
                        "n_current": n_cur,
                        "effective_n": round(effective),
                        "shift_sd": shift,
                        "reps": reps,
                        **power,
                        "seconds": round(time.perf_counter() - t0, 1),
                    }
                )
                print(f"power n_ref={n_ref:>6} n_cur={n_cur:>8} shift={shift}: {power}", flush=True)
    return cells


def write_log(current: pd.DataFrame, path: Path) -> FeatureSpec:
    """Write ``current`` as the prediction log stores it; return the matching feature spec."""
    categories = {c: tuple(str(v) for v in current[c].cat.categories) for c in CATEGORICAL}
    columns: dict[str, Any] = {f"feature_{n}": current[n].to_numpy(np.float64) for n in NUMERIC}
    for c in CATEGORICAL:
        columns[f"feature_{c}"] = current[c].cat.codes.to_numpy().astype(np.float64)
    columns["score"] = current["score"].to_numpy()
    pd.DataFrame(columns).to_parquet(path, index=False)
    return FeatureSpec(tuple([*NUMERIC, *CATEGORICAL]), categories)


def compare_reference_size(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    log_path: Path,
    fspec: FeatureSpec,
    max_rows: int,
    repeat: int,
    tmp: Path,
) -> dict[str, Any]:
    variants: dict[str, Callable[[], DriftReport]] = {
        "sampled": lambda: check(reference, current, max_rows, tmp / "sampled.html"),
        "full": lambda: check(reference, current, None, tmp / "full.html"),
        "sampled_from_log": lambda: check(
            reference, current_frame(pd.read_parquet(log_path), fspec), max_rows, tmp / "sampled_from_log.html"
        ),
    }
    names = list(variants)
    walls: dict[str, list[float]] = {v: [] for v in names}
    cpus: dict[str, list[float]] = {v: [] for v in names}
    reports: dict[str, DriftReport] = {}
    for i in range(repeat):
        for variant in names[i % len(names) :] + names[: i % len(names)]:
            report, wall, cpu = timed(variants[variant])
            walls[variant].append(wall)
            cpus[variant].append(cpu)
            reports[variant] = report
            print(
                f"reference {len(reference):,}, round {i + 1}: {variant:<17} {wall:6.2f} s wall, {cpu:6.2f} s CPU",
                flush=True,
            )
    timing = {v: Timing(tuple(walls[v]), tuple(cpus[v])) for v in names}
    s, f, g = timing["sampled"], timing["full"], timing["sampled_from_log"]
    same = [*reports["sampled"].features, reports["sampled"].score] == [
        *reports["sampled_from_log"].features,
        reports["sampled_from_log"].score,
    ]
    return {
        "rows_reference": len(reference),
        **{v: {**timing[v].report(), "html_bytes": (tmp / f"{v}.html").stat().st_size} for v in names},
        "full_over_sampled": {
            "best": round(min(f.wall_seconds) / min(s.wall_seconds), 2),
            "median": round(statistics.median(f.wall_seconds) / statistics.median(s.wall_seconds), 2),
            "cpu_median": round(statistics.median(f.cpu_seconds) / statistics.median(s.cpu_seconds), 2),
        },
        "full_over_sampled_from_log": {
            "best": round(min(f.wall_seconds) / min(g.wall_seconds), 2),
            "median": round(statistics.median(f.wall_seconds) / statistics.median(g.wall_seconds), 2),
        },
        "sampled_from_log_same_p_values_as_sampled": same,
        "comparison": compare(reports["sampled"], reports["full"]),
    }


def run(
    rows: int, reference_sizes: list[int], max_rows: int, repeat: int, power_reps: int, tmp: Path
) -> dict[str, Any]:
    rng = np.random.default_rng(SEED)
    current, gen_wall, _ = timed(lambda: generate(rows, rng, drift=True))
    references = [generate(n, rng, drift=False) for n in reference_sizes]
    log_path = tmp / "predictions.parquet"
    fspec = write_log(current, log_path)
    print(
        f"generated {rows:,} current rows in {gen_wall:.1f} s; log file {log_path.stat().st_size / 1e6:.0f} MB",
        flush=True,
    )

    tiny = generate(300, np.random.default_rng(0), drift=False)
    _, import_wall, import_cpu = timed(lambda: check(tiny, tiny, None, tmp / "warmup.html"))

    by_reference = [compare_reference_size(ref, current, log_path, fspec, max_rows, repeat, tmp) for ref in references]
    power = power_table(power_reps) if power_reps > 0 else []
    return {
        "rows_current": rows,
        "max_rows": max_rows,
        "features": {"numeric": len(NUMERIC), "categorical": len(CATEGORICAL), "plus_score": True},
        "injected_drift": {
            "x0_shift_sd": SHIFT_X0_SD,
            "x1_shift_sd": SHIFT_X1_SD,
            "x6_scale": SCALE_X6,
            "c0_probability_moved": C0_MOVED,
            "score": "depends on x0",
        },
        "generate_seconds": round(gen_wall, 2),
        "log_file_bytes": log_path.stat().st_size,
        "evidently_import_and_warmup_seconds": {"wall": round(import_wall, 2), "cpu": round(import_cpu, 2)},
        "by_reference": by_reference,
        "ks_power": power,
    }


def summary(report: dict[str, Any]) -> str:
    r = report["results"]
    lines = [f"current {r['rows_current']:,} rows x 20 features + score, sample {r['max_rows']:,}"]
    for b in r["by_reference"]:
        c = b["comparison"]
        lines += [
            f"\n-- reference {b['rows_reference']:,} rows",
            *(
                f"{v:<17} best {b[v]['seconds_best']} s, median {b[v]['seconds_median']} s"
                for v in ("sampled", "full", "sampled_from_log")
            ),
            f"full / sampled: best {b['full_over_sampled']['best']}x, median {b['full_over_sampled']['median']}x",
            f"sampled_from_log p-values == sampled: {b['sampled_from_log_same_p_values_as_sampled']}",
            f"drifted (BH 5%): sampled {c['drifted_sampled_bh05']}, full {c['drifted_full_bh05']}",
            f"assessment: sampled {c['decision_sampled']['action']}, full {c['decision_full']['action']}",
            f"{'feature':<8}{'test':<18}{'log10 p sampled':>16}{'log10 p full':>14}",
        ]
        lines += [
            f"{row['feature']:<8}{row['test']:<18}{row['log10_p_sampled']:>16}{row['log10_p_full']:>14}"
            for row in c["per_feature"]
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="current rows (default 1000000)")
    parser.add_argument(
        "--reference-rows", default="5000,50000", help="reference sizes, comma-separated (default 5000,50000)"
    )
    parser.add_argument("--max-rows", type=int, default=100_000, help="sample size of the sampled check")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each variant (default 3)")
    parser.add_argument("--power-reps", type=int, default=200, help="simulations per power cell (0: skip)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    reference_sizes = [int(v) for v in str(args.reference_rows).split(",") if v.strip()]
    if args.rows < 1_000 or args.repeat < 1 or args.max_rows < 1 or not reference_sizes:
        parser.error("--rows must be >= 1000, --repeat and --max-rows >= 1, --reference-rows non-empty")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)

    started = datetime.now(UTC)
    machine = machine_info(VERSIONED)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="riskloop-bench-drift-") as tmp:
        results = run(args.rows, reference_sizes, args.max_rows, args.repeat, args.power_reps, Path(tmp))
    report = {
        "benchmark": "drift",
        "command": " ".join([".venv/bin/python", "benchmarks/bench_drift.py", *sys.argv[1:]]),
        "started_at": started.isoformat(timespec="seconds"),
        "total_seconds": round(time.perf_counter() - t0, 1),
        "repeat": args.repeat,
        "machine": machine,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(summary(report))
    print(f"\nwrote {args.out} (total {timedelta(seconds=round(report['total_seconds']))})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
