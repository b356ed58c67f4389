"""A dataset spec from a data sample (``riskloop spec init``), and what a spec and a sample say about each other
(``riskloop spec check``).

Inference is pandera's (:func:`pandera.infer_schema`: dtypes, nullability, categories, observed ranges), the
same library that enforces the contract (:mod:`riskloop.data.validate`); what riskloop adds is the choice
pandera cannot make from one frame: which text columns are categories (few distinct values, repeated), which
column is the label and which of its values is positive. Observed ranges go into the spec as comments, not
as ``min``/``max`` rules: a sample's extremes are not a contract, and rules from them would quarantine the
first larger value.

The spec is written as text, not dumped, so that it can carry comments a person reads before editing it;
every string is double-quoted (JSON strings are valid YAML), so ``No``/``Yes`` and ``01`` stay text.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pandera.pandas as pa
from pandera import dtypes as pa_dtypes

from riskloop.data.spec import ColumnType, DatasetSpec, InvalidSpec, parse_spec, read_yaml_mapping, yaml_non_text
from riskloop.errors import ConfigError, DataError, RiskloopError

MAX_CATEGORIES = 50  # a text column with at most this many distinct values, each seen twice on average, is a category
GENERATED_ID = "row_id"  # the id column `riskloop data land` adds when the file has none
VALIDATION_FRACTION = 0.15
TEST_FRACTION = 0.15


def read_data_file(path: Path, *, text_columns: Collection[str] = ()) -> pd.DataFrame:
    """A user's CSV or parquet file, read the way ``riskloop data land`` reads it (``text_columns``: a spec's
    string and category columns, kept as text); bad input is a ConfigError."""
    from riskloop.data.io import read_file

    if not path.is_file():
        raise ConfigError(
            f"data file {path} does not exist", where=str(path), fix="pass the path of a CSV or parquet file"
        )
    try:
        frame = read_file(path, text_columns=text_columns)
    except DataError as exc:
        raise ConfigError(exc.what, where=exc.where or str(path), fix=exc.fix) from exc
    if frame.empty or not len(frame.columns):
        raise ConfigError(f"data file {path} has no rows", where=str(path), fix="pass a file with a header and rows")
    frame.columns = [str(c) for c in frame.columns]
    return frame


@dataclass(frozen=True)
class ColumnGuess:
    """One column as inferred: its contract rule and the facts a person checks it against."""

    name: str
    type: ColumnType
    nullable: bool = False
    unique: bool = False
    allowed: tuple[str, ...] | None = None
    note: str = ""
    feature: bool = True  # usable as a raw model feature (numbers and categories are; free text is not)


def _text(values: Iterable[object]) -> list[str]:
    return [str(v) for v in values]


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:.6g}"


def _missing_note(missing: int, rows: int) -> str:
    return f"{missing:,} of {rows:,} missing ({missing / rows:.1%})" if missing else ""


def _prepared(df: pd.DataFrame, time_column: str | None) -> tuple[pd.DataFrame, dict[str, str]]:
    """The frame as pandera should see it, and why a column was changed: text with few, repeated values
    becomes ``category`` (pandera then infers its values), integers pandas widened to float for their missing
    values become integers again (pandas' own ``convert_dtypes``), mixed values become text, the time column
    a timestamp."""
    work = df.copy()
    notes: dict[str, str] = {}
    for name in work.columns:
        s = work[name]
        non_null = s.dropna()
        if name == time_column:
            if pd.api.types.is_numeric_dtype(s):
                raise ConfigError(
                    f"time column {name!r} holds numbers, not timestamps",
                    where=f"--time {name}",
                    fix="store times as ISO-8601 text (2026-01-31T12:00:00Z) or leave --time out (a snapshot)",
                )
            try:
                work[name] = pd.to_datetime(s, utc=True, format="ISO8601")
            except (ValueError, TypeError) as exc:
                raise ConfigError(
                    f"time column {name!r} is not ISO-8601 timestamps: {exc}",
                    where=f"--time {name}",
                    fix="store times as ISO-8601 text (2026-01-31T12:00:00Z) or leave --time out (a snapshot)",
                ) from None
            continue
        if non_null.empty:  # nothing to infer from: text, so that it is no category without values
            work[name] = s.astype("string")
            continue
        if pd.api.types.is_float_dtype(s) and s.isna().any():
            if (non_null == non_null.round()).all():
                work[name] = s.convert_dtypes()
                notes[name] = "whole numbers with missing values"
            continue
        if pd.api.types.is_bool_dtype(s):
            work[name] = s.astype("string")
            notes[name] = "true/false values"
        elif s.dtype == object:
            kinds = pd.api.types.infer_dtype(s, skipna=True)
            if kinds not in ("string", "boolean"):
                notes[name] = f"mixed values ({kinds}), read as text"
            work[name] = s.astype("string")
        if pd.api.types.is_string_dtype(work[name]):
            distinct = work[name].nunique(dropna=True)
            if distinct <= MAX_CATEGORIES and distinct * 2 <= len(non_null):
                work[name] = work[name].astype("category")
    return work, notes


def infer_columns(df: pd.DataFrame, *, label: str, time_column: str | None = None) -> dict[str, ColumnGuess]:
    """Each column's contract rule, from :func:`pandera.infer_schema` on the prepared frame."""
    work, notes = _prepared(df, time_column)
    if not isinstance(work[label].dtype, pd.CategoricalDtype) and pd.api.types.is_string_dtype(work[label]):
        work[label] = work[label].astype("category")  # a text label is a category, however many values it has
    schema = pa.infer_schema(work)
    rows = len(df)
    guesses: dict[str, ColumnGuess] = {}
    for name, column in schema.columns.items():
        name = str(name)
        s = work[name]
        checks = {c.name: c.statistics for c in column.checks or []}
        missing = int(s.isna().sum())
        facts = [notes.get(name, ""), _missing_note(missing, rows)]
        dtype = column.dtype
        allowed: tuple[str, ...] | None = None
        feature = True
        if missing == rows:
            kind, feature = ColumnType.string, False
            facts = ["entirely missing in the sample: not a feature until it has values"]
        elif pa_dtypes.is_datetime(dtype):
            kind, feature = ColumnType.timestamp, False
            low, high = checks["greater_than_or_equal_to"]["min_value"], checks["less_than_or_equal_to"]["max_value"]
            facts.append(f"observed {low} .. {high}")
        elif pa_dtypes.is_category(dtype):
            kind, allowed = ColumnType.category, tuple(_text(checks["isin"]["allowed_values"]))
        elif pa_dtypes.is_int(dtype) or pa_dtypes.is_uint(dtype) or pa_dtypes.is_float(dtype):
            kind = ColumnType.float if pa_dtypes.is_float(dtype) else ColumnType.integer
            low, high = checks["greater_than_or_equal_to"]["min_value"], checks["less_than_or_equal_to"]["max_value"]
            facts.append(f"observed {_number(low)} .. {_number(high)}")
        else:
            kind, feature = ColumnType.string, False
            facts.append(
                f"{s.nunique(dropna=True):,} distinct values: free text, not a feature "
                "(make it a category with its allowed values to use it)"
            )
        guesses[name] = ColumnGuess(
            name,
            kind,
            nullable=bool(column.nullable),
            allowed=allowed,
            note="; ".join(f for f in facts if f),
            feature=feature,
        )
    return guesses


def _unknown_column(name: str, option: str, columns: Sequence[str]) -> ConfigError:
    close = difflib.get_close_matches(name, columns, n=1)
    return ConfigError(
        f"{option} {name!r} is not a column of the data file",
        where=option,
        fix=(f"did you mean {close[0]!r}? " if close else "") + f"the columns are: {', '.join(columns)}",
    )


def _positive_value(values: pd.Series, positive: str, label: str) -> str | int:
    """The ``--positive`` value as the label column holds it: a number for a numeric label, else text."""
    present = {str(v): v for v in values.dropna().unique()}
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        number = pd.to_numeric(pd.Series([positive]), errors="coerce").iloc[0]
        if pd.notna(number) and float(number).is_integer() and (values == number).any():
            return int(number)
    elif positive in present:
        return positive
    shown = sorted(present)[:10]
    raise ConfigError(
        f"--positive {positive!r} is not a value of the label column {label!r}",
        where="--positive",
        fix=f"use one of its values: {', '.join(map(repr, shown))}" + (" ..." if len(present) > 10 else ""),
    )


@dataclass(frozen=True)
class InitRequest:
    """What ``spec init`` was asked for: the sample and the columns only a person can name."""

    name: str
    label: str
    positive: str
    id_column: str | None = None
    time_column: str | None = None
    source_file: str = "data.csv"
    source_kind: str = "csv"


def _q(value: object) -> str:
    """A YAML scalar that stays what it is: strings double-quoted (JSON is valid YAML), numbers as numbers."""
    return json.dumps(value, ensure_ascii=False)


def _flow(values: Iterable[object]) -> str:
    return "[" + ", ".join(_q(v) for v in values) + "]"


def _rule(guess: ColumnGuess) -> str:
    parts = [f'"type": {_q(guess.type.value)}']
    if guess.nullable:
        parts.append('"nullable": true')
    if guess.unique:
        parts.append('"unique": true')
    if guess.allowed is not None:
        parts.append(f'"allowed": {_flow(guess.allowed)}')
    return "{" + ", ".join(parts) + "}"


def _split_days(times: pd.Series) -> int:
    """Validation and test windows of a time split: 15 % of the observed span each, at least one day."""
    span = float((times.max() - times.min()).total_seconds()) / 86400
    return max(1, math.floor(span * VALIDATION_FRACTION))


def init_spec(df: pd.DataFrame, request: InitRequest) -> str:
    """The text of a complete, commented spec for ``df``; it parses (``parse_spec``) as written."""
    columns = [str(c) for c in df.columns]
    for option, column in (("--label", request.label), ("--id", request.id_column), ("--time", request.time_column)):
        if column is not None and column not in columns:
            raise _unknown_column(column, option, columns)
    chosen = [c for c in (request.label, request.id_column, request.time_column) if c is not None]
    if len(set(chosen)) < len(chosen):
        raise ConfigError(
            f"--label, --id and --time name the same column ({', '.join(chosen)})",
            where="riskloop spec init",
            fix="the label, the id and the time must be three different columns",
        )
    if request.id_column is None and GENERATED_ID in columns:
        raise ConfigError(
            f"the file has a column {GENERATED_ID!r}, the name spec init gives the row-number id it adds",
            where="--id",
            fix=f"pass --id {GENERATED_ID} if it identifies rows, or rename that column",
        )
    if request.id_column is not None:
        ids = df[request.id_column]
        duplicated, missing = int(ids.duplicated().sum()), int(ids.isna().sum())
        if duplicated or missing:
            raise ConfigError(
                f"--id {request.id_column!r} does not identify rows: "
                f"{duplicated} duplicate and {missing} missing value(s)",
                where="--id",
                fix="pass a column whose values are unique and present, or leave --id out (data land numbers the rows)",
            )
    positive = _positive_value(df[request.label], request.positive, request.label)
    guesses = infer_columns(df, label=request.label, time_column=request.time_column)
    label_guess = guesses[request.label]
    unlabeled = int(df[request.label].isna().sum())

    if request.id_column is not None:
        guess = guesses[request.id_column]
        id_type = ColumnType.integer if guess.type is ColumnType.integer else ColumnType.string
        guesses[request.id_column] = ColumnGuess(request.id_column, id_type, unique=True, note="the row id")
        id_line = f"id_column: {_q(request.id_column)}"
        contract_lines = []
    else:
        id_line = (
            f"id_column: {_q(GENERATED_ID)}   # the file has no id: `riskloop data land` adds {GENERATED_ID}, "
            "the row's position in the file (from 0)"
        )
        contract_lines = [
            f'    {_q(GENERATED_ID)}: {{"type": "integer", "unique": true}}   # added by `riskloop data land`'
        ]
    if label_guess.type is ColumnType.float:
        label_guess = ColumnGuess(request.label, ColumnType.integer, note=label_guess.note)
    guesses[request.label] = ColumnGuess(
        request.label,
        label_guess.type,
        allowed=label_guess.allowed,
        note=(f"the label; {unlabeled:,} row(s) have none: drop them before landing" if unlabeled else "the label"),
    )
    special = {request.label, request.id_column, request.time_column}
    features = [g for g in guesses.values() if g.name not in special and g.feature]
    left_out = [g.name for g in guesses.values() if g.name not in special and not g.feature]
    categorical = [g.name for g in features if g.type is ColumnType.category]

    for name, guess in guesses.items():
        note = f"   # {guess.note}" if guess.note else ""
        contract_lines.append(f"    {_q(name)}: {_rule(guess)}{note}")

    if request.time_column is not None:
        times = pd.to_datetime(df[request.time_column], utc=True, format="ISO8601")
        days = _split_days(times)
        time_line = f"timestamp_column: {_q(request.time_column)}"
        split_lines = [
            "split:",
            "  kind: time                 # train on the past, validate and test on the newest days",
            f"  validation_days: {days}         # about 15 % of the observed span each",
            f"  test_days: {days}",
        ]
    else:
        time_line = "timestamp_column: null      # no time axis: landed as one snapshot, split stratified by label"
        split_lines = [
            "split:",
            "  kind: stratified           # a seeded split that keeps the label's share in each part",
            f"  validation_fraction: {VALIDATION_FRACTION}",
            f"  test_fraction: {TEST_FRACTION}",
        ]
    label_word = "category values" if label_guess.type is ColumnType.category else "values"
    lines = [
        f"# Dataset spec {request.name!r}, written by `riskloop spec init` from {request.source_file}",
        f"# ({len(df):,} rows, {len(columns)} columns). Column types, missing values and categories were",
        f"# inferred by pandera (pandera.infer_schema) from all {len(df):,} rows of that file; a text column",
        f"# with at most {MAX_CATEGORIES} distinct values, each seen twice on average, became a category.",
        "# Observed ranges are comments, not rules: add min/max where a value outside them is an error.",
        "# Check it, edit it, then: riskloop spec check THIS_FILE --data " + request.source_file,
        f"name: {_q(request.name)}",
        f"description: {_q(f'{request.name}: label {request.label}, positive class {positive}')}",
        f"model_name: {_q(request.name)}   # the MLflow registered model; models of other datasets are never compared",
        "source:",
        f"  kind: {request.source_kind}",
        f"  path: {_q(f'data/{request.name}')}   # where `riskloop data land` writes it, under the storage root",
        id_line,
        "entity_columns: []",
        time_line,
        "label:",
        f"  column: {_q(request.label)}",
        f"  positive: [{_q(positive)}]   # label {label_word} that mean the positive class; every other value is 0",
        "features:",
        "  source: raw",
        "  raw_columns:               # model inputs: every column but the id, label and time"
        + (f" (left out: {', '.join(left_out)})" if left_out else ""),
        *(f"    - {_q(g.name)}" for g in features),
        f"  categorical: {_flow(categorical)}",
        *split_lines,
        "policy:",
        "  use: fraud                 # fraud: threshold at a 1 % false-positive rate; credit: a 5:1 cost ratio",
        "                             # (a missed positive costs five wrongly flagged negatives); see docs/datasets.md",
        "# reasons:                   # texts for the reasons given with each decision (default: the feature name)",
        *(f'#   {_q(g.name)}: "..."' for g in features[:2]),
        "require_approval: false     # true for credit scoring: a person approves each version before promotion",
        "protected_attributes: []    # columns whose groups get fairness metrics (kept out of the features)",
        "contract:",
        "  max_bad_fraction: 0.01     # share of rows that may go to quarantine before a batch is refused",
        "  columns:",
        *contract_lines,
    ]
    text = "\n".join(lines) + "\n"
    parse_spec(text, where=f"the spec inferred from {request.source_file}")  # what it writes must load
    return text


@dataclass(frozen=True)
class Finding:
    """One thing ``spec check`` says: what is wrong or worth knowing, and how to fix it."""

    what: str
    fix: str


@dataclass
class CheckReport:
    """Problems (the spec cannot be used as it is: exit 2) and warnings (it can, but probably not as meant)."""

    spec: DatasetSpec | None = None
    problems: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)


