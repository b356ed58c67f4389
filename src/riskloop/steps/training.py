"""The training pipeline's steps: ingest, validate, training set, train, evaluate, gate, register, card.

Each takes artifact paths and typed values and returns a typed result (the pydantic models below); the
component in ``components/training.py`` only maps KFP artifacts to these arguments and serialises the result
with its model's own ``model_dump_json`` (a KFP parameter is a string). The gate is decided once, by
:func:`gate`, whose decision travels as an artifact to :func:`register` and :func:`model_card`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from riskloop import __version__
from riskloop.audit.log import open_audit_log
from riskloop.data.io import landed_files, read_file
from riskloop.data.spec import SpecSource, load_spec, read_spec_source
from riskloop.data.validate import REASON_COLUMN, enforce_gate, split_batch, write_quarantine
from riskloop.errors import ConfigError
from riskloop.hashing import frame_sha256
from riskloop.settings import Settings
from riskloop.steps.common import audit, parse_day, valid_frame
from riskloop.steps.features import build_features
from riskloop.training.gate import GateResult as GateResult  # re-exported: components read the gate artifact
from riskloop.version import git_commit, runtime_image

if TYPE_CHECKING:  # xgboost, sklearn, matplotlib: the steps that need them import them when they run
    from riskloop.model import ModelBundle
    from riskloop.training.evaluate import Evaluation

RUN_STATUS_OK = "SUCCEEDED"
# where the evaluation reads recall_at_fpr when the spec's threshold rule is no target FPR (credit's cost ratio)
DEFAULT_REPORT_FPR = 0.01


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Validated(_Result):
    """What the data contract did to a batch."""

    rows: int
    valid: int
    quarantined: int
    bad_fraction: float
    checks: dict[str, int]


class TrainingSet(_Result):
    """The training set a step wrote: its size, content hash, cutoff and labelled positives."""

    rows: int
    data_sha256: str
    cutoff: str
    positives: int


class TrainedModel(_Result):
    """The candidate ``train`` wrote and the MLflow run it opened."""

    mlflow_run_id: str
    model_sha256: str
    threshold: float
    dataset_spec_sha256: str


class Comparison(_Result):
    """The candidate's and the champion's metrics on the same test window: what the gate decides on."""

    candidate: dict[str, float]
    champion: dict[str, float] | None
    champion_version: str | None


class Registration(_Result):
    """The registered version and the aliases it got."""

    version: str
    aliases: list[str]
    approval_required: bool


class CardSummary(_Result):
    """What the model card holds: the version it describes, its sections and fairness tables."""

    version: str | None
    sections: int
    fairness: int


# ------------------------------------------------------------------------------- ingest
def ingest(spec_name: str, start_date: str, end_date: str, out_path: Path, settings: Settings) -> int:
    """Collect the landing partitions of ``[start_date, end_date]`` into one batch file; a spec with no time
    column has one landed snapshot, read whole whatever the window (its rows have no day to select by)."""
    spec = load_spec(spec_name)
    start, end = parse_day(start_date, "start_date"), parse_day(end_date, "end_date")
    if end < start:
        raise ConfigError(f"end_date {end} is before start_date {start}", fix="swap them")
    files = landed_files(spec, spec.source_path(settings.shared), start, end)
    df = pd.concat([read_file(f) for f in files], ignore_index=True)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(out_path, index=False)
    return len(df)


# ----------------------------------------------------------------------------- validate
def validate(
    spec_name: str,
    in_path: Path,
    valid_path: Path,
    quarantine_path: Path,
    max_bad_fraction: float,
    settings: Settings,
    pipeline_run_id: str,
) -> Validated:
    """Apply the data contract; write valid rows and the quarantine, then enforce the gate."""
    spec = load_spec(spec_name)
    contract = (  # landed data: a mapped label is int 0/1 by now
        spec.landed_contract
        if max_bad_fraction < 0
        else spec.landed_contract.model_copy(update={"max_bad_fraction": max_bad_fraction})
    )
    result = split_batch(read_file(in_path), contract, where=str(in_path))
    quarantine_path.parent.mkdir(parents=True, exist_ok=True)
    written = write_quarantine(result, quarantine_path)
    if written is None:  # an empty quarantine is still an artifact with the right columns
        result.quarantine.assign(**{REASON_COLUMN: pd.Series(dtype="string")}).to_parquet(quarantine_path, index=False)
    ids = {"dataset": spec.name, "pipeline_run_id": pipeline_run_id}
    summary = result.summary()
    if len(result.quarantine):
        audit(settings, "quarantined", ids, {**summary, "quarantine": str(quarantine_path)})
    enforce_gate(result, contract, where=str(in_path))
    valid_path.parent.mkdir(parents=True, exist_ok=True)
    result.valid.to_parquet(valid_path, index=False)
    audit(settings, "validated", ids, summary)
    return Validated.model_validate(summary)


# ------------------------------------------------------------------- build_training_set
def build_training_set(
    spec_name: str,
    valid_path: Path,
    cutoff_date: str,
    maturity_days: float,
    validation_days: float,
    test_days: float,
    seed: int,
    out_path: Path,
    settings: Settings,
) -> TrainingSet:
    """Features (Feast, point-in-time) + labels as known at the cutoff + time split → parquet."""
    from riskloop.features.store import historical_features, open_store
    from riskloop.model import LABEL, SPLIT, UNLABELLED
    from riskloop.training.dataset import WindowParams, assemble

    spec = load_spec(spec_name)
    cutoff = datetime.combine(parse_day(cutoff_date, "cutoff_date"), datetime.min.time(), tzinfo=timezone.utc)
    params = WindowParams(
        cutoff=cutoff, maturity_days=maturity_days, validation_days=validation_days, test_days=test_days, seed=seed
    )
    tx = valid_frame(spec, valid_path)
    features = None
    definitions: dict[str, Any] | None = None
    if spec.features.source == "feast" and spec.features.service:
        from riskloop.audit.lineage import feature_definitions
        from riskloop.features.store import StoreConfig

        build_features(spec_name, valid_path, settings)
        store = open_store(StoreConfig.from_settings(settings))
        features = historical_features(store, tx, spec.features.service)
        definitions = feature_definitions(store, spec.features.service)
    frame = assemble(tx, features, spec, params)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    days = None
    if spec.timestamp_column and len(tx):
        stamps = pd.to_datetime(tx[spec.timestamp_column], utc=True)
        days = [stamps.min().date().isoformat(), stamps.max().date().isoformat()]
    recipe = {
        "spec": spec.name,
        "source_days": days,
        "cutoff_date": cutoff_date,
        "maturity_days": maturity_days,
        "validation_days": validation_days,
        "test_days": test_days,
        "seed": seed,
    }
    _write_snapshot(frame, out_path, definitions, recipe)
    return TrainingSet(
        rows=len(frame),
        data_sha256=frame_sha256(frame),
        cutoff=cutoff.isoformat(),
        positives=int(frame.loc[frame[SPLIT] != UNLABELLED, LABEL].sum()),
    )


RECIPE_METADATA = b"riskloop.training_set_recipe"
RECIPE_TAG = "training_set_recipe"


def _write_snapshot(
    frame: pd.DataFrame, path: Path, definitions: dict[str, Any] | None, recipe: dict[str, Any]
) -> None:
    """The training set as parquet; what it was built from rides in its schema metadata: the Feast
    definitions and the recipe (spec, source days, cutoff, maturity, split, seed) that rebuilds it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from riskloop.audit.lineage import FEATURE_DEFINITIONS_METADATA

    table = pa.Table.from_pandas(frame, preserve_index=False)
    extra = {RECIPE_METADATA: json.dumps(recipe).encode()}
    if definitions is not None:
        extra[FEATURE_DEFINITIONS_METADATA] = json.dumps(definitions).encode()
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **extra})
    pq.write_table(table, path)


