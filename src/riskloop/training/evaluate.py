"""Evaluate a binary risk model from its labels and scores.

Everything here works on two 1-D arrays, ``y_true`` (0/1 labels, 1 = fraud or
bad) and ``y_score`` (probabilities in ``[0, 1]``); no model object is needed.
A row is *flagged* when ``score >= threshold``. The decision threshold is
chosen on validation data by the dataset's threshold rule
(:func:`select_threshold`: a target false-positive rate, :func:`choose_threshold`;
a target flag rate, :func:`choose_threshold_for_flag_rate`; or a cost ratio,
:func:`choose_threshold_for_cost`) and then applied unchanged to the test window
(:func:`evaluate_scores`), so test metrics are not tuned on the test labels.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from riskloop.data.policy import ThresholdRule
from riskloop.errors import ConfigError, TrainingError
from riskloop.stats import stratified_bootstrap

ROC_CURVE_MAX_POINTS = 200
CALIBRATION_BINS = 10

# sklearn starts the ROC curve at threshold +inf (flag nothing). JSON has no
# infinity, and scores never exceed 1, so the next float above 1 means the same.
_ABOVE_ANY_SCORE = float(np.nextafter(1.0, 2.0))

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Evaluation:
    """Metrics of one model on one labelled window.

    ``roc_auc``, ``pr_auc`` (average precision), ``brier`` and ``recall_at_fpr``
    do not depend on the decision threshold. ``recall_at_fpr`` is the best
    recall any threshold reaches on *this* data while keeping the FPR at or
    below ``target_fpr`` (the ROC curve read at that FPR: an oracle figure for
    comparing models). The confusion matrix and ``precision``, ``recall``,
    ``fpr`` are at ``threshold``, the one the model will actually use.
    ``precision`` is 0.0 when nothing is flagged. ``roc_curve`` is
    ``(fpr, tpr, thresholds)`` with at most 200 points, first and last kept;
    its first threshold is the float just above 1.0 (flag nothing).
    """

    n: int
    positives: int
    roc_auc: float
    pr_auc: float
    recall_at_fpr: float
    target_fpr: float
    brier: float
    threshold: float
    tn: int
    fp: int
    fn: int
    tp: int
    precision: float
    recall: float
    fpr: float
    roc_curve: tuple[list[float], list[float], list[float]]

    def metrics(self) -> dict[str, float]:
        """Flat scalar metrics for MLflow and KFP ``Metrics`` (all values are floats)."""
        return {
            "roc_auc": self.roc_auc,
            "pr_auc": self.pr_auc,
            "recall_at_fpr": self.recall_at_fpr,
            "brier": self.brier,
            "precision": self.precision,
            "recall": self.recall,
            "fpr": self.fpr,
            "threshold": self.threshold,
            "n": float(self.n),
            "positives": float(self.positives),
        }

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-serialisable; the ROC curve as ``{"fpr", "tpr", "thresholds"}``."""
        fpr, tpr, thresholds = self.roc_curve
        return {
            "n": self.n,
            "positives": self.positives,
            "roc_auc": self.roc_auc,
            "pr_auc": self.pr_auc,
            "recall_at_fpr": self.recall_at_fpr,
            "target_fpr": self.target_fpr,
            "brier": self.brier,
            "threshold": self.threshold,
            "tn": self.tn,
            "fp": self.fp,
            "fn": self.fn,
            "tp": self.tp,
            "precision": self.precision,
            "recall": self.recall,
            "fpr": self.fpr,
            "roc_curve": {
                "fpr": list(fpr),
                "tpr": list(tpr),
                "thresholds": list(thresholds),
            },
        }