def spec_warnings(spec: DatasetSpec) -> list[Finding]:
    """What a loaded spec says that it probably does not mean."""
    found: list[Finding] = []
    contract = spec.contract.columns
    raw = set(spec.features.raw_columns)
    for name in spec.features.categorical:
        if name not in contract:
            found.append(
                Finding(
                    f"features.categorical names {name!r}, which is not in contract.columns",
                    "fix the name or remove it from features.categorical",
                )
            )
        elif spec.features.source == "raw" and name not in raw:
            found.append(
                Finding(
                    f"features.categorical names {name!r}, which is not in features.raw_columns",
                    "add it to features.raw_columns to use it as a feature, or remove it from features.categorical",
                )
            )
        elif contract[name].type is not ColumnType.category:
            found.append(
                Finding(
                    f"features.categorical names {name!r}, but its contract type is {contract[name].type.value}",
                    f'make it {{type: category, allowed: ["...", ...]}} in contract.columns.{name}',
                )
            )
    for name in spec.features.raw_columns:
        kind = contract[name].type
        if kind in (ColumnType.string, ColumnType.timestamp):
            found.append(
                Finding(
                    f"feature {name!r} is {kind.value}: the model reads it as a number, so every value is missing",
                    f"make contract.columns.{name} a category with its allowed values, or remove it from raw_columns",
                )
            )
    return found