def snapshot_recipe(path: Path) -> str | None:
    """The recipe (JSON) a training set records, if any."""
    import pyarrow.parquet as pq

    raw = (pq.read_schema(path).metadata or {}).get(RECIPE_METADATA)
    return raw.decode() if raw else None


def snapshot_feature_definitions(path: Path) -> str | None:
    """The Feast definitions (JSON) a training set was built with, if it records them."""
    import pyarrow.parquet as pq

    from riskloop.audit.lineage import FEATURE_DEFINITIONS_METADATA

    raw = (pq.read_schema(path).metadata or {}).get(FEATURE_DEFINITIONS_METADATA)
    return raw.decode() if raw else None


# -------------------------------------------------------------------------------- train
def train(
    spec_name: str,
    training_set_path: Path,
    train_params: dict[str, Any],
    model_dir: Path,
    settings: Settings,
    *,
    pipeline_run_id: str,
    data_sha256: str,
    data_snapshot: str,
    cutoff_date: str,
    maturity_days: float,
) -> TrainedModel:
    """Train, write the model directory (an MLflow model), open the MLflow run (params + model + reference sample)."""
    from riskloop.audit.lineage import FEATURE_DEFINITIONS_TAG
    from riskloop.model import feature_spec
    from riskloop.model.pyfunc import save_mlflow_model
    from riskloop.registry.mlflow_registry import SPEC_FILE, SPEC_SHA256_TAG, log_evaluation, start_training_run
    from riskloop.training.dataset import training_window
    from riskloop.training.train import TrainParams, reference_sample, train_model

    source = read_spec_source(spec_name)
    spec = source.parse()
    params = TrainParams.model_validate(train_params)
    frame = pd.read_parquet(training_set_path)
    definitions = snapshot_feature_definitions(training_set_path)
    recipe = snapshot_recipe(training_set_path)
    fspec = feature_spec(spec)
    window = training_window(frame, spec)
    bundle = train_model(
        frame,
        fspec,
        params,
        model_dir,
        rule=spec.policy.threshold,
        meta={
            "dataset_spec": spec.name,
            "feature_service": spec.features.service or "raw",
            "training_window": {"start": window[0], "end": window[1]},
            "label_cutoff": cutoff_date,
            "maturity_days": maturity_days,
            "data_sha256": data_sha256,
            "git_commit": git_commit(),
        },
    )
    # the exact spec text goes with the model (MLflow artifact, and what KServe downloads): approval, card,
    # reproduce and lineage read the spec the version was trained under, not a file that may since be gone
    (model_dir / SPEC_FILE).write_bytes(source.text.encode())
    # the directory becomes an MLflow model, so the version registered from it loads with mlflow.pyfunc
    save_mlflow_model(model_dir, spec, fspec)
    mlflow_run_id = start_training_run(
        settings.tracking_uri,
        settings.mlflow.experiment,
        params={
            **params.model_dump(),
            "dataset_spec": spec.name,
            "cutoff_date": cutoff_date,
            "maturity_days": maturity_days,
            "threshold": bundle.threshold,
        },
        model_dir=model_dir,
        artifact_location=settings.experiment_artifact_location,
        tags={
            "pipeline_run_id": pipeline_run_id,
            "data_sha256": data_sha256,
            "data_snapshot": data_snapshot,
            "git_commit": git_commit(),
            "image": runtime_image(),
            "riskloop_version": __version__,
            SPEC_SHA256_TAG: source.sha256,
            **({FEATURE_DEFINITIONS_TAG: definitions} if definitions else {}),
            **({RECIPE_TAG: recipe} if recipe else {}),
        },
    )
    ref_dir = model_dir.parent / f"{model_dir.name}-reference"
    ref_dir.mkdir(parents=True, exist_ok=True)
    ref = ref_dir / "reference.parquet"
    reference_sample(frame, bundle, seed=params.seed).to_parquet(ref, index=False)
    log_evaluation(settings.tracking_uri, mlflow_run_id, metrics={}, files=[("reference", ref)])
    audit(
        settings,
        "trained",
        {"run_id": mlflow_run_id, "pipeline_run_id": pipeline_run_id, "dataset": spec.name},
        {
            "model_sha256": bundle.meta["model_sha256"],
            "data_sha256": data_sha256,
            "best_iteration": bundle.meta["best_iteration"],
            "threshold": bundle.threshold,
            "rows": bundle.meta["rows"],
            "params": params.model_dump(),
        },
    )
    return TrainedModel(
        mlflow_run_id=mlflow_run_id,
        model_sha256=bundle.meta["model_sha256"],
        threshold=bundle.threshold,
        dataset_spec_sha256=source.sha256,
    )


