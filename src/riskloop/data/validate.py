"""The data contract as a pandera schema, and the validation gate with quarantine.

Two levels of failure, on purpose:

* **batch-level** (a missing column, a column of the wrong type, an empty batch)
  raises ``DataContractError``: nothing in it can be trusted;
* **row-level** (out of range, unknown category, duplicate id, null, timestamp in
  the future) sends the row to quarantine with one reason per row; the batch
  passes while the quarantined share stays under ``max_bad_fraction``, otherwise
  ``QualityGateFailed`` names the worst checks. In both cases the quarantine is
  written first, so nothing is lost.

Why pandera and not Great Expectations: the contract is a small typed object
that lives in the dataset spec and runs in-process on a DataFrame, and pandera
returns the failing *rows* (index + check) that the quarantine needs, with no
context store, data docs site or YAML suites to host.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from riskloop.data.spec import ColumnRule, ColumnType, Contract
from riskloop.errors import DataContractError, QualityGateFailed

REASON_COLUMN = "_quarantine_reason"
_COERCE_FAIL_LIMIT = 0.5  # above this share of unparseable values a column is the wrong type


@dataclass(frozen=True)
class ValidationResult:
    valid: pd.DataFrame
    quarantine: pd.DataFrame  # the bad rows with a REASON_COLUMN
    check_counts: Mapping[str, int] = field(default_factory=dict)  # "column:check" -> failing rows

    @property
    def n_rows(self) -> int:
        return len(self.valid) + len(self.quarantine)

    @property
    def bad_fraction(self) -> float:
        return len(self.quarantine) / self.n_rows if self.n_rows else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "rows": self.n_rows,
            "valid": len(self.valid),
            "quarantined": len(self.quarantine),
            "bad_fraction": round(self.bad_fraction, 6),
            "checks": dict(self.check_counts),
        }


def _checks(rule: ColumnRule) -> list[pa.Check]:
    checks = []
    if rule.min is not None:
        checks.append(pa.Check.ge(rule.min))
    if rule.max is not None:
        checks.append(pa.Check.le(rule.max))
    if rule.allowed is not None:
        checks.append(pa.Check.isin(list(rule.allowed)))
    if rule.type is ColumnType.float:
        checks.append(
            pa.Check(lambda s: np.isfinite(s.astype("float64")) | s.isna(), element_wise=False, name="finite")
        )
    return checks


def build_schema(contract: Contract, *, now: datetime) -> pa.DataFrameSchema:
    """The row-level part of the contract (types are settled before this runs)."""
    columns: dict[str, pa.Column] = {}
    for name, rule in contract.columns.items():
        checks = _checks(rule)
        if rule.not_future:
            stamp = pd.Timestamp(now)
            checks.append(pa.Check(lambda s, t=stamp: s <= t, name="not_in_future"))
        columns[name] = pa.Column(
            nullable=rule.nullable, unique=rule.unique, checks=checks, coerce=False, required=True
        )
    return pa.DataFrameSchema(columns, strict=False)


def _coerce_column(s: pd.Series, rule: ColumnRule, name: str) -> tuple[pd.Series, pd.Series]:
    """Return the column in its contract type and a mask of values that could not be parsed."""
    was_null = s.isna()
    out: pd.Series
    try:
        if rule.type is ColumnType.float:
            out = pd.to_numeric(s, errors="coerce").astype("float64")
        elif rule.type is ColumnType.integer:
            num = pd.to_numeric(s, errors="coerce")
            bad_frac = num.notna() & (num != np.floor(num.fillna(0)))
            num = num.where(~bad_frac)
            out = num.astype("Int64") if num.isna().any() else num.astype("int64")
        elif rule.type is ColumnType.timestamp:
            if pd.api.types.is_numeric_dtype(s) and not was_null.all():
                raise DataContractError(
                    f"column {name!r} holds numbers, the contract says timestamp",
                    fix="store timestamps as datetime (parquet) or ISO-8601 strings (CSV)",
                )
            out = pd.to_datetime(s, errors="coerce", utc=True, format="ISO8601").dt.as_unit("us")
        elif rule.type is ColumnType.category:
            out = s.astype("string").astype("object").where(~was_null)
        else:
            out = s.astype("string").astype("object").where(~was_null)
    except (TypeError, ValueError) as exc:
        raise DataContractError(
            f"column {name!r} cannot be read as {rule.type.value}: {exc}", fix="fix the column's type at the source"
        ) from exc
    unparsed = out.isna() & ~was_null
    return out, unparsed


def validate_batch(
    df: pd.DataFrame,
    contract: Contract,
    *,
    now: datetime | None = None,
    max_bad_fraction: float | None = None,
    where: str = "batch",
) -> ValidationResult:
    """Split a batch into valid and quarantined rows; raise on batch-level problems.

    ``QualityGateFailed`` is raised *after* computing the result; callers that
    must persist the quarantine first use :func:`split_batch` and
    :func:`enforce_gate` separately.
    """
    result = split_batch(df, contract, now=now, where=where)
    enforce_gate(
        result,
        contract if max_bad_fraction is None else contract.model_copy(update={"max_bad_fraction": max_bad_fraction}),
        where=where,
    )
    return result


def split_batch(
    df: pd.DataFrame, contract: Contract, *, now: datetime | None = None, where: str = "batch"
) -> ValidationResult:
    """Apply the contract: batch-level errors raise, row-level failures go to quarantine."""
    now = now or datetime.now(timezone.utc)
    if df.empty:
        raise DataContractError(
            "the batch is empty (0 rows)",
            where=where,
            fix="check the upstream export; an empty file is never a valid batch",
        )
    missing = [c for c in contract.columns if c not in df.columns]
    if missing:
        raise DataContractError(
            f"missing column(s): {', '.join(missing)}",
            where=where,
            fix=f"the batch has columns {sorted(map(str, df.columns))}; add the missing ones or fix the dataset spec",
        )

    work = df.reset_index(drop=True).copy()
    reasons: dict[str, list[int]] = {}
    unparsed_rows: dict[str, set[int]] = {}
    for name, rule in contract.columns.items():
        coerced, unparsed = _coerce_column(work[name], rule, name)
        n_bad = int(unparsed.sum())
        if n_bad and n_bad > _COERCE_FAIL_LIMIT * len(work):
            example = work.loc[unparsed, name].iloc[0]
            raise DataContractError(
                f"column {name!r} has the wrong type: {n_bad} of {len(work)} values are not "
                f"{rule.type.value} (e.g. {example!r}, dtype {work[name].dtype})",
                where=where,
                fix=f"write {name!r} as {rule.type.value} or correct the dataset spec",
            )
        if n_bad:
            rows = [int(i) for i in np.flatnonzero(unparsed.to_numpy())]
            reasons[f"{name}:type_{rule.type.value}"] = rows
            unparsed_rows[name] = set(rows)
        work[name] = coerced

    schema = build_schema(contract, now=now)
    try:
        schema.validate(work, lazy=True)
    except SchemaErrors as exc:
        fc = exc.failure_cases
        fc = fc[fc["index"].notna()]
        for (col, check), grp in fc.groupby(["column", "check"], sort=False):
            key = f"{col}:{_check_name(str(check))}"
            already = unparsed_rows.get(str(col), set())  # an unparseable value is not also "null"
            reasons.setdefault(key, []).extend(int(i) for i in grp["index"] if int(i) not in already)

    row_reasons: dict[int, list[str]] = {}
    counts: dict[str, int] = {}
    for key, rows in reasons.items():
        uniq = sorted(set(rows))
        if not uniq:
            continue
        counts[key] = len(uniq)
        for r in uniq:
            row_reasons.setdefault(r, []).append(key)
    bad_index = np.array(sorted(row_reasons), dtype=np.int64)
    bad_mask = np.zeros(len(work), dtype=bool)
    bad_mask[bad_index] = True

    valid = _typed(work.loc[~bad_mask], contract)
    quarantine = df.reset_index(drop=True).loc[bad_mask].copy()
    quarantine[REASON_COLUMN] = ["; ".join(row_reasons[int(i)]) for i in bad_index]
    return ValidationResult(
        valid=valid.reset_index(drop=True),
        quarantine=quarantine.reset_index(drop=True),
        check_counts=dict(sorted(counts.items(), key=lambda kv: -kv[1])),
    )


def _check_name(check: str) -> str:
    names = {"not_nullable": "null", "field_uniqueness": "duplicate"}
    for prefix, short in (
        ("greater_than_or_equal_to", "below_min"),
        ("less_than_or_equal_to", "above_max"),
        ("isin", "unknown_category"),
    ):
        if check.startswith(prefix):
            return short
    return names.get(check, check)


def _typed(df: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """Give valid rows their final dtypes: categories in contract order, ints as int64."""
    out = df.copy()
    for name, rule in contract.columns.items():
        if rule.type is ColumnType.category and rule.allowed:
            out[name] = pd.Categorical(out[name], categories=list(rule.allowed))
        elif rule.type is ColumnType.integer and not rule.nullable:
            out[name] = out[name].astype("int64")
        elif rule.type is ColumnType.string:
            out[name] = out[name].astype(object)
    return out


def enforce_gate(result: ValidationResult, contract: Contract, *, where: str = "batch") -> None:
    """Raise ``QualityGateFailed`` naming the worst checks when too many rows are bad."""
    if result.bad_fraction <= contract.max_bad_fraction:
        return
    worst = ", ".join(f"{k} ({v} rows)" for k, v in list(result.check_counts.items())[:5])
    raise QualityGateFailed(
        f"{len(result.quarantine)} of {result.n_rows} rows ({result.bad_fraction:.2%}) failed the data "
        f"contract, above the allowed {contract.max_bad_fraction:.2%}; worst checks: {worst}",
        where=where,
        fix="inspect the quarantine file, fix the source, and re-run; or raise max_bad_fraction "
        "in the dataset spec if this is expected",
    )


def write_quarantine(result: ValidationResult, path: Path) -> Path | None:
    """Write quarantined rows (with reasons) as parquet; returns the path or None if none."""
    if result.quarantine.empty:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    q = result.quarantine.copy()
    for c in q.columns:  # quarantined values may be anything: keep them readable, never drop them
        if q[c].dtype == object or isinstance(q[c].dtype, pd.CategoricalDtype):
            q[c] = q[c].astype("string")
    tmp = path.with_suffix(".tmp")
    q.to_parquet(tmp, index=False)
    tmp.replace(path)
    return path
