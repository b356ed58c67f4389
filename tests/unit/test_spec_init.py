"""A spec from a sample (``spec init``), the label mapping, and ``spec check``'s problems and warnings, on
frames built here: text labels, missing values, mixed types, no time axis, YAML booleans."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from riskloop.data.infer import InitRequest, check_spec, infer_columns, init_spec
from riskloop.data.spec import ColumnType, parse_spec
from riskloop.errors import ConfigError, DataContractError


def credit_frame(rows: int = 40) -> pd.DataFrame:
    """A small credit table as a user brings it: text label, missing values, a Yes/No column, mixed codes."""
    rng = np.random.default_rng(3)
    savings = rng.choice(["low", "medium", "high"], rows).astype(object)
    savings[::7] = None  # 6 of 40 missing
    income = rng.integers(1000, 9000, rows).astype(float)
    income[::9] = np.nan  # whole numbers with gaps: pandas reads them as float
    return pd.DataFrame(
        {
            "duration": rng.integers(6, 72, rows),
            "amount": rng.uniform(250, 18000, rows).round(2),
            "savings": savings,
            "owns_home": rng.choice(["No", "Yes"], rows),
            "income": income,
            "code": [i if i % 2 else f"c{i}" for i in range(rows)],  # mixed ints and text, all distinct
            "status": ["bad" if i % 3 == 0 else "good" for i in range(rows)],
        }
    )


def request(**overrides: str | None) -> InitRequest:
    base: dict[str, str | None] = {"name": "credit", "label": "status", "positive": "bad"}
    return InitRequest(**{**base, **overrides})  # type: ignore[arg-type]


def test_init_writes_a_loadable_commented_spec_for_a_snapshot_with_a_text_label() -> None:
    df = credit_frame()
    text = init_spec(df, request())
    spec = parse_spec(text, where="inferred")
    rules = spec.contract.columns
    assert spec.name == spec.model_name == "credit"
    assert spec.label.column == "status" and spec.label.positive == ("bad",)
    assert rules["status"].type is ColumnType.category and set(rules["status"].allowed or ()) == {"good", "bad"}
    assert spec.timestamp_column is None and spec.split.kind == "stratified"
    assert spec.id_column == "row_id" and rules["row_id"].unique and "data land` adds row_id" in text
    assert rules["duration"].type is ColumnType.integer and rules["amount"].type is ColumnType.float
    assert rules["savings"].nullable and rules["savings"].allowed == ("high", "low", "medium")
    assert rules["income"].type is ColumnType.integer and rules["income"].nullable  # not float: pandas' NaN widening
    assert rules["code"].type is ColumnType.string and "mixed values" in text
    assert rules["owns_home"].allowed == ("No", "Yes") and '["No", "Yes"]' in text  # quoted: never booleans
    assert spec.features.raw_columns == ("duration", "amount", "savings", "owns_home", "income")
    assert spec.features.categorical == ("savings", "owns_home")
    assert all(r.min is None and r.max is None for r in rules.values())  # ranges are comments, not rules
    duration_line = next(line for line in text.splitlines() if line.startswith('    "duration"'))
    low, high = df["duration"].min(), df["duration"].max()
    assert duration_line.endswith(f"# observed {low} .. {high}") and "pandera.infer_schema" in text
    assert "6 of 40 missing (15.0%)" in text
    assert spec.binary_label(df["status"]).tolist() == [int(i % 3 == 0) for i in range(len(df))]


def test_init_with_id_time_and_a_numeric_label() -> None:
    df = credit_frame(30).assign(
        loan_id=[f"L{i}" for i in range(30)],
        applied=pd.date_range("2026-01-01", periods=30, freq="D").strftime("%Y-%m-%dT%H:%M:%SZ"),
        status=[2 if i % 3 == 0 else 1 for i in range(30)],
    )
    spec = parse_spec(init_spec(df, request(positive="2", id_column="loan_id", time_column="applied")), where="x")
    assert spec.id_column == "loan_id" and spec.contract.columns["loan_id"].unique
    assert spec.timestamp_column == "applied" and spec.contract.columns["applied"].type is ColumnType.timestamp
    assert spec.split.kind == "time" and spec.split.validation_days == 4  # 15 % of a 29-day span
    assert spec.label.positive == (2,) and spec.contract.columns["status"].type is ColumnType.integer
    assert {"loan_id", "applied", "status"}.isdisjoint(spec.features.raw_columns)
    assert spec.binary_label(df["status"]).sum() == 10


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"label": "Status"}, "(?s)--label 'Status' is not a column.*did you mean 'status'"),
        ({"positive": "Bad"}, "--positive 'Bad' is not a value of the label column"),
        ({"id_column": "savings"}, "does not identify rows: .* duplicate"),
        ({"time_column": "duration"}, "time column 'duration' holds numbers"),
        ({"time_column": "owns_home"}, "not ISO-8601"),
        ({"id_column": "status"}, "name the same column"),
    ],
)
def test_init_refuses_bad_input_with_a_fix(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        init_spec(credit_frame(), request(**overrides))
    assert caught.value.fix


def test_an_entirely_missing_column_is_no_feature() -> None:
    df = credit_frame().assign(notes=[None] * 40)
    guesses = infer_columns(df, label="status")
    assert not guesses["notes"].feature and "entirely missing" in guesses["notes"].note
    assert "notes" not in parse_spec(init_spec(df, request()), where="x").features.raw_columns


def test_label_to_binary_maps_or_names_what_it_cannot() -> None:
    spec = parse_spec(init_spec(credit_frame(), request()), where="x")
    assert spec.binary_label(pd.Series(["good", "bad"])).tolist() == [0, 1]
    with pytest.raises(DataContractError, match=r"cannot be mapped.*'gdo'") as caught:
        spec.binary_label(pd.Series(["good", "gdo"]))  # a typo is an error, not a silent 0
    assert caught.value.where == "label column 'status'" and "label.positive" in (caught.value.fix or "")
    with pytest.raises(DataContractError, match="1 value\\(s\\) are missing"):
        spec.binary_label(pd.Series(["good", None]))
    plain = spec.label.model_copy(update={"positive": None})  # no mapping: the column must hold 0/1
    assert plain.to_binary(pd.Series([0, 1, 1])).tolist() == [0, 1, 1]
    with pytest.raises(DataContractError, match=r"add label\.positive"):
        plain.to_binary(pd.Series(["good"]))


def _edited(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new)


def test_label_mapping_is_checked_when_the_spec_loads() -> None:
    text = init_spec(credit_frame(), request())
    mapping = _edited(text, '  positive: ["bad"]', '  mapping: {"good": 0, "bad": 1}')
    assert parse_spec(mapping, where="x").label.mapping == {"good": 0, "bad": 1}
    with pytest.raises(ConfigError, match=r"either label\.positive or label\.mapping"):
        parse_spec(
            _edited(text, '  positive: ["bad"]', '  positive: ["bad"]\n  mapping: {"bad": 1, "good": 0}'), where="x"
        )
    with pytest.raises(ConfigError, match=r"\['baad'\] are not in contract.columns.status.allowed"):
        parse_spec(_edited(text, '  positive: ["bad"]', '  positive: ["baad"]'), where="x")
    with pytest.raises(ConfigError, match=r"mapping keys \['other'\] are not in contract"):
        parse_spec(_edited(text, '  positive: ["bad"]', '  mapping: {"bad": 1, "other": 0}'), where="x")
    three = _edited(mapping, '"allowed": ["bad", "good"]', '"allowed": ["bad", "good", "unknown"]')
    with pytest.raises(ConfigError, match=r"no 0/1 for the allowed label value\(s\) \['unknown'\]"):
        parse_spec(three, where="x")


def test_yaml_booleans_get_the_hint_to_quote_them() -> None:
    text = init_spec(credit_frame(), request())
    unquoted = _edited(text, '"allowed": ["No", "Yes"]', '"allowed": [No, Yes]')
    assert yaml.safe_load(unquoted)["contract"]["columns"]["owns_home"]["allowed"] == [False, True]
    with pytest.raises(ConfigError) as caught:
        parse_spec(unquoted, where="x")
    assert "contract.columns.owns_home.allowed: [False, True]" in (caught.value.fix or "")
    report = check_spec(unquoted, where="x")
    assert report.spec is None and len(report.problems) == 2  # each boolean, one shared fix
    assert all("quote values meant as text" in p.fix for p in report.problems)


def test_check_warns_about_categorical_typos_extra_and_empty_columns() -> None:
    df = credit_frame()
    text = _edited(
        init_spec(df, request()), '  categorical: ["savings", "owns_home"]', '  categorical: ["savngs", "owns_home"]'
    )
    clean = check_spec(text, where="x")
    assert not clean.problems
    assert [w.what for w in clean.warnings] == ["features.categorical names 'savngs', which is not in contract.columns"]
    data = df.assign(extra=1, amount=np.nan)
    report = check_spec(text, where="x", data=data, data_where="credit.csv")
    said = " | ".join(w.what for w in report.warnings)
    assert "credit.csv has column(s) the spec does not name: extra" in said
    assert "feature(s) entirely missing in credit.csv: amount" in said
    assert (
        report.problems[0].what
        == "40 of 40 rows (100.0%) have no amount (missing values) and would go to quarantine (amount:null)"
    )
    assert "nullable: true" in report.problems[0].fix


def test_check_with_data_names_unmappable_labels_and_missing_columns() -> None:
    df = credit_frame()
    text = init_spec(df, request())
    assert not check_spec(text, where="x", data=df).problems
    broken = df.assign(status=df["status"].replace({"bad": "BAD"})).drop(columns=["duration"])
    problems = [p.what for p in check_spec(text, where="x", data=broken, data_where="f.csv").problems]
    assert problems[0] == "f.csv lacks column(s) the spec's contract names: duration"
    assert "cannot be mapped to 0/1 ('BAD')" in problems[1]