# ----------------------------------------------------------------------------- evaluate
@dataclass(frozen=True)
class EvaluateOutput:
    comparison: Comparison
    evaluation: dict[str, Any]
    plots: dict[str, Path]
    html: str
    fairness: tuple[dict[str, Any], ...] = ()  # one report per protected attribute of the spec


@dataclass(frozen=True)
class _Scored:
    """The candidate on the test window: labels, scores, metrics (with fairness) and fairness reports."""

    y: np.ndarray
    scores: np.ndarray
    threshold: float
    evaluation: Evaluation
    metrics: dict[str, float]
    fairness: tuple[dict[str, Any], ...]
    threshold_rule: str  # the rule that chose the threshold on validation, e.g. "cost ratio 5:1 (...)"


def _test_split(training_set_path: Path) -> pd.DataFrame:
    from riskloop.model import SPLIT

    frame = pd.read_parquet(training_set_path)
    return frame[frame[SPLIT] == "test"]


def score_candidate(
    test: pd.DataFrame, bundle: ModelBundle, protected: tuple[str, ...], *, target_fpr: float
) -> _Scored:
    """The candidate's metrics on the test window, fairness metrics included when the spec names groups."""
    from riskloop.model import LABEL
    from riskloop.training.evaluate import evaluate_scores
    from riskloop.training.fairness import fairness_metrics, fairness_reports

    y = test[LABEL].to_numpy()
    scores = bundle.predict_frame(test)
    ev = evaluate_scores(y, scores, threshold=bundle.threshold, target_fpr=target_fpr)
    metrics = ev.metrics()
    fairness: tuple[dict[str, Any], ...] = ()
    if protected:
        reports = fairness_reports(test, y, scores >= bundle.threshold, protected)
        metrics.update(fairness_metrics(reports))
        fairness = tuple(r.to_dict() for r in reports)
    rule = bundle.meta.get("threshold_rule")  # absent in models trained before the policy: a target FPR
    text = rule["text"] if rule else f"target false-positive rate {bundle.meta.get('target_fpr')}"
    return _Scored(y, scores, bundle.threshold, ev, metrics, fairness, text)