def data_findings(spec: DatasetSpec, df: pd.DataFrame, where: str) -> CheckReport:
    """What a data file says about a spec: missing and extra columns, empty features, the label, quarantine."""
    from riskloop.data.validate import split_batch

    report = CheckReport(spec)
    columns = set(map(str, df.columns))
    contract = spec.contract.columns
    generated_id = spec.id_column not in columns  # data land adds it: the row's position in the file
    missing = sorted(set(contract) - columns - ({spec.id_column} if generated_id else set()))
    if missing:
        report.problems.append(
            Finding(
                f"{where} lacks column(s) the spec's contract names: {', '.join(missing)}",
                "add them to the file, or remove them from contract.columns (and wherever the spec uses them)",
            )
        )
    extra = sorted(columns - set(contract))
    if extra:
        report.warnings.append(
            Finding(
                f"{where} has column(s) the spec does not name: {', '.join(extra)}; they are not checked or used",
                "add them to contract.columns (and to features.raw_columns to use them), or leave them out",
            )
        )
    empty = [c for c in spec.features.raw_columns if c in columns and bool(df[c].isna().all())]
    if empty:
        report.warnings.append(
            Finding(
                f"feature(s) entirely missing in {where}: {', '.join(empty)}; they carry no signal",
                "remove them from features.raw_columns, or fix the export that left them empty",
            )
        )
    label_broken = False
    if spec.label.column in columns:
        try:
            spec.binary_label(df[spec.label.column])
        except RiskloopError as exc:
            label_broken = True
            report.problems.append(Finding(f"{exc.what} ({exc.where})", exc.fix or ""))
    if missing:
        return report
    frame = df if not generated_id else df.assign(**{spec.id_column: range(len(df))})
    try:
        result = split_batch(frame, spec.contract, where=where)
    except RiskloopError as exc:
        report.problems.append(Finding(exc.what, exc.fix or ""))
        return report
    rows = len(df)
    over = result.bad_fraction > spec.contract.max_bad_fraction  # the batch would be refused, not just trimmed
    for check, count in result.check_counts.items():
        name, _, kind = check.partition(":")
        if label_broken and name == spec.label.column:
            continue  # said above, with the label's own fix
        share = f"{count:,} of {rows:,} rows ({count / rows:.1%})"
        fix = {
            "null": f"set nullable: true in contract.columns.{name} if missing values are expected",
            "unknown_category": f"add the values to contract.columns.{name}.allowed",
            "duplicate": f"{name} must be unique: fix the file or choose another id column",
        }.get(kind, f"fix the values or the rule in contract.columns.{name}")
        broken = {
            "null": f"have no {name} (missing values)",
            "unknown_category": f"have a {name} outside its allowed values",
            "duplicate": f"repeat a {name}",
            "below_min": f"have a {name} below its min",
            "above_max": f"have a {name} above its max",
        }.get(kind, f"break {check}")
        finding = Finding(f"{share} {broken} and would go to quarantine ({check})", fix)
        (report.problems if over else report.warnings).append(finding)
    return report


