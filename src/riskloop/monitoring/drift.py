"""Data and score drift between a model's reference sample and a window of live traffic: the Evidently adapter.

This is the only module that imports Evidently; it returns a :class:`DriftReport`,
never an Evidently object. One call, :func:`detect_drift`, runs one test per
feature and one on the score, each giving a **p-value** (not a distance):

* **numeric** features and the score: the two-sample Kolmogorov-Smirnov test,
  computed by Evidently (``ValueDrift(method="ks")``, i.e. ``scipy.stats.ks_2samp``,
  two-sided). Missing values are left out of the test (their shares are
  reported). With many ties (counts, codes) KS is conservative: p-values come
  out larger than uniform under no drift, never smaller.
* **categorical** features: Pearson's chi-square test of homogeneity on the
  2 × k table (reference / current × level), computed with
  ``scipy.stats.chi2_contingency``. Evidently's ``chisquare`` stattest cannot be
  used for this: it is a goodness-of-fit test that takes the reference's
  frequencies as exact, so its p-values ignore the reference's own sampling
  error. Measured with Evidently 0.7.23 on identically distributed data
  (8 levels, 40 seeds, alpha 0.05): it flagged 40 % of the tests with 5,000 rows
  on each side and 100 % with 5,000 against 50,000 (the two-sample test: 7.5 % both
  times). Evidently's other categorical p-value (``TVD``) is a 1,000-round
  permutation test in pure Python that also reseeds numpy's global generator.
  Missing and unknown categories form their own level; levels with an expected
  count below 5 are pooled (see :func:`chi_square_homogeneity`).

Evidently also renders the HTML page (``html_path=``): per-column distributions
with its verdict; there the categorical columns show Evidently's Jensen-Shannon
*distance*, and the p-values of record are those in the :class:`DriftReport`
(:func:`write_report` writes them as JSON).

**Effect size.** Beside each p-value a :class:`FeatureDrift` carries how large
the change is: the Wasserstein distance in reference standard deviations for
numeric columns (:func:`normed_wasserstein`), Cramer's V for categorical ones.
With thousands of rows a day a p-value finds differences far too small to
matter; the assessment counts a discovery as drift only when its effect is also
large enough (``MonitorPolicy.min_effect``).

**Sampling.** A current window longer than ``max_rows`` is replaced by a seeded
uniform sample of ``max_rows`` rows (without replacement); the reference (already
a sample, 5,000 rows by default) is used whole. Two-sample KS power depends on
the effective size ``n_ref * n_cur / (n_ref + n_cur)``, which never exceeds the
reference's size: against 5,000 reference rows, 100,000 current rows give 4,762
effective rows and 1,000,000 give 4,975. Keep ``max_rows`` at least 10 times the
reference's rows (effective size >= 91 % of its ceiling); the default 100,000
suits references up to 10,000 rows. Power measured by simulation
(``benchmarks/bench_drift.py``, 2026-11-27: 200 runs per cell, so ±3.5 points at
most; a normal feature shifted by ``shift`` standard deviations; rejection at a
per-test alpha of 0.05, and at 0.05/147, the Benjamini-Hochberg line a single
drifted test must beat among 7 days × 21 tests at a 5 % false discovery rate):

=====================  ==========  ==========  =============
reference × current    shift (SD)  alpha 0.05  alpha 0.05/147
=====================  ==========  ==========  =============
5,000 × 100,000        0.02        0.23        0.04
5,000 × 1,000,000      0.02        0.20        0.02
5,000 × 100,000        0.05        0.86        0.30
5,000 × 1,000,000      0.05        0.86        0.24
5,000 × 100,000        0.10        1.00        0.99
5,000 × 1,000,000      0.10        1.00        0.99
50,000 × 100,000       0.02        0.87        0.30
50,000 × 1,000,000     0.02        0.97        0.58
50,000 × either        0.05, 0.10  1.00        1.00
=====================  ==========  ==========  =============

So with the default 5,000-row reference, one feature shifted by 0.1 SD is found
on a single day 99 % of the time, sampled or not, and a 0.05 SD shift needs a
larger reference, not more current rows. With a 50,000-row reference, 100,000
current rows lose power on the smallest shift (0.30 against 0.58): follow the
10× rule there (``max_rows=500_000``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import pandas as pd

from riskloop.errors import ConfigError, DataContractError, RiskloopError
from riskloop.monitoring.frames import MISSING
from riskloop.monitoring.stats import benjamini_hochberg

KS: Final = "ks"
CHI_SQUARE: Final = "chi2_homogeneity"
DEFAULT_MAX_ROWS: Final = 100_000
MIN_EXPECTED_COUNT: Final = 5.0
REPORT_FORMAT: Final = 1
# Evidently's HTML compares categorical columns with this distance (its default above 1,000 rows)
_HTML_CATEGORICAL_METHOD: Final = "jensenshannon"

Kind = Literal["numeric", "categorical"]


@dataclass(frozen=True)
class FeatureDrift:
    """One column's test: which test, its p-value and statistic, and the rows it saw.

    ``p_value`` is NaN when the test could not run (``note`` says why);
    ``statistic`` is the chi-square statistic, or None for KS (Evidently returns
    only its p-value). ``n_reference``/``n_current`` count the values tested
    (non-missing for numeric columns, every row for categorical ones).
    """

    feature: str
    kind: Kind
    test: str
    p_value: float
    statistic: float | None
    n_reference: int
    n_current: int
    missing_share_reference: float
    missing_share_current: float
    note: str = ""
    # how large the change is, whatever its p-value (see :func:`normed_wasserstein`): for numeric columns the
    # Wasserstein distance in units of the reference's standard deviation, for categorical ones Cramer's V;
    # NaN when the test did not run
    effect: float = math.nan


@dataclass(frozen=True)
class DriftReport:
    """The drift of one window against a model's reference (see the module docstring for the tests).

    ``n_current`` rows were tested out of ``n_current_total`` in the window;
    ``sampled`` says a seeded uniform sample (``seed``) was drawn. ``alpha`` is
    the level used by :meth:`drifted_features`, :attr:`drift_share` and
    :attr:`score_drifted` unless another is passed.
    """

    features: tuple[FeatureDrift, ...]
    score: FeatureDrift | None
    alpha: float
    n_reference: int
    n_current: int
    n_current_total: int
    sampled: bool
    seed: int
    model_version: str | None = None
    window_start: datetime | None = None
    window_end: datetime | None = None
    evidently_version: str = ""
    html_path: str | None = None

    @property
    def p_values(self) -> dict[str, float]:
        """Feature name → p-value (NaN where not computed)."""
        return {f.feature: f.p_value for f in self.features}

    @property
    def tests(self) -> dict[str, str]:
        """Feature name → test name."""
        return {f.feature: f.test for f in self.features}

    @property
    def score_p_value(self) -> float:
        """The score's KS p-value; NaN when the score was not tested."""
        return self.score.p_value if self.score is not None else math.nan

    @property
    def score_drifted(self) -> bool:
        """The score's p-value is below ``alpha`` (one test: no adjustment)."""
        return self.score_p_value < self.alpha

    def drifted_features(self, alpha: float | None = None, *, adjust: bool = True) -> tuple[str, ...]:
        """Features whose test rejects "no drift" at ``alpha`` (default: the report's).

        With ``adjust`` (the default) the p-values of this report's features are
        Benjamini-Hochberg adjusted first, so ``alpha`` is a false discovery
        rate over the features; without it each test is read at ``alpha`` alone.
        Features whose test did not run are never drifted.
        """
        level = self.alpha if alpha is None else alpha
        tested = [f for f in self.features if not math.isnan(f.p_value)]
        if not tested:
            return ()
        p = np.array([f.p_value for f in tested])
        rejected = benjamini_hochberg(p, level)[0] if adjust else p < level
        return tuple(f.feature for f, r in zip(tested, rejected, strict=True) if r)

    @property
    def drift_share(self) -> float:
        """Share of tested features in :meth:`drifted_features` (BH at ``alpha``); 0.0 when none was tested."""
        tested = sum(not math.isnan(f.p_value) for f in self.features)
        return len(self.drifted_features()) / tested if tested else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN as null, datetimes as ISO 8601."""
        out = asdict(self)
        out["format"] = REPORT_FORMAT
        for key in ("window_start", "window_end"):
            value = getattr(self, key)
            out[key] = value.isoformat() if value is not None else None
        out["features"] = [_nan_to_none(f) for f in out["features"]]
        out["score"] = _nan_to_none(out["score"]) if out["score"] is not None else None
        # this day's tests alone, by p-value: the assessment (the day's drift.json, ``assessment``) adds the effect size
        # and the days-in-a-row rule over its window, so these are named apart from its drifted features
        out["significant_today"] = list(self.drifted_features())
        out["significant_share_today"] = self.drift_share
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftReport:
        if data.get("format") != REPORT_FORMAT:
            raise DataContractError(
                f"drift report format {data.get('format')!r} is not {REPORT_FORMAT}",
                where="DriftReport.from_dict",
                fix="re-run detect_drift with this riskloop",
            )

        def feature(d: Mapping[str, Any]) -> FeatureDrift:
            return FeatureDrift(**{**d, "p_value": math.nan if d["p_value"] is None else float(d["p_value"])})

        def stamp(value: str | None) -> datetime | None:
            return datetime.fromisoformat(value) if value is not None else None

        return cls(
            features=tuple(feature(f) for f in data["features"]),
            score=feature(data["score"]) if data["score"] is not None else None,
            alpha=float(data["alpha"]),
            n_reference=int(data["n_reference"]),
            n_current=int(data["n_current"]),
            n_current_total=int(data["n_current_total"]),
            sampled=bool(data["sampled"]),
            seed=int(data["seed"]),
            model_version=data.get("model_version"),
            window_start=stamp(data.get("window_start")),
            window_end=stamp(data.get("window_end")),
            evidently_version=str(data.get("evidently_version", "")),
            html_path=data.get("html_path"),
        )


def detect_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    numeric: Sequence[str],
    categorical: Sequence[str],
    score_column: str | None = "score",
    max_rows: int | None = DEFAULT_MAX_ROWS,
    seed: int = 0,
    alpha: float = 0.05,
    html_path: Path | None = None,
    model_version: str | None = None,
    window_start: datetime | None = None,
    window_end: datetime | None = None,
) -> DriftReport:
    """Test every feature and the score of ``current`` against ``reference``; optionally write Evidently's HTML.

    Both frames hold the features in the same representation (use
    :func:`riskloop.monitoring.frames.reference_frame` and ``current_frame``).
    ``numeric`` columns are tested with KS, ``categorical`` ones with the
    two-sample chi-square, ``score_column`` (None: skip) with KS. ``max_rows``:
    test a seeded uniform sample of at most this many current rows (None: all;
    the module docstring gives the power at the default). ``alpha`` is only the
    level the report reads its tests at; it changes no p-value.
    ``model_version`` and the window are recorded as given.

    Raises :class:`~riskloop.errors.DataContractError` when a column is missing
    or a frame is empty, :class:`~riskloop.errors.ConfigError` for bad arguments.
    """
    numeric, categorical = list(numeric), list(categorical)
    _check_arguments(numeric, categorical, score_column, max_rows, alpha, window_start, window_end)
    columns = [*numeric, *categorical, *([score_column] if score_column is not None else [])]
    for name, frame in (("reference", reference), ("current", current)):
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise DataContractError(
                f"{len(missing)} column(s) missing from the {name} frame: {missing[:10]}",
                where=f"detect_drift({name}=...)",
                fix="build both frames with riskloop.monitoring.frames (same feature list)",
            )
        if frame.empty:
            raise DataContractError(
                f"the {name} frame has no rows",
                where=f"detect_drift({name}=...)",
                fix="widen the window or check the prediction log / reference artifact",
            )

    n_total = len(current)
    sampled = max_rows is not None and n_total > max_rows
    if sampled:
        assert max_rows is not None
        rows = np.sort(np.random.default_rng(seed).choice(n_total, size=max_rows, replace=False))
        current = current.iloc[rows]
    ref = _normalise(reference, numeric, categorical, score_column, "reference")
    cur = _normalise(current, numeric, categorical, score_column, "current")

    ks_columns = [*numeric, *([score_column] if score_column is not None else [])]
    testable = [c for c in ks_columns if ref[c].notna().any() and cur[c].notna().any()]
    html_categorical = categorical if html_path is not None else []
    ks_p, version = _evidently_run(ref, cur, testable, html_categorical, alpha, html_path)

    results: dict[str, FeatureDrift] = {}
    for c in ks_columns:
        r, k = ref[c], cur[c]
        missing_ref, missing_cur = float(r.isna().mean()), float(k.isna().mean())
        n_r, n_c = int(r.notna().sum()), int(k.notna().sum())
        note = "" if c in ks_p else "not tested: no values on one side"
        effect = (
            normed_wasserstein(r.dropna().to_numpy(np.float64), k.dropna().to_numpy(np.float64))
            if c in ks_p
            else math.nan
        )
        results[c] = FeatureDrift(
            c, "numeric", KS, ks_p.get(c, math.nan), None, n_r, n_c, missing_ref, missing_cur, note, effect
        )
    for c in categorical:
        levels, ref_counts, cur_counts = _level_counts(ref[c], cur[c])
        p, stat, note = chi_square_homogeneity(ref_counts, cur_counts)
        k_levels = int(((ref_counts + cur_counts) > 0).sum())
        effect = (
            math.sqrt(stat / ((len(ref) + len(cur)) * (k_levels - 1)))
            if stat is not None and math.isfinite(stat) and k_levels > 1
            else math.nan
        )
        results[c] = FeatureDrift(
            c,
            "categorical",
            CHI_SQUARE,
            p,
            stat,
            len(ref),
            len(cur),
            _share(levels, ref_counts),
            _share(levels, cur_counts),
            note,
            min(effect, 1.0),
        )

    return DriftReport(
        features=tuple(results[c] for c in [*numeric, *categorical]),
        score=results[score_column] if score_column is not None else None,
        alpha=alpha,
        n_reference=len(ref),
        n_current=len(cur),
        n_current_total=n_total,
        sampled=sampled,
        seed=seed,
        model_version=model_version,
        window_start=window_start,
        window_end=window_end,
        evidently_version=version,
        html_path=str(html_path) if html_path is not None else None,
    )


def chi_square_homogeneity(
    reference_counts: Sequence[int] | np.ndarray, current_counts: Sequence[int] | np.ndarray
) -> tuple[float, float | None, str]:
    """``(p_value, statistic, note)`` of Pearson's chi-square test that two samples share one distribution.

    The table is 2 × k (reference / current × level, counts). Levels seen in
    neither sample are dropped; levels whose smaller expected count is below
    5 are pooled into one level (and that pool into the smallest other level
    if it is still below 5), so the chi-square approximation holds. Fewer than
    two levels left: nothing to test, p-value 1.0 and a note.
    """
    table = np.vstack([np.asarray(reference_counts, dtype=np.float64), np.asarray(current_counts, dtype=np.float64)])
    table = table[:, table.sum(axis=0) > 0]
    note = ""
    if table.shape[1] >= 2:
        table, pooled = _pool_small_levels(table)
        if pooled:
            note = f"{pooled} level(s) with expected count < {MIN_EXPECTED_COUNT:g} pooled"
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 1.0, None, "fewer than two levels to compare" + (f"; {note}" if note else "")
    from scipy.stats import chi2_contingency

    result = chi2_contingency(table, correction=False)
    return float(result.pvalue), float(result.statistic), note


def write_report(report: DriftReport, json_path: Path, *, assessment: Mapping[str, Any] | None = None) -> Path:
    """Write the report as JSON (NaN as null); return the path. The HTML is written by :func:`detect_drift`.

    ``assessment``: the monitor's action on it and why (``daily.monitor_day``), written first under ``assessment`` so
    the file opens with the same story as the CLI line and the HTML; :func:`read_report` ignores it.
    """
    json_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = json_path.with_name(f".{json_path.name}.tmp")
    body = {**({"assessment": dict(assessment)} if assessment is not None else {}), **report.to_dict()}
    tmp.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, json_path)
    return json_path


def read_report(json_path: Path) -> DriftReport:
    """A report written by :func:`write_report`."""
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataContractError(
            f"cannot read the drift report: {exc}",
            where=str(json_path),
            fix="point at a JSON file written by write_report",
        ) from exc
    return DriftReport.from_dict(data)


def _check_arguments(
    numeric: list[str],
    categorical: list[str],
    score_column: str | None,
    max_rows: int | None,
    alpha: float,
    window_start: datetime | None,
    window_end: datetime | None,
) -> None:
    where = "detect_drift"
    names = [*numeric, *categorical, *([score_column] if score_column is not None else [])]
    if not numeric and not categorical:
        raise ConfigError("no features to test", where=where, fix="pass numeric= and/or categorical= column names")
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ConfigError(
            f"columns listed twice: {duplicated}",
            where=where,
            fix="give each column one kind (numeric, categorical or the score)",
        )
    if max_rows is not None and max_rows < 1:
        raise ConfigError(
            f"max_rows must be at least 1 or None, got {max_rows}",
            where=where,
            fix="use max_rows=100_000 (the default) or None to test every row",
        )
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha must lie in (0, 1), got {alpha!r}", where=where, fix="use alpha=0.05")
    for label, stamp in (("window_start", window_start), ("window_end", window_end)):
        if stamp is not None and stamp.utcoffset() is None:
            raise ConfigError(
                f"{label}={stamp.isoformat()} has no timezone",
                where=where,
                fix="pass a tz-aware datetime, e.g. datetime(..., tzinfo=UTC)",
            )


def _normalise(
    frame: pd.DataFrame, numeric: list[str], categorical: list[str], score_column: str | None, name: str
) -> pd.DataFrame:
    """Numeric columns as float64 (inf = missing), categorical ones as categoricals with missing = MISSING."""
    out: dict[str, pd.Series] = {}
    for c in [*numeric, *([score_column] if score_column is not None else [])]:
        s = frame[c]
        if not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)):
            raise DataContractError(
                f"numeric column {c!r} has dtype {s.dtype}",
                where=f"the {name} frame",
                fix=f"list {c!r} under categorical= or convert it to numbers",
            )
        values = s.to_numpy(np.float64, na_value=np.nan)
        out[c] = pd.Series(np.where(np.isinf(values), np.nan, values))
    for c in categorical:
        s = frame[c]
        if not isinstance(s.dtype, pd.CategoricalDtype):
            s = s.astype("string").astype("category")
        if s.isna().any():
            s = s.cat.add_categories([MISSING]) if MISSING not in s.cat.categories else s
            s = s.fillna(MISSING)
        out[c] = s.reset_index(drop=True)
    return pd.DataFrame(out)


def _level_counts(ref: pd.Series, cur: pd.Series) -> tuple[list[str], np.ndarray, np.ndarray]:
    r = ref.astype(object).value_counts() if not isinstance(ref.dtype, pd.CategoricalDtype) else ref.value_counts()
    c = cur.astype(object).value_counts() if not isinstance(cur.dtype, pd.CategoricalDtype) else cur.value_counts()
    r.index, c.index = r.index.astype(str), c.index.astype(str)
    levels = sorted(set(r.index) | set(c.index))
    return levels, r.reindex(levels, fill_value=0).to_numpy(), c.reindex(levels, fill_value=0).to_numpy()


def _share(levels: list[str], counts: np.ndarray) -> float:
    total = counts.sum()
    return float(counts[levels.index(MISSING)] / total) if MISSING in levels and total else 0.0


def _pool_small_levels(table: np.ndarray) -> tuple[np.ndarray, int]:
    n = table.sum()
    smallest_expected = table.sum(axis=0) * table.sum(axis=1).min() / n
    small = smallest_expected < MIN_EXPECTED_COUNT
    if not small.any():
        return table, 0
    pooled = table[:, small].sum(axis=1, keepdims=True)
    rest = table[:, ~small]
    if rest.shape[1] and pooled.sum() * table.sum(axis=1).min() / n < MIN_EXPECTED_COUNT:
        j = int(np.argmin(rest.sum(axis=0)))
        rest = rest.copy()
        rest[:, j : j + 1] += pooled
        return rest, int(small.sum())
    return np.hstack([rest, pooled]), int(small.sum())


def _evidently_run(
    ref: pd.DataFrame,
    cur: pd.DataFrame,
    ks_columns: list[str],
    html_categorical: list[str],
    alpha: float,
    html_path: Path | None,
) -> tuple[dict[str, float], str]:
    """KS p-values by column from one Evidently report; writes its HTML to ``html_path`` when given."""
    os.environ.setdefault("DO_NOT_TRACK", "1")  # Evidently's usage telemetry, checked when it would send
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    version = metadata.version("evidently")
    metrics = [ValueDrift(column=c, method=KS, threshold=alpha) for c in ks_columns]
    metrics += [ValueDrift(column=c, method=_HTML_CATEGORICAL_METHOD) for c in html_categorical]
    if not metrics:
        return {}, version
    columns = [*ks_columns, *html_categorical]
    definition = DataDefinition(numerical_columns=ks_columns, categorical_columns=html_categorical)

    def dataset(frame: pd.DataFrame) -> Any:
        data = frame[columns]
        if html_categorical:
            data = data.astype({c: object for c in html_categorical})
        return Dataset.from_pandas(data, data_definition=definition)

    snapshot = Report(metrics).run(current_data=dataset(cur), reference_data=dataset(ref))
    p_values: dict[str, float] = {}
    for item in snapshot.dict()["metrics"]:
        config = item.get("config", {})
        if config.get("method") == KS and config.get("column") in ks_columns:
            p_values[str(config["column"])] = float(item["value"])
    absent = sorted(set(ks_columns) - set(p_values))
    if absent:
        raise RiskloopError(
            f"Evidently {version} returned no KS p-value for {absent}",
            where="detect_drift",
            fix="use the pinned evidently (pyproject.toml) or adapt riskloop.monitoring.drift",
        )
    if html_path is not None:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(html_path))
    return p_values, version


def normed_wasserstein(reference: np.ndarray, current: np.ndarray) -> float:
    """How far the values moved, in reference standard deviations: ``W1(reference, current) / sd(reference)``.

    The effect size a p-value is judged by (``MonitorPolicy.min_effect``, 0.1 by
    default, which is also Evidently's threshold for this distance). Not the KS
    distance D: on features that take few values shared by many rows (a
    merchant's 7-day count, the same for every transaction of that merchant
    that day) a shift of one count moves a whole step of the CDF, and D came
    out at 0.18-0.25 between two consecutive drift-free days of the synthetic
    set (160 merchants), where this distance stayed below 0.05. A reference
    without spread (a constant) uses the distance unscaled. NaN when a side is
    empty.
    """
    if not len(reference) or not len(current):
        return math.nan
    from scipy.stats import wasserstein_distance

    distance = float(wasserstein_distance(reference, current))
    spread = float(np.std(reference))
    return distance / spread if spread > 0 else distance


def _nan_to_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


__all__ = [
    "CHI_SQUARE",
    "DEFAULT_MAX_ROWS",
    "KS",
    "DriftReport",
    "FeatureDrift",
    "chi_square_homogeneity",
    "detect_drift",
    "read_report",
    "write_report",
]