def score_champion(
    settings: Settings, spec_name: str, test: pd.DataFrame, *, target_fpr: float
) -> tuple[dict[str, float] | None, str | None]:
    """The current champion's metrics and version on the same test window; ``(None, None)`` when none."""
    from riskloop.model import LABEL, load_model
    from riskloop.registry.mlflow_registry import CHAMPION, download_model_dir, version_by_alias
    from riskloop.training.evaluate import evaluate_scores

    spec = load_spec(spec_name)
    champ = version_by_alias(settings.tracking_uri, spec.registered_model(settings.mlflow.model_name), CHAMPION)
    if champ is None:
        return None, None
    if champ.tags.get("dataset_spec") != spec.name:
        raise ConfigError(
            f"the champion of {champ.name} (version {champ.version}) was trained on "
            f"{champ.tags.get('dataset_spec')!r}, not {spec.name!r}: the two cannot be compared",
            fix="set model_name in the dataset spec or RISKLOOP_MLFLOW__MODEL_NAME for this dataset",
        )
    champ_dir = download_model_dir(settings.tracking_uri, champ.run_id)
    try:
        bundle = load_model(champ_dir, expected_sha256=champ.tags.get("model_sha256"))
        ev = evaluate_scores(
            test[LABEL].to_numpy(), bundle.predict_frame(test), threshold=bundle.threshold, target_fpr=target_fpr
        )
    finally:
        shutil.rmtree(champ_dir.parent, ignore_errors=True)
    return ev.metrics(), champ.version