def check_spec(
    text: str, *, where: str, data: pd.DataFrame | Path | None = None, data_where: str = "the data"
) -> CheckReport:
    """Everything ``spec check`` reports: the spec's own problems, its warnings, and what the data says.

    A data file (a path) is read once the spec has loaded, with the spec's text columns kept as text, as
    ``data land`` reads it: a code such as ``01`` is then compared as the text it is."""
    raw = read_yaml_mapping(text, where=where)
    try:
        spec = parse_spec(text, where=where)
    except InvalidSpec as exc:
        return CheckReport(problems=[Finding(p, exc.fix or "") for p in exc.problems])
    report = CheckReport(spec)
    non_text = yaml_non_text(raw)
    if non_text:  # the spec loaded (e.g. a string column named yes), but such values are rarely meant
        report.warnings.append(
            Finding(f"YAML read these as booleans or numbers: {'; '.join(non_text)}", 'quote them, e.g. ["No", "Yes"]')
        )
    report.warnings.extend(spec_warnings(spec))
    if data is not None:
        if isinstance(data, Path):
            text_types = (ColumnType.string, ColumnType.category)
            texts = [c for c, rule in spec.contract.columns.items() if rule.type in text_types]
            data = read_data_file(data, text_columns=texts)
        found = data_findings(spec, data, data_where)
        report.problems.extend(found.problems)
        report.warnings.extend(found.warnings)
    return report
