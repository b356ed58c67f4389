"""Rebuild a registered version from its records and say whether the result is the same, byte for byte.

:func:`reproduce_version` reads what the version and its MLflow run recorded:
the dataset spec it was trained under (its exact text, stored with the model and
checked against the version's ``dataset_spec_sha256``, so a spec given by path
that has since moved, changed or gone still rebuilds), the training-set recipe (source days, label cutoff,
maturity, split, seed; run tag ``training_set_recipe``), the hyperparameters
(``model.json``), the data hash, the model hash and the git commit. It then
runs the same library steps as the pipeline (hence it lives with the steps, above audit), in a work directory under the
state dir: ingest the landed partitions of the source days, validate them
against the contract, build the training set through Feast, and train.

It reports, without stopping at the first difference: whether the rebuilt
training frame has the recorded ``data_sha256`` (if not, the landed data or
the feature code changed), whether the code is the recorded commit (a warning
when HEAD differs, and whether ``uv.lock`` differs between the two), and
whether the new ``model.ubj`` has the recorded ``model_sha256``.

Like a training run, it rewrites the Feast offline tables and registry
definitions from the rebuilt window (that is how the pipeline computes
features); it does not touch the registry's versions or aliases, and logs no
MLflow run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from riskloop.errors import ConfigError
from riskloop.settings import Settings


@dataclass(frozen=True)
class ReproduceReport:
    model: str
    version: str
    work_dir: str
    recipe: dict[str, Any]
    data_sha256_recorded: str
    data_sha256_rebuilt: str
    model_sha256_recorded: str
    model_sha256_rebuilt: str
    commit_recorded: str
    commit_now: str
    lock_file_changed: bool | None  # None: no repository to compare in
    warnings: list[str] = field(default_factory=list)

    @property
    def data_identical(self) -> bool:
        return self.data_sha256_recorded == self.data_sha256_rebuilt

    @property
    def model_identical(self) -> bool:
        return self.model_sha256_recorded == self.model_sha256_rebuilt

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "data_identical": self.data_identical, "model_identical": self.model_identical}


def _lock_changed(commit: str) -> bool | None:
    from riskloop.audit.lineage import _repo_root, commit_in_history

    root = _repo_root()
    if root is None or not commit_in_history(commit, root):
        return None
    r = subprocess.run(["git", "diff", "--quiet", commit, "--", "uv.lock"], cwd=root, capture_output=True, timeout=30)
    return r.returncode != 0


def reproduce_version(
    s: Settings, model_name: str, version: str, *, work_dir: Path | None = None, given_spec: str | None = None
) -> ReproduceReport:
    """Rebuild ``version`` of ``model_name`` from its records (see the module docstring); ``given_spec`` (a
    ``--spec``) must be the spec the version was trained under."""
    from riskloop.hashing import sha256_file
    from riskloop.model import MODEL_FILE, feature_spec, load_model
    from riskloop.registry.mlflow_registry import SPEC_FILE, download_model_dir, resolve_version, run_info
    from riskloop.registry.version_spec import check_given_spec, version_spec
    from riskloop.steps import training as steps
    from riskloop.training.train import TrainParams, train_model
    from riskloop.version import git_commit

    info = resolve_version(s.tracking_uri, model_name, version=version)
    source = version_spec(s.tracking_uri, info)
    if given_spec is not None:
        check_given_spec(given_spec, source, info)
    run = run_info(s.tracking_uri, info.run_id)
    recipe_text = run["tags"].get(steps.RECIPE_TAG)
    if not recipe_text:
        raise ConfigError(
            f"version {info.version} of {model_name} has no training-set recipe",
            where=f"MLflow run {info.run_id}, tag {steps.RECIPE_TAG}",
            fix="only versions trained since recipes are recorded can be rebuilt; retrain it",
        )
    recipe = json.loads(recipe_text)
    warnings: list[str] = []
    commit, now = info.tags.get("git_commit", "unknown"), git_commit()
    if commit != now:
        warnings.append(
            f"the code is at commit {now[:12]}, the version was trained at {commit[:12]}: "
            f"check out {commit[:12]} for a faithful rebuild"
        )
    lock_changed = _lock_changed(commit) if commit != now else False
    if lock_changed:
        warnings.append(f"uv.lock differs from commit {commit[:12]}: library versions may differ")

    work = work_dir or s.root / "reproduce" / f"{model_name}-v{info.version}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    spec_path = work / SPEC_FILE  # the steps read the version's own spec text, by path
    spec_path.write_bytes(source.text.encode())
    spec_name = str(spec_path)
    days = recipe.get("source_days")
    start, end = (days[0], days[1]) if days else (date.min.isoformat(), date.max.isoformat())
    steps.ingest(spec_name, start, end, work / "batch.parquet", s)
    steps.validate(
        spec_name,
        work / "batch.parquet",
        work / "valid.parquet",
        work / "quarantine.parquet",
        -1.0,
        s,
        f"reproduce-{model_name}-v{info.version}",
    )
    built = steps.build_training_set(
        spec_name,
        work / "valid.parquet",
        recipe["cutoff_date"],
        float(recipe["maturity_days"]),
        float(recipe["validation_days"]),
        float(recipe["test_days"]),
        int(recipe["seed"]),
        work / "training_set.parquet",
        s,
    )
    if built.data_sha256 != info.tags.get("data_sha256"):
        warnings.append(
            "the rebuilt training frame differs from the recorded one (data_sha256): the landed data, "
            "the contract or the feature code changed since training"
        )

    recorded_dir = download_model_dir(s.tracking_uri, info.run_id)
    try:
        recorded = load_model(recorded_dir, expected_sha256=info.tags["model_sha256"])
        params = TrainParams.model_validate(recorded.meta["train_params"])
        meta_keys = (
            "dataset_spec",
            "feature_service",
            "training_window",
            "label_cutoff",
            "maturity_days",
            "data_sha256",
            "git_commit",
        )
        meta = {k: recorded.meta.get(k) for k in meta_keys}
    finally:
        shutil.rmtree(recorded_dir.parent, ignore_errors=True)
    import pandas as pd

    frame = pd.read_parquet(work / "training_set.parquet")
    spec = source.parse()
    train_model(frame, feature_spec(spec), params, work / "model", meta=meta, rule=spec.policy.threshold)
    rebuilt_sha = sha256_file(work / "model" / MODEL_FILE)
    return ReproduceReport(
        model=model_name,
        version=info.version,
        work_dir=str(work),
        recipe=recipe,
        data_sha256_recorded=info.tags.get("data_sha256", ""),
        data_sha256_rebuilt=built.data_sha256,
        model_sha256_recorded=info.tags["model_sha256"],
        model_sha256_rebuilt=rebuilt_sha,
        commit_recorded=commit,
        commit_now=now,
        lock_file_changed=lock_changed,
        warnings=warnings,
    )


__all__ = ["ReproduceReport", "reproduce_version"]
