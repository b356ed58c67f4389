"""Dataset specs: one YAML file names a dataset's source, keys, label, features and contract.

Everything downstream (validation, features, training, serving) is driven by a
spec, so pointing riskloop at a new parquet or CSV dataset is a new YAML file,
not a code change. Two specs ship with the package (``synthetic-fraud``,
``ulb-creditcard``); ``load_spec`` also accepts a path to a user's file.

A spec is part of what a model is: training stores its exact text in the model
directory (``dataset_spec.yaml``) and its sha256 on the registered version, so
that approval, the model card, reproduce and lineage read the spec a version was
trained under, not whatever file has that name today (:class:`SpecSource`).
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from riskloop.errors import ConfigError
from riskloop.storage import Location, location

SPEC_PACKAGE = "riskloop.data.specs"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnType(StrEnum):
    string = "string"
    integer = "integer"
    float = "float"
    category = "category"
    timestamp = "timestamp"


class ColumnRule(_Strict):
    """The contract for one column; row-level rules quarantine rows, type rules reject batches."""

    type: ColumnType
    nullable: bool = False
    unique: bool = False
    min: float | None = None
    max: float | None = None
    allowed: tuple[str, ...] | None = Field(default=None, description="allowed values, in model order")
    not_future: bool = Field(default=False, description="timestamps may not lie after validation time")

    @model_validator(mode="after")
    def _consistent(self) -> ColumnRule:
        if self.type is ColumnType.category and not self.allowed:
            raise ValueError("a category column needs its 'allowed' values (they fix the model's category order)")
        if self.allowed is not None and self.type is not ColumnType.category:
            raise ValueError("'allowed' is only for category columns")
        if self.not_future and self.type is not ColumnType.timestamp:
            raise ValueError("'not_future' is only for timestamp columns")
        return self


class Contract(_Strict):
    columns: dict[str, ColumnRule]
    max_bad_fraction: float = Field(default=0.01, ge=0, le=1)


class Source(_Strict):
    kind: Literal["synthetic", "parquet", "csv", "ulb", "german_credit"]
    path: str = Field(
        description=(
            "landing location: relative paths are under the shared storage root (RISKLOOP_STORAGE__URI, default the "
            "state dir); an absolute path or an s3:// / gs:// URI is used as it is"
        )
    )


class Label(_Strict):
    column: str
    available_at: str | None = Field(
        default=None, description="when the label became known (late labels, e.g. chargebacks)"
    )
    maturity_days: int = Field(default=0, ge=0, description="days before labels count as mature")


class Features(_Strict):
    """Where model features come from: a Feast feature service or the raw columns."""

    source: Literal["feast", "raw"]
    service: str | None = None
    raw_columns: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _service_or_columns(self) -> Features:
        if self.source == "feast" and not self.service:
            raise ValueError("features.source 'feast' needs features.service")
        return self


class Split(_Strict):
    kind: Literal["time", "stratified"]
    validation_days: float = Field(default=3, gt=0)
    test_days: float = Field(default=3, gt=0)
    validation_fraction: float = Field(default=0.15, gt=0, lt=0.5)
    test_fraction: float = Field(default=0.15, gt=0, lt=0.5)


class DatasetSpec(_Strict):
    name: str
    description: str = ""
    model_name: str | None = Field(
        default=None, description="registered model for this dataset; default RISKLOOP_MLFLOW__MODEL_NAME"
    )
    source: Source
    id_column: str
    entity_columns: tuple[str, ...] = ()
    timestamp_column: str | None
    label: Label
    features: Features
    split: Split
    contract: Contract
    protected_attributes: tuple[str, ...] = Field(
        default=(),
        description="columns whose groups get fairness metrics (model card, gate); kept in the "
        "training set, not model features",
    )
    require_approval: bool = Field(
        default=False,
        description="a person must approve a version (`riskloop approve`) before it is promoted; "
        "on for credit scoring (a high-risk use under the EU AI Act), combined with RISKLOOP_AUDIT__REQUIRE_APPROVAL",
    )

    @model_validator(mode="after")
    def _columns_declared(self) -> DatasetSpec:
        declared = set(self.contract.columns)
        needed = {
            self.id_column,
            self.label.column,
            *self.entity_columns,
            *self.features.raw_columns,
            *self.protected_attributes,
        }
        if self.timestamp_column:
            needed.add(self.timestamp_column)
        missing = sorted(needed - declared)
        if missing:
            raise ValueError(f"columns used by the spec but absent from contract.columns: {missing}")
        if self.split.kind == "time" and not self.timestamp_column:
            raise ValueError("split.kind 'time' needs timestamp_column")
        return self

    def registered_model(self, default: str) -> str:
        """The MLflow registered model this dataset's models go to."""
        return self.model_name or default

    def source_path(self, root: Path | Location) -> Location:
        """The landing location: ``source.path`` under ``root`` (``Settings.shared``), unless it is absolute."""
        if "://" in self.source.path or Path(self.source.path).is_absolute():
            return location(self.source.path)
        return location(root) / self.source.path

    @property
    def categories(self) -> dict[str, tuple[str, ...]]:
        """Category columns and their fixed order (the model's category codes)."""
        return {
            name: rule.allowed
            for name, rule in self.contract.columns.items()
            if rule.type is ColumnType.category and rule.allowed
        }


