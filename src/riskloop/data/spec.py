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
from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from riskloop.data.policy import Policy
from riskloop.errors import ConfigError, DataContractError
from riskloop.storage import Location, location

if TYPE_CHECKING:  # a spec loads without pandas; only the label mapping takes a Series
    import pandas as pd

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


LabelValue = str | int | bool


class Label(_Strict):
    """The target column and how its raw values become the 0/1 the model learns.

    ``positive`` lists the values that mean the positive class (``[bad]``): every other known value is 0.
    ``mapping`` gives each value its 0/1 explicitly (``{good: 0, bad: 1}``). Neither: the column already
    holds 0/1. The contract's rule for the label column describes the RAW values (a category with
    ``allowed: [good, bad]``); ``data land`` maps them, and landed data holds int 0/1 under the same
    column name (:attr:`DatasetSpec.landed_contract`).
    """

    column: str
    positive: tuple[LabelValue, ...] | None = Field(
        default=None, description="raw label values that mean the positive class (e.g. [bad]); others are 0"
    )
    mapping: dict[str, int] | None = Field(default=None, description="each raw label value and its 0/1")
    available_at: str | None = Field(
        default=None, description="when the label became known (late labels, e.g. chargebacks)"
    )
    maturity_days: int = Field(default=0, ge=0, description="days before labels count as mature")

    @model_validator(mode="after")
    def _one_way_to_map(self) -> Label:
        if self.positive is not None and self.mapping is not None:
            raise ValueError("give either label.positive or label.mapping, not both (they could disagree)")
        if self.positive is not None and not self.positive:
            raise ValueError("label.positive is empty: list the raw values that mean the positive class")
        if self.mapping is not None:
            wrong = {k: v for k, v in self.mapping.items() if v not in (0, 1)}
            if wrong:
                raise ValueError(f"label.mapping must map each value to 0 or 1, not {wrong}")
            if set(self.mapping.values()) != {0, 1}:
                raise ValueError("label.mapping must map at least one value to 0 and one to 1")
        return self

    @property
    def mapped(self) -> bool:
        """Whether raw values are mapped (``positive`` or ``mapping``) rather than already 0/1."""
        return self.positive is not None or self.mapping is not None

    def named_values(self) -> tuple[LabelValue, ...]:
        """The raw values this label names (positive values or mapping keys), for checks against the contract."""
        return tuple(self.positive or ()) + tuple(self.mapping or {})

    def to_binary(self, values: pd.Series, *, allowed: Collection[str] | None = None) -> pd.Series:
        """The label as int64 0/1; values that cannot be mapped raise ``DataContractError`` naming them.

        ``allowed`` (the contract's categories for the label column) makes ``positive`` strict: a value
        outside it (a typo in the data) is an error, not a silent 0. Comparison is on the value and on
        its text, so a label read as text ("2") matches ``positive: [2]``.
        """
        text = values.astype("string")
        missing = values.isna()
        if self.mapping is not None:
            table = self.mapping
        elif self.positive is not None:
            names = [str(v) for v in self.positive]
            known = set(text.dropna()) if allowed is None else {*allowed, *names}
            table = {value: int(value in names) for value in known}
        else:
            table = {"0": 0, "1": 1, "0.0": 0, "1.0": 1, "False": 0, "True": 1}
        out = text.map(table)
        unmapped = out.isna() & ~missing
        if missing.any() or unmapped.any():
            examples = sorted(set(text[unmapped].dropna()))[:5]
            what = []
            if unmapped.any():
                what.append(
                    f"{int(unmapped.sum())} value(s) cannot be mapped to 0/1 ({', '.join(map(repr, examples))})"
                )
            if missing.any():
                what.append(f"{int(missing.sum())} value(s) are missing")
            raise DataContractError(
                f"label: {'; '.join(what)}",
                where=f"label column {self.column!r}",
                fix=(
                    "edit label.positive (the values that mean the positive class) or label.mapping "
                    "(each value and its 0/1) in the dataset spec, or drop the rows without a label"
                    if self.mapped
                    else "the column is not 0/1: add label.positive (e.g. [bad]) or label.mapping to the dataset spec"
                ),
            )
        binary = out.astype("int64")
        binary.name = values.name
        return binary


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
    policy: Policy = Field(default_factory=Policy, description="threshold rule and gate floors, defaults by use")
    reasons: dict[str, str] = Field(
        default_factory=dict,
        description="feature -> the text of that feature as a reason for a decision (the server's top reasons per "
        "instance; for credit, the principal reasons of an adverse-action notice); a feature not named: its name",
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
        self._label_matches_contract()
        return self

    def _label_matches_contract(self) -> None:
        """A label mapping that names values the contract does not allow could never match: refuse it here,
        before any pipeline runs, rather than as a failure inside training."""
        rule = self.contract.columns[self.label.column]
        named = self.label.named_values()
        quote = " (YAML reads unquoted yes/no/true/false as booleans: quote them)"
        if rule.allowed is not None and self.label.mapped:
            unknown = [v for v in named if str(v) not in rule.allowed or isinstance(v, bool)]
            if unknown:
                raise ValueError(
                    f"label {'positive values' if self.label.positive else 'mapping keys'} {unknown} are not in "
                    f"contract.columns.{self.label.column}.allowed {list(rule.allowed)}"
                    + (quote if any(isinstance(v, bool) for v in unknown) else "")
                )
            if self.label.mapping is not None:
                unmapped = [v for v in rule.allowed if v not in self.label.mapping]
                if unmapped:
                    raise ValueError(f"label.mapping has no 0/1 for the allowed label value(s) {unmapped}: add them")
            if self.label.positive is not None and {str(v) for v in self.label.positive} >= set(rule.allowed):
                raise ValueError("label.positive names every allowed label value: nothing would be 0")
        elif self.label.positive is not None and rule.type in (ColumnType.integer, ColumnType.float):
            not_numbers = [v for v in self.label.positive if not isinstance(v, int) or isinstance(v, bool)]
            if not_numbers:
                raise ValueError(
                    f"label.positive {not_numbers} are not numbers, but contract.columns.{self.label.column} is "
                    f"{rule.type.value}" + (quote if any(isinstance(v, bool) for v in not_numbers) else "")
                )

    @property
    def landed_contract(self) -> Contract:
        """The contract of landed data: the raw contract, except that a mapped label column holds int 0/1.

        ``contract`` describes the file a user brings (``spec check --data`` and ``data land`` check it);
        ``data land`` maps the label with :meth:`binary_label`, so everything after landing (ingest,
        training, replay) validates against this one."""
        if not self.label.mapped:
            return self.contract
        raw = self.contract.columns[self.label.column]
        columns = {**self.contract.columns, self.label.column: ColumnRule(type=ColumnType.integer, min=0, max=1)}
        if raw.nullable:
            columns[self.label.column] = columns[self.label.column].model_copy(update={"nullable": True})
        return self.contract.model_copy(update={"columns": columns})

    def binary_label(self, values: pd.Series) -> pd.Series:
        """The label column as int 0/1 (:meth:`Label.to_binary` with the contract's allowed label values)."""
        return self.label.to_binary(values, allowed=self.contract.columns[self.label.column].allowed)

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
        """Category columns of landed data and their fixed order (the model's category codes); a mapped
        label is int 0/1 once landed, not a category (:attr:`landed_contract`)."""
        return {
            name: rule.allowed
            for name, rule in self.landed_contract.columns.items()
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


class InvalidSpec(ConfigError):
    """A spec that parses as YAML but breaks the spec's schema; ``problems`` lists each broken rule."""

    def __init__(self, problems: list[str], *, where: str, fix: str) -> None:
        self.problems = tuple(problems)
        super().__init__(f"invalid dataset spec: {'; '.join(problems)}", where=where, fix=fix)


def _non_text(value: object) -> bool:
    return isinstance(value, bool | int | float) or value is None


def yaml_non_text(raw: dict[str, object]) -> list[str]:
    """Places where YAML read a value as a boolean or number that the spec means as text.

    Unquoted ``No``/``Yes``/``on``/``off``/``true`` are booleans to YAML, ``01`` a number: in a category's
    ``allowed`` list, in label values or in column lists they can never match the data's text. Checked on
    the raw YAML, before the schema coerces or refuses them, so the message can say to quote them.
    """
    found: list[str] = []

    def check(path: str, values: object) -> None:
        items = values if isinstance(values, list) else list(values) if isinstance(values, dict) else []
        odd = [v for v in items if _non_text(v)]
        if odd:
            found.append(f"{path}: {odd}")

    contract = raw.get("contract")
    columns = contract.get("columns") if isinstance(contract, dict) else None
    if isinstance(columns, dict):
        check("contract.columns (names)", columns)
        for name, rule in columns.items():
            if isinstance(rule, dict) and rule.get("type") == "category":
                check(f"contract.columns.{name}.allowed", rule.get("allowed"))
    features = raw.get("features")
    if isinstance(features, dict):
        for key in ("raw_columns", "categorical"):
            check(f"features.{key}", features.get(key))
    label = raw.get("label")
    if isinstance(label, dict):
        check("label.mapping (keys)", label.get("mapping"))
        label_rule = columns.get(label.get("column")) if isinstance(columns, dict) else None
        if isinstance(label_rule, dict) and label_rule.get("type") == "category":
            check("label.positive", label.get("positive"))
    return found


def read_yaml_mapping(text: str, *, where: str) -> dict[str, object]:
    """The spec's YAML as a mapping (no schema yet); not YAML or not a mapping is a ConfigError."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"dataset spec is not valid YAML: {exc}", where=where) from exc
    if not isinstance(raw, dict):
        raise ConfigError("dataset spec must be a YAML mapping", where=where)
    return raw


def parse_spec(text: str, *, where: str) -> DatasetSpec:
    raw = read_yaml_mapping(text, where=where)
    try:
        return DatasetSpec.model_validate(raw)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        ]
        non_text = yaml_non_text(raw)
        fix = "see src/riskloop/data/specs/synthetic-fraud.yaml for a complete example"
        if non_text:
            fix = (
                f"quote values meant as text ({'; '.join(non_text)}): YAML reads unquoted yes/no/on/off/true/false "
                'as booleans and digits as numbers, e.g. allowed: ["No", "Yes"]; then ' + fix
            )
        raise InvalidSpec(problems, where=where, fix=fix) from exc