def write_report(scored: _Scored, comparison: Comparison, report_dir: Path) -> tuple[dict[str, Path], str]:
    """Plots, the HTML report and evaluation.json in ``report_dir``; returns the plots and the HTML."""
    from riskloop.training.evaluate import plot_evaluation, render_report_html

    report_dir.mkdir(parents=True, exist_ok=True)
    plots = plot_evaluation(
        scored.y, scored.scores, threshold=scored.threshold, out_dir=report_dir, title="candidate, test window"
    )
    extra = {
        "threshold rule": scored.threshold_rule,
        "champion_version": comparison.champion_version or "none",
        "champion_metrics": comparison.champion or {},
    }
    html = render_report_html(scored.evaluation, plots, title="riskloop evaluation", extra=extra)
    (report_dir / "report.html").write_text(html)
    (report_dir / "evaluation.json").write_text(
        json.dumps(
            {
                "candidate": scored.evaluation.to_dict(),
                "threshold_rule": scored.threshold_rule,
                "champion": comparison.champion,
                "champion_version": comparison.champion_version,
                "fairness": list(scored.fairness),
            },
            default=str,
        )
    )
    return plots, html


def log_comparison(
    settings: Settings, mlflow_run_id: str, comparison: Comparison, report_dir: Path, plots: dict[str, Path]
) -> None:
    """The candidate's metrics, report and plots, and the champion's metrics (``champion_*``), to the run."""
    from riskloop.registry.mlflow_registry import log_evaluation

    log_evaluation(
        settings.tracking_uri,
        mlflow_run_id,
        metrics=comparison.candidate,
        files=[("evaluation", report_dir / "report.html"), *(("evaluation/plots", p) for p in plots.values())],
    )
    if comparison.champion:
        log_evaluation(settings.tracking_uri, mlflow_run_id, metrics=comparison.champion, prefix="champion_")


def evaluate(
    spec_name: str,
    training_set_path: Path,
    model_dir: Path,
    mlflow_run_id: str,
    report_dir: Path,
    settings: Settings,
    *,
    target_fpr: float | None = None,
) -> EvaluateOutput:
    """Score the candidate and the current champion on the same test window; report; log to the run.

    ``recall_at_fpr`` is read at ``target_fpr``; None = the spec's ``policy.threshold.target_fpr``, or 0.01 when
    the spec's rule is a flag rate or a cost ratio (the figure then only compares models)."""
    from riskloop.model import load_model

    spec = load_spec(spec_name)
    if target_fpr is None:
        target_fpr = spec.policy.threshold.target_fpr or DEFAULT_REPORT_FPR
    test = _test_split(training_set_path)
    scored = score_candidate(test, load_model(model_dir), spec.protected_attributes, target_fpr=target_fpr)
    champion, champion_version = score_champion(settings, spec_name, test, target_fpr=target_fpr)
    comparison = Comparison(candidate=scored.metrics, champion=champion, champion_version=champion_version)
    plots, html = write_report(scored, comparison, report_dir)
    log_comparison(settings, mlflow_run_id, comparison, report_dir, plots)
    return EvaluateOutput(comparison, scored.evaluation.to_dict(), plots, html, scored.fairness)


# --------------------------------------------------------------------------------- gate
def gate(
    comparison: Comparison,
    gate_params: dict[str, Any],
    settings: Settings,
    *,
    spec_name: str,
    mlflow_run_id: str,
    pipeline_run_id: str,
    gate_result_path: Path,
) -> GateResult:
    """The champion/challenger gate, decided here only: its decision is written to ``gate_result_path`` (read by
    register and the model card), tagged on the run and audited; a fail is data, never an exception.

    The thresholds are the spec's ``policy.gate`` with ``gate_params`` (the run's overrides) laid over them."""
    from riskloop.registry.mlflow_registry import set_run_tags
    from riskloop.training.gate import GateParams, decide_gate

    floors = load_spec(spec_name).policy.gate
    result = decide_gate(
        comparison.candidate,
        comparison.champion,
        GateParams.model_validate({**floors.model_dump(), **gate_params}),
        champion_version=comparison.champion_version,
    )
    result.write(gate_result_path)
    set_run_tags(settings.tracking_uri, mlflow_run_id, {"gate_result": result.summary()})
    audit(
        settings,
        "gated",
        {"run_id": mlflow_run_id, "pipeline_run_id": pipeline_run_id},
        {**result.to_dict(), "params": gate_params},
    )
    return result