def shipped_specs() -> list[str]:
    return sorted(
        p.name.removesuffix(".yaml") for p in resources.files(SPEC_PACKAGE).iterdir() if p.name.endswith(".yaml")
    )


@dataclass(frozen=True)
class SpecSource:
    """A spec's exact text and where it came from; its sha256 is what a model version records."""

    text: str
    where: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def parse(self) -> DatasetSpec:
        return parse_spec(self.text, where=self.where)


def read_spec_source(name_or_path: str | Path) -> SpecSource:
    """The text of a shipped spec by name (``synthetic-fraud``) or of a user's spec file by path."""
    candidate = Path(name_or_path)
    if candidate.suffix in {".yaml", ".yml"} or candidate.exists():
        if not candidate.is_file():
            raise ConfigError(
                f"dataset spec file {candidate} does not exist",
                fix=f"pass an existing YAML file or one of: {', '.join(shipped_specs())}",
            )
        data, where = candidate.read_bytes(), str(candidate)
    else:
        res = resources.files(SPEC_PACKAGE) / f"{name_or_path}.yaml"
        if not res.is_file():
            raise ConfigError(
                f"unknown dataset spec {name_or_path!r}",
                fix=f"use one of: {', '.join(shipped_specs())}, or a path to a YAML spec",
            )
        data, where = res.read_bytes(), f"shipped spec {name_or_path}"
    try:  # bytes, not read_text: newline translation would change the hash the version records
        return SpecSource(data.decode("utf-8"), where)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"dataset spec is not UTF-8 text: {exc}", where=where, fix="save the file as UTF-8") from exc


def load_spec(name_or_path: str | Path) -> DatasetSpec:
    """Load a shipped spec by name (``synthetic-fraud``) or a user's spec file by path."""
    return read_spec_source(name_or_path).parse()


def spec_difference(recorded: SpecSource, given: SpecSource, *, max_lines: int = 12) -> str:
    """What differs between two spec texts: the first lines of a unified diff (empty when equal)."""
    lines = list(
        difflib.unified_diff(
            recorded.text.splitlines(), given.text.splitlines(), recorded.where, given.where, n=0, lineterm=""
        )
    )
    shown = [line for line in lines[2:] if not line.startswith("@@")]
    more = len(shown) - max_lines
    return "\n".join(shown[:max_lines] + ([f"... ({more} more changed lines)"] if more > 0 else []))


def parse_spec(text: str, *, where: str) -> DatasetSpec:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"dataset spec is not valid YAML: {exc}", where=where) from exc
    if not isinstance(raw, dict):
        raise ConfigError("dataset spec must be a YAML mapping", where=where)
    try:
        return DatasetSpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(
            f"invalid dataset spec: {problems}",
            where=where,
            fix="see src/riskloop/data/specs/synthetic-fraud.yaml for a complete example",
        ) from exc