def _validate(
    y_true: npt.ArrayLike, y_score: npt.ArrayLike, where: str, *, both_classes: bool
) -> tuple[IntArray, FloatArray]:
    """Return labels as int64 0/1 and scores as float64, or raise a TrainingError."""
    try:
        y = np.asarray(y_true, dtype=np.float64)
        s = np.asarray(y_score, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TrainingError(
            f"labels and scores must be numeric arrays ({exc})",
            where=where,
            fix="pass 1-D arrays of 0/1 labels and float scores",
        ) from exc
    if y.ndim != 1 or s.ndim != 1:
        raise TrainingError(
            f"labels and scores must be 1-D, got shapes {y.shape} and {s.shape}",
            where=where,
            fix="pass one label and one score per row (for predict_proba output take column 1)",
        )
    if len(y) != len(s):
        raise TrainingError(
            f"{len(y)} labels but {len(s)} scores",
            where=where,
            fix="score exactly the rows whose labels you pass, in the same order",
        )
    if len(y) == 0:
        raise TrainingError("no rows to evaluate", where=where, fix="check the split's date window")
    bad_labels = ~np.isin(y, (0.0, 1.0))
    if bad_labels.any():
        examples = sorted({str(v) for v in y[bad_labels][:5]})
        raise TrainingError(
            f"{int(bad_labels.sum())} labels are not 0 or 1 (e.g. {', '.join(examples)})",
            where=where,
            fix="map the label column to 0 (legitimate) / 1 (fraud or bad) and drop unlabelled rows",
        )
    n_nan = int(np.isnan(s).sum())
    if n_nan:
        raise TrainingError(
            f"{n_nan} of {len(s)} scores are NaN",
            where=where,
            fix="check the model input for missing features the model cannot handle",
        )
    outside = (s < 0.0) | (s > 1.0)
    if outside.any():
        raise TrainingError(
            f"{int(outside.sum())} scores lie outside [0, 1] (min {s.min():.6g}, max {s.max():.6g})",
            where=where,
            fix="pass probabilities (predict_proba / objective binary:logistic), not margins",
        )
    labels = y.astype(np.int64)
    if both_classes:
        positives = int(labels.sum())
        if positives == 0 or positives == len(labels):
            only = "positive" if positives else "negative"
            raise TrainingError(
                f"all {len(labels)} labels are {only}: ranking metrics need both classes",
                where=where,
                fix="widen the evaluation window or move the label cutoff so it holds both classes",
            )
    return labels, s


def _validate_target_fpr(target_fpr: float, where: str) -> float:
    target = float(target_fpr)
    if not 0.0 <= target <= 1.0:
        raise TrainingError(
            f"target_fpr must lie in [0, 1], got {target_fpr!r}",
            where=where,
            fix="pass a false-positive rate such as 0.01 (1 % of legitimate rows flagged)",
        )
    return target


def _operating_points(y: IntArray, s: FloatArray) -> tuple[FloatArray, IntArray, IntArray]:
    """Each distinct score as a threshold, highest first, with the FP and TP counts it flags."""
    order = np.argsort(-s, kind="mergesort")
    s_sorted = s[order]
    y_sorted = y[order]
    # The last row of each run of equal scores: a threshold flags whole runs (ties).
    ends = np.r_[np.flatnonzero(np.diff(s_sorted)), len(s_sorted) - 1]
    tp = np.cumsum(y_sorted)[ends]
    fp = (ends + 1) - tp
    return s_sorted[ends], fp.astype(np.int64), tp.astype(np.int64)


def choose_threshold(y_true: npt.ArrayLike, y_score: npt.ArrayLike, target_fpr: float) -> float:
    """The smallest observed score whose FPR on this data is at most ``target_fpr``.

    A row is flagged when ``score >= threshold``; rows with equal scores are
    flagged together. The result is one of the scores in ``y_score``, so the
    next lower distinct score would push the FPR above the target. FPR is
    ``fp / negatives``, compared exactly as written. Deterministic.

    Raises TrainingError when the data has no negatives, when ``target_fpr``
    is outside ``[0, 1]``, or when the target is impossible: the highest score
    alone already flags too many negatives, so only a threshold flagging
    nothing would meet it.
    """
    where = f"choose_threshold(target_fpr={target_fpr!r})"
    target = _validate_target_fpr(target_fpr, where)
    y, s = _validate(y_true, y_score, where, both_classes=False)
    negatives = int(len(y) - y.sum())
    if negatives == 0:
        raise TrainingError(
            f"all {len(y)} rows are positive: a false-positive rate is undefined",
            where=where,
            fix="choose the threshold on a validation window that contains legitimate rows",
        )
    thresholds, fp, _ = _operating_points(y, s)
    feasible = np.flatnonzero(fp / negatives <= target)
    if len(feasible) == 0:
        raise TrainingError(
            f"no threshold reaches FPR <= {target:g}: the highest score {thresholds[0]:.6g} "
            f"already flags {int(fp[0])} of {negatives} negatives "
            f"(FPR {fp[0] / negatives:.6g})",
            where=where,
            fix="raise target_fpr, or use a larger validation window so the FPR can be that fine",
        )
    # FP counts grow as the threshold falls, so the feasible thresholds are a prefix.
    return float(thresholds[feasible[-1]])


def choose_threshold_for_flag_rate(y_score: npt.ArrayLike, flag_rate: float) -> float:
    """The smallest observed score that flags at most ``flag_rate`` of all rows (``score >= threshold``).

    Labels play no part: the rule fits a review capacity (a team that can look at 5 % of the cases).
    Rows with equal scores are flagged together, so ties can make the share lower than asked. Raises
    TrainingError when ``flag_rate`` is outside ``(0, 1)`` or when the highest score alone already flags
    more than that share.
    """
    where = f"choose_threshold_for_flag_rate(flag_rate={flag_rate!r})"
    if not 0.0 < float(flag_rate) < 1.0:
        raise TrainingError(
            f"flag_rate must lie in (0, 1), got {flag_rate!r}",
            where=where,
            fix="pass the share of cases to flag, such as 0.05",
        )
    no_labels, s = _validate(np.zeros(np.size(y_score)), y_score, where, both_classes=False)
    # with every label 0, the "false positives" of each threshold are simply the rows it flags
    thresholds, flagged, _ = _operating_points(no_labels, s)
    feasible = np.flatnonzero(flagged / len(s) <= float(flag_rate))
    if len(feasible) == 0:
        raise TrainingError(
            f"no threshold flags at most {flag_rate:g} of the rows: the highest score {thresholds[0]:.6g} "
            f"is shared by {int(flagged[0])} of {len(s)} rows",
            where=where,
            fix="raise flag_rate, or use a larger validation window",
        )
    return float(thresholds[feasible[-1]])


def choose_threshold_for_cost(y_true: npt.ArrayLike, y_score: npt.ArrayLike, cost_ratio: float) -> float:
    """The threshold with the lowest expected cost ``cost_ratio * FN + FP`` on this data.

    ``cost_ratio`` is the cost of a missed positive over the cost of a wrongly flagged negative (credit: a
    bad loan granted costs about five good applicants turned away). Every observed score is a candidate
    threshold, and so is flagging nothing (the float just above the highest score); among equal costs the
    highest threshold wins (fewest flags). Deterministic. Raises TrainingError when ``cost_ratio`` is not
    positive, or when the data holds a single class (the cost then does not depend on the model).
    """
    where = f"choose_threshold_for_cost(cost_ratio={cost_ratio!r})"
    ratio = float(cost_ratio)
    if not (math.isfinite(ratio) and ratio > 0.0):
        raise TrainingError(
            f"cost_ratio must be a positive number, got {cost_ratio!r}",
            where=where,
            fix="pass cost of a missed positive / cost of a wrongly flagged negative, such as 5",
        )
    y, s = _validate(y_true, y_score, where, both_classes=True)
    thresholds, fp, tp = _operating_points(y, s)
    positives = int(y.sum())
    # index 0: flag nothing (all positives missed, no false flags); then each threshold, highest first
    cost = np.r_[ratio * positives, ratio * (positives - tp) + fp]
    best = int(np.argmin(cost))  # argmin takes the first minimum: the highest threshold
    if best == 0:
        return float(np.nextafter(thresholds[0], np.inf))
    return float(thresholds[best - 1])


def select_threshold(y_true: npt.ArrayLike, y_score: npt.ArrayLike, rule: ThresholdRule) -> float:
    """The decision threshold on validation data by the dataset's rule (``policy.threshold`` of its spec)."""
    if rule.kind == "target_fpr":
        return choose_threshold(y_true, y_score, rule.value)
    if rule.kind == "flag_rate":
        return choose_threshold_for_flag_rate(y_score, rule.value)
    return choose_threshold_for_cost(y_true, y_score, rule.value)


def _recall_at_fpr(y: IntArray, s: FloatArray, target: float) -> float:
    negatives = int(len(y) - y.sum())
    positives = int(y.sum())
    _, fp, tp = _operating_points(y, s)
    feasible = np.flatnonzero(fp / negatives <= target)
    if len(feasible) == 0:
        # Only flagging nothing keeps the FPR low enough.
        return 0.0
    return float(tp[feasible[-1]] / positives)


def _downsample(n_points: int, max_points: int) -> IntArray:
    """Indices of at most ``max_points`` evenly spread points, first and last included."""
    if n_points <= max_points:
        return np.arange(n_points, dtype=np.int64)
    return np.unique(np.round(np.linspace(0, n_points - 1, max_points)).astype(np.int64))


def evaluate_scores(
    y_true: npt.ArrayLike,
    y_score: npt.ArrayLike,
    *,
    threshold: float,
    target_fpr: float,
) -> Evaluation:
    """Evaluate scores on one labelled window at a given decision threshold.

    ``threshold`` comes from :func:`choose_threshold` on validation data;
    ``target_fpr`` is the FPR at which ``recall_at_fpr`` is read.

    Raises TrainingError when labels and scores differ in length, are empty,
    labels are not 0/1 or hold a single class, scores are NaN or outside
    ``[0, 1]``, the threshold is NaN, or ``target_fpr`` is outside ``[0, 1]``.
    """
    where = f"evaluate_scores(threshold={threshold!r}, target_fpr={target_fpr!r})"
    target = _validate_target_fpr(target_fpr, where)
    if math.isnan(threshold):
        raise TrainingError(
            "threshold is NaN",
            where=where,
            fix="pass the threshold returned by choose_threshold on validation data",
        )
    y, s = _validate(y_true, y_score, where, both_classes=True)
    flagged = s >= threshold
    positive = y == 1
    tp = int(np.sum(flagged & positive))
    fp = int(np.sum(flagged & ~positive))
    fn = int(np.sum(~flagged & positive))
    tn = int(np.sum(~flagged & ~positive))

    fpr_curve, tpr_curve, thr_curve = roc_curve(y, s, drop_intermediate=True)
    thr_curve = np.where(np.isinf(thr_curve), _ABOVE_ANY_SCORE, thr_curve)
    keep = _downsample(len(fpr_curve), ROC_CURVE_MAX_POINTS)

    return Evaluation(
        n=len(y),
        positives=tp + fn,
        roc_auc=float(roc_auc_score(y, s)),
        pr_auc=float(average_precision_score(y, s)),
        recall_at_fpr=_recall_at_fpr(y, s, target),
        target_fpr=target,
        brier=float(brier_score_loss(y, s)),
        threshold=float(threshold),
        tn=tn,
        fp=fp,
        fn=fn,
        tp=tp,
        precision=tp / (tp + fp) if tp + fp else 0.0,
        recall=tp / (tp + fn),
        fpr=fp / (fp + tn),
        roc_curve=(
            [float(v) for v in fpr_curve[keep]],
            [float(v) for v in tpr_curve[keep]],
            [float(v) for v in thr_curve[keep]],
        ),
    )


def bootstrap_ci(
    y_true: npt.ArrayLike,
    y_score: npt.ArrayLike,
    metric: Callable[[npt.NDArray[Any], npt.NDArray[Any]], float],
    *,
    n_boot: int = 200,
    alpha: float = 0.05,
    seed: int,
) -> tuple[float, float, float]:
    """``(point, low, high)``: the metric on all rows and a percentile bootstrap interval.

    :func:`riskloop.stats.stratified_bootstrap` resamples positives and
    negatives separately (each with replacement, to its own count), so every
    resample keeps the class balance and rare positives never vanish.
    ``metric(y_true, y_score)`` is e.g. ``sklearn.metrics.roc_auc_score``. The
    interval is the ``alpha / 2`` and ``1 - alpha / 2`` quantiles of
    ``n_boot`` resamples; deterministic by ``seed``. Labels and scores that
    break the contract raise TrainingError (as in :func:`evaluate_scores`);
    ``n_boot < 2``, ``alpha`` outside (0, 1) and a metric that is not finite
    on a resample raise ConfigError.
    """
    where = f"bootstrap_ci(n_boot={n_boot!r}, alpha={alpha!r}, seed={seed!r})"
    if not 0.0 < alpha < 1.0:
        raise ConfigError(
            f"alpha must lie in (0, 1), got {alpha!r}", where=where, fix="use alpha=0.05 for a 95 % interval"
        )
    y, s = _validate(y_true, y_score, where, both_classes=True)
    point = float(metric(y, s))
    if not math.isfinite(point):
        raise ConfigError(
            "the metric returned a non-finite value on the data",
            where=where,
            fix="pass a metric that is defined whenever both classes are present",
        )
    low, high, _ = stratified_bootstrap(
        y,
        lambda idx: np.array([metric(y[rows], s[rows]) for rows in idx], dtype=np.float64),
        n_boot=n_boot,
        confidence=1.0 - alpha,
        seed=seed,
        where=where,
    )
    return point, low, high


def _operating_point(y: IntArray, s: FloatArray, threshold: float) -> tuple[float, float, float]:
    """(fpr, recall, precision) when flagging ``score >= threshold``."""
    flagged = s >= threshold
    tp = int(np.sum(flagged & (y == 1)))
    fp = int(np.sum(flagged & (y == 0)))
    positives = int(y.sum())
    negatives = len(y) - positives
    precision = tp / (tp + fp) if tp + fp else 0.0
    return fp / negatives, tp / positives, precision


def plot_evaluation(
    y_true: npt.ArrayLike,
    y_score: npt.ArrayLike,
    *,
    threshold: float,
    out_dir: Path,
    title: str,
) -> dict[str, Path]:
    """Write ``roc.png``, ``pr.png`` and ``calibration.png`` into ``out_dir`` (created if missing).

    ROC and precision-recall curves mark the operating point at ``threshold``;
    the calibration plot is a reliability diagram over quantile bins (equal row
    counts, so sparse high scores still get a point) above a histogram of
    scores per class. Uses matplotlib's object API, no pyplot state. Returns
    ``{"roc": path, "pr": path, "calibration": path}``.
    """
    where = f"plot_evaluation(out_dir={str(out_dir)!r})"
    y, s = _validate(y_true, y_score, where, both_classes=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    op_fpr, op_recall, op_precision = _operating_point(y, s, threshold)
    prevalence = float(y.mean())
    paths = {
        "roc": out_dir / "roc.png",
        "pr": out_dir / "pr.png",
        "calibration": out_dir / "calibration.png",
    }

    fpr, tpr, _ = roc_curve(y, s)
    fig = Figure(figsize=(5.5, 5), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(fpr, tpr, label=f"model (AUC {roc_auc_score(y, s):.4f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="random")
    ax.plot([op_fpr], [op_recall], "o", color="crimson", label=f"threshold {threshold:.4g}")
    ax.set(
        xlabel="false-positive rate",
        ylabel="true-positive rate (recall)",
        title=f"{title}: ROC",
    )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="lower right")
    fig.savefig(paths["roc"], format="png", dpi=100)

    precision, recall, _ = precision_recall_curve(y, s)
    fig = Figure(figsize=(5.5, 5), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(
        recall,
        precision,
        drawstyle="steps-post",
        label=f"model (AP {average_precision_score(y, s):.4f})",
    )
    ax.axhline(prevalence, linestyle="--", color="grey", label=f"prevalence {prevalence:.4f}")
    ax.plot(
        [op_recall],
        [op_precision],
        "o",
        color="crimson",
        label=f"threshold {threshold:.4g}",
    )
    ax.set(xlabel="recall", ylabel="precision", title=f"{title}: precision-recall")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="lower left")
    fig.savefig(paths["pr"], format="png", dpi=100)

    prob_true, prob_pred = calibration_curve(y, s, n_bins=CALIBRATION_BINS, strategy="quantile")
    fig = Figure(figsize=(5.5, 6.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    top.plot(prob_pred, prob_true, "o-", label=f"model ({CALIBRATION_BINS} quantile bins)")
    top.set(ylabel="observed positive rate", title=f"{title}: calibration")
    top.set_ylim(0, 1.01)
    top.legend(loc="upper left")
    bins = np.linspace(0.0, 1.0, 51)
    bottom.hist(s[y == 0], bins=bins, alpha=0.6, label="negative")
    bottom.hist(s[y == 1], bins=bins, alpha=0.6, label="positive")
    bottom.set_yscale("log")
    bottom.set(xlabel="score", ylabel="rows")
    bottom.set_xlim(0, 1)
    bottom.legend(loc="upper right")
    fig.savefig(paths["calibration"], format="png", dpi=100)

    return paths


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        text = str(value)
    elif isinstance(value, int):
        text = f"{value:,}"
    elif isinstance(value, float):
        text = f"{value:.4f}"
    elif isinstance(value, Mapping | list | tuple):
        text = json.dumps(value, default=str, sort_keys=True)
    else:
        text = str(value)
    return html.escape(text)


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2rem;color:#222}"
    "table{border-collapse:collapse;margin:0 0 1.5rem}"
    "td,th{border:1px solid #ccc;padding:.3rem .7rem;text-align:left}"
    "td.num{text-align:right;font-variant-numeric:tabular-nums}"
    "figure{display:inline-block;margin:0 1rem 1rem 0}"
    "img{max-width:560px}"
)


def render_report_html(
    evaluation: Evaluation,
    plots: Mapping[str, Path],
    *,
    title: str,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """A self-contained HTML page: metrics, confusion matrix, ``extra`` facts and the plots.

    Plots are embedded as base64 PNG, so the page can be stored as a single
    file (a KFP HTML artifact, an MLflow artifact). Floats are shown with four
    decimals, the threshold with six significant digits.
    """
    ev = evaluation
    rows = [
        ("ROC-AUC", _cell(ev.roc_auc)),
        ("PR-AUC (average precision)", _cell(ev.pr_auc)),
        (f"recall at FPR &le; {_cell(ev.target_fpr)}", _cell(ev.recall_at_fpr)),
        ("Brier score", _cell(ev.brier)),
        ("decision threshold (score &ge;)", html.escape(f"{ev.threshold:.6g}")),
        ("precision at threshold", _cell(ev.precision)),
        ("recall at threshold", _cell(ev.recall)),
        ("FPR at threshold", _cell(ev.fpr)),
        ("rows", _cell(ev.n)),
        ("positives", _cell(ev.positives)),
    ]
    metrics_table = "".join(f"<tr><th>{k}</th><td class=num>{v}</td></tr>" for k, v in rows)
    confusion = (
        "<tr><th></th><th>flagged</th><th>not flagged</th></tr>"
        f"<tr><th>positive</th><td class=num>{_cell(ev.tp)}</td><td class=num>{_cell(ev.fn)}</td></tr>"
        f"<tr><th>negative</th><td class=num>{_cell(ev.fp)}</td><td class=num>{_cell(ev.tn)}</td></tr>"
    )
    extra_html = ""
    if extra:
        extra_rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_cell(v)}</td></tr>" for k, v in extra.items())
        extra_html = f"<h2>Details</h2><table>{extra_rows}</table>"
    figures = []
    for name, path in plots.items():
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        label = html.escape(name)
        figures.append(
            f'<figure><img alt="{label}" src="data:image/png;base64,{data}"><figcaption>{label}</figcaption></figure>'
        )
    t = html.escape(title)
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{t}</title>'
        f"<style>{_CSS}</style></head><body>"
        f"<h1>{t}</h1>"
        f"<h2>Metrics</h2><table>{metrics_table}</table>"
        f"<h2>Confusion matrix at the threshold</h2><table>{confusion}</table>"
        f"{extra_html}"
        f"<h2>Plots</h2>{''.join(figures)}"
        "</body></html>\n"
    )