# ----------------------------------------------------------------------------- register
def register(
    mlflow_run_id: str,
    model_dir: Path,
    gate_result: GateResult,
    spec_name: str,
    settings: Settings,
    *,
    pipeline_run_id: str,
    data_sha256: str,
    data_snapshot: str,
) -> Registration:
    """Register a passing candidate with its lineage and the spec it was trained under; alias ``challenger``.

    ``gate_result`` is the gate step's (read from its artifact), never decided again here. The first version of
    a model also becomes ``champion``, unless approval is required
    (:func:`riskloop.audit.approval.approval_requirement`): then it waits as ``challenger`` until
    ``riskloop approve`` and a promotion (``riskloop canary promote``) make it champion.
    """
    from riskloop.audit.anchors import anchor_event
    from riskloop.audit.approval import approval_requirement
    from riskloop.model import load_model
    from riskloop.registry.mlflow_registry import (
        AUDIT_HASH_TAG,
        AUDIT_SEQ_TAG,
        CHALLENGER,
        CHAMPION,
        LineageRecord,
        register_version,
        set_alias,
        version_by_alias,
    )

    if not gate_result.passed:
        raise ConfigError(
            "register was called for a candidate that failed the gate",
            fix="register runs only under dsl.If(gate passed)",
        )
    source = trained_spec(settings, mlflow_run_id, model_dir)
    _same_spec(spec_name, source, f"the model trained in MLflow run {mlflow_run_id}")
    spec = source.parse()
    bundle = load_model(model_dir)
    lineage = LineageRecord(
        model_sha256=bundle.meta["model_sha256"],
        data_sha256=data_sha256,
        data_snapshot=data_snapshot,
        feature_service=spec.features.service or "raw",
        git_commit=git_commit(),
        image=runtime_image(),
        pipeline_run_id=pipeline_run_id,
        gate_result=gate_result.summary(),
        riskloop_version=__version__,
        dataset_spec=spec.name,
        dataset_spec_sha256=source.sha256,
    )
    log = open_audit_log(settings.audit.backend, path=settings.audit_path, dsn=settings.audit.postgres_dsn)
    name = spec.registered_model(settings.mlflow.model_name)
    requirement = approval_requirement(settings, spec)
    # a first version would serve as champion without anyone having approved it: when approval is
    # required it stays challenger, and only an approved promotion makes it champion
    first = version_by_alias(settings.tracking_uri, name, CHAMPION) is None and not requirement.required
    head = log.head()
    version = register_version(
        settings.tracking_uri,
        name,
        mlflow_run_id,
        lineage,
        extra_tags={**({AUDIT_SEQ_TAG: str(head.seq), AUDIT_HASH_TAG: head.hash} if head else {})},
    )
    aliases = [CHALLENGER] + ([CHAMPION] if first else [])
    for alias in aliases:
        set_alias(settings.tracking_uri, name, alias, version)
    appended = log.append(
        "registered",
        actor=settings.audit.actor,
        ids={"model_version": version, "run_id": mlflow_run_id, "pipeline_run_id": pipeline_run_id},
        details={
            "model": name,
            "aliases": aliases,
            "lineage": lineage.tags(),
            "approval_required": requirement.required,
            "approval_why": requirement.why,
        },
    )
    anchor_event(settings, name, version, appended)
    return Registration(version=version, aliases=aliases, approval_required=requirement.required)


def trained_spec(settings: Settings, mlflow_run_id: str, model_dir: Path) -> SpecSource:
    """The spec text in ``model_dir``, checked against the run's tag and the copy logged to the run."""
    from riskloop.errors import ModelIntegrityError
    from riskloop.registry.mlflow_registry import SPEC_FILE, SPEC_SHA256_TAG, download_spec_text, run_info

    path = model_dir / SPEC_FILE
    if not path.is_file():
        raise ModelIntegrityError(
            f"the model directory has no {SPEC_FILE}",
            where=str(model_dir),
            fix="train it with this riskloop: the train step stores the spec with the model",
        )
    source = SpecSource(path.read_bytes().decode("utf-8"), str(path))
    recorded = run_info(settings.tracking_uri, mlflow_run_id)["tags"].get(SPEC_SHA256_TAG)
    logged = SpecSource(download_spec_text(settings.tracking_uri, mlflow_run_id), f"MLflow run {mlflow_run_id}")
    if not source.sha256 == recorded == logged.sha256:
        raise ModelIntegrityError(
            f"the spec in the model directory (sha256 {source.sha256[:12]}…), the run's tag {SPEC_SHA256_TAG} "
            f"({str(recorded)[:12]}…) and the run's artifact ({logged.sha256[:12]}…) disagree",
            where=f"MLflow run {mlflow_run_id}",
            fix="retrain: the model directory was altered after training",
        )
    return source


