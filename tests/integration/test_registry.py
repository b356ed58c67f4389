"""The MLflow adapter against a real MLflow on sqlite: runs, lineage tags, aliases, downloads, audit anchors."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from riskloop.errors import RegistryError
from riskloop.hashing import sha256_file
from riskloop.model import MODEL_FILE, SPLIT, ModelBundle, load_model
from riskloop.registry.mlflow_registry import (
    AUDIT_HASH_TAG,
    AUDIT_SEQ_TAG,
    CHALLENGER,
    CHAMPION,
    LINEAGE_TAGS,
    MODEL_DIR_ARTIFACT,
    PREVIOUS,
    LineageRecord,
    audit_anchors,
    delete_alias,
    download_model_dir,
    get_version,
    list_versions,
    log_evaluation,
    register_version,
    run_info,
    set_alias,
    start_training_run,
    version_by_alias,
)
from riskloop.training.train import train_model
from tests.unit.test_train import META, PARAMS, toy_features, toy_frame

MODEL = "fraud-detector"


@dataclass(frozen=True)
class Registry:
    uri: str
    artifacts: str
    model_dir: Path
    bundle: ModelBundle


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    root = tmp_path_factory.mktemp("mlflow")
    model_dir = root / "model"
    bundle = train_model(toy_frame(), toy_features(), PARAMS, model_dir, meta=META)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        # MLflow resolves defaults against the working directory; keep anything stray out of the repo.
        mp.chdir(root)
        yield Registry(f"sqlite:///{root}/mlflow.db", (root / "artifacts").as_uri(), model_dir, bundle)
    assert not (root / "mlruns").exists()


def lineage(bundle: ModelBundle, **overrides: str) -> LineageRecord:
    base = LineageRecord(
        model_sha256=bundle.meta["model_sha256"],
        data_sha256="d" * 64,
        data_snapshot="data/toy@2026-01-31",
        feature_service="raw",
        git_commit="abc1234",
        image="riskloop:0.1.0-abc1234",
        pipeline_run_id="run-42",
        gate_result="passed",
        riskloop_version="0.1.0",
        dataset_spec="toy-fraud",
        dataset_spec_sha256="e" * 64,
    )
    return replace(base, **overrides)


def train_run(reg: Registry, experiment: str = "riskloop-test") -> str:
    return start_training_run(
        reg.uri,
        experiment,
        params={"n_estimators": 30, "features": ["x1", "x2", "kind"]},
        model_dir=reg.model_dir,
        artifact_location=reg.artifacts,
        tags={"purpose": "test"},
    )


def test_registered_version_carries_the_full_lineage(registry: Registry, tmp_path: Path) -> None:
    run_id = train_run(registry)
    report = tmp_path / "report.html"
    report.write_text("<html>ok</html>")
    log_evaluation(
        registry.uri, run_id, metrics={"pr_auc": 0.5, "roc_auc": 0.9}, files=[("evaluation", report)], prefix="test_"
    )
    lin = lineage(registry.bundle)
    version = register_version(registry.uri, MODEL, run_id, lin)

    info = get_version(registry.uri, MODEL, version)
    assert info.run_id == run_id
    assert set(LINEAGE_TAGS) <= set(info.tags)
    assert {k: info.tags[k] for k in LINEAGE_TAGS} == lin.tags()
    assert LineageRecord.from_tags(info.tags) == lin
    assert len(LINEAGE_TAGS) == 11

    run = run_info(registry.uri, run_id)
    assert run["metrics"] == {"test_pr_auc": 0.5, "test_roc_auc": 0.9}
    assert run["params"]["n_estimators"] == "30"
    assert json.loads(run["params"]["features"]) == ["x1", "x2", "kind"]
    assert run["tags"]["purpose"] == "test"
    assert run["status"] == "FINISHED"
    assert run["artifact_uri"].startswith(registry.artifacts)


def test_aliases_are_set_moved_and_absent(registry: Registry) -> None:
    name = "alias-model"
    assert version_by_alias(registry.uri, name, CHAMPION) is None  # no such model yet
    run_id = train_run(registry)
    v1 = register_version(registry.uri, name, run_id, lineage(registry.bundle, pipeline_run_id="run-1"))
    v2 = register_version(registry.uri, name, run_id, lineage(registry.bundle, pipeline_run_id="run-2"))
    assert (v1, v2) == ("1", "2")
    assert version_by_alias(registry.uri, name, CHAMPION) is None  # model exists, alias does not

    set_alias(registry.uri, name, CHAMPION, v1)
    set_alias(registry.uri, name, CHALLENGER, v2)
    champion = version_by_alias(registry.uri, name, CHAMPION)
    assert champion is not None
    assert (champion.version, champion.aliases) == ("1", (CHAMPION,))
    assert champion.tags["pipeline_run_id"] == "run-1"

    # Promotion: the challenger becomes champion, the old champion becomes previous.
    set_alias(registry.uri, name, PREVIOUS, v1)
    set_alias(registry.uri, name, CHAMPION, v2)
    delete_alias(registry.uri, name, CHALLENGER)
    moved = version_by_alias(registry.uri, name, CHAMPION)
    assert moved is not None and moved.version == "2"
    assert set(moved.aliases) == {CHAMPION}
    prev = version_by_alias(registry.uri, name, PREVIOUS)
    assert prev is not None and prev.version == "1"
    assert version_by_alias(registry.uri, name, CHALLENGER) is None
    delete_alias(registry.uri, name, CHALLENGER)  # deleting an absent alias is a no-op

    assert [v.version for v in list_versions(registry.uri, name)] == ["1", "2"]


def test_list_versions_reports_aliases(registry: Registry) -> None:
    name = "listed-model"
    run_id = train_run(registry)
    v1 = register_version(registry.uri, name, run_id, lineage(registry.bundle))
    v2 = register_version(registry.uri, name, run_id, lineage(registry.bundle))
    set_alias(registry.uri, name, PREVIOUS, v1)
    set_alias(registry.uri, name, CHAMPION, v2)
    versions = list_versions(registry.uri, name)
    assert {v.version: set(v.aliases) for v in versions} == {"1": {PREVIOUS}, "2": {CHAMPION}}


def test_unknown_version_is_a_registry_error(registry: Registry) -> None:
    with pytest.raises(RegistryError) as err:
        get_version(registry.uri, "no-such-model", "1")
    assert err.value.fix


def test_lineage_from_incomplete_tags_is_a_registry_error(registry: Registry) -> None:
    tags = lineage(registry.bundle).tags()
    del tags["git_commit"]
    with pytest.raises(RegistryError, match="git_commit"):
        LineageRecord.from_tags(tags)


def test_downloaded_model_dir_matches_the_lineage_hash(registry: Registry, tmp_path: Path) -> None:
    run_id = train_run(registry)
    lin = lineage(registry.bundle)
    version = register_version(registry.uri, MODEL, run_id, lin)
    set_alias(registry.uri, MODEL, CHALLENGER, version)
    found = version_by_alias(registry.uri, MODEL, CHALLENGER)
    assert found is not None

    d = download_model_dir(registry.uri, found.run_id, tmp_path / "dl")
    assert d.name == MODEL_DIR_ARTIFACT and d.is_relative_to(tmp_path / "dl")
    assert sha256_file(d / MODEL_FILE) == found.tags["model_sha256"] == lin.model_sha256
    bundle = load_model(d, expected_sha256=found.tags["model_sha256"])
    assert bundle.features == registry.bundle.features
    assert bundle.threshold == registry.bundle.threshold
    frame = toy_frame()
    test = frame[frame[SPLIT] == "test"]
    np.testing.assert_array_equal(bundle.predict_frame(test), registry.bundle.predict_frame(test))

    default_dest = download_model_dir(registry.uri, run_id)
    try:
        assert sha256_file(default_dest / MODEL_FILE) == lin.model_sha256
    finally:
        shutil.rmtree(default_dest.parent)


def test_audit_anchors_come_from_version_tags(registry: Registry) -> None:
    name = "anchored-model"
    assert audit_anchors(registry.uri, name) == []
    run_id = train_run(registry)
    register_version(
        registry.uri, name, run_id, lineage(registry.bundle), extra_tags={AUDIT_SEQ_TAG: "7", AUDIT_HASH_TAG: "h7"}
    )
    register_version(registry.uri, name, run_id, lineage(registry.bundle))  # no anchor
    register_version(
        registry.uri, name, run_id, lineage(registry.bundle), extra_tags={AUDIT_SEQ_TAG: "12", AUDIT_HASH_TAG: "h12"}
    )
    assert audit_anchors(registry.uri, name) == [(7, "h7"), (12, "h12")]
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