def _same_spec(spec_name: str, trained: SpecSource, what: str) -> None:
    """Stop when the spec named now is not the one ``what`` was trained under (a file edited mid-run)."""
    from riskloop.data.spec import spec_difference

    given = read_spec_source(spec_name)
    if given.sha256 != trained.sha256:
        raise ConfigError(
            f"the dataset spec {spec_name} changed since {what} was trained under it; what differs:\n"
            f"{spec_difference(trained, given) or '(whitespace or line endings only)'}",
            where=given.where,
            fix="put the file back as it was, or run the training again",
        )


# --------------------------------------------------------------------------- model_card
def model_card(
    spec_name: str | SpecSource,
    training_set_path: Path,
    model_dir: Path,
    mlflow_run_id: str,
    version: str | None,
    gate_result: GateResult | None,
    markdown_path: Path,
    html_path: Path,
    settings: Settings,
) -> CardSummary:
    """Write the model card (Markdown and HTML) of a registered version and log both to its MLflow run.

    A registered ``version`` is described by the spec it carries (checked against ``spec_name``, a name or
    path, or the text itself), so its approval requirement is the version's own. ``gate_result`` is the gate
    step's (its artifact, or the ``gated`` audit event read back), never decided again here.
    """
    from riskloop.audit.approval import approval_requirement, version_approval
    from riskloop.audit.card import build_model_card
    from riskloop.model import LABEL, SPLIT, load_model
    from riskloop.registry.mlflow_registry import get_version, log_evaluation
    from riskloop.training.fairness import fairness_reports

    source = spec_name if isinstance(spec_name, SpecSource) else read_spec_source(spec_name)
    spec = source.parse()
    name = spec.registered_model(settings.mlflow.model_name)
    if version is not None:
        requirement, _ = version_approval(
            settings, get_version(settings.tracking_uri, name, version), given_spec=source
        )
    else:
        requirement = approval_requirement(settings, spec)
    frame = pd.read_parquet(training_set_path)
    bundle = load_model(model_dir)
    fairness = []
    if spec.protected_attributes:
        test = frame[frame[SPLIT] == "test"]
        fairness = [
            r.to_dict()
            for r in fairness_reports(
                test, test[LABEL].to_numpy(), bundle.predict_frame(test) >= bundle.threshold, spec.protected_attributes
            )
        ]
    log = open_audit_log(settings.audit.backend, path=settings.audit_path, dsn=settings.audit.postgres_dsn)
    card = build_model_card(
        spec,
        frame,
        bundle,
        model_name=name,
        version=version,
        run_id=mlflow_run_id,
        gate_result=None if gate_result is None else gate_result.to_dict(),
        fairness=fairness,
        events=log.events(),
        approval_required=(requirement.required, requirement.why),
        spec_sha256=source.sha256,
    )
    for path, text in ((markdown_path, card.markdown), (html_path, card.html)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    with tempfile.TemporaryDirectory() as tmp:  # the artifacts' own names are KFP's: log them as model_card.*
        md, page = Path(tmp) / "model_card.md", Path(tmp) / "model_card.html"
        md.write_text(card.markdown)
        page.write_text(card.html)
        log_evaluation(
            settings.tracking_uri, mlflow_run_id, metrics={}, files=[("model_card", md), ("model_card", page)]
        )
    return CardSummary(version=version, sections=card.markdown.count("\n## "), fairness=len(fairness))


# ------------------------------------------------------------------ record_run_outcome
def record_run_outcome(pipeline_run_id: str, status: str, error: str, settings: Settings) -> str:
    """The exit handler's job: the run's outcome lands in the audit log, whatever happened."""
    event = "run_succeeded" if status == RUN_STATUS_OK else "run_failed"
    audit(settings, event, {"pipeline_run_id": pipeline_run_id}, {"status": status, "error": error})
    return event
