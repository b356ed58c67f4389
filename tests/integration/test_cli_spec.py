"""``riskloop spec init`` and ``spec check`` through the real CLI (Typer's runner) on a CSV written here:
a text label, missing values, a Yes/No column, no time axis; and the bad inputs, each an exit 2 with a fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from riskloop.data.spec import load_spec


def cli(*args: str | Path) -> tuple[int, str]:
    from riskloop.cli import app

    r = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    return r.exit_code, r.output


@pytest.fixture
def credit_csv(tmp_path: Path) -> Path:
    rng = np.random.default_rng(11)
    rows = 60
    savings = rng.choice(["low", "high"], rows).astype(object)
    savings[::5] = None
    path = tmp_path / "credit.csv"
    pd.DataFrame(
        {
            "duration": rng.integers(6, 48, rows),
            "savings": savings,
            "guarantor": rng.choice(["No", "Yes"], rows),
            "status": rng.choice(["good", "bad"], rows),
        }
    ).to_csv(path, index=False)
    return path


def test_init_then_check_a_csv(tmp_path: Path, credit_csv: Path) -> None:
    spec_file = tmp_path / "credit.yaml"
    code, output = cli("spec", "init", credit_csv, "--name", "credit", "--label", "status", "--positive", "bad",
                       "--out", spec_file)  # fmt: skip
    assert code == 0, output
    assert f"riskloop spec check {spec_file} --data {credit_csv}" in output
    spec = load_spec(spec_file)
    assert spec.label.positive == ("bad",) and spec.contract.columns["savings"].nullable
    assert spec.features.raw_columns == ("duration", "savings", "guarantor")

    code, output = cli("spec", "check", spec_file, "--data", credit_csv)
    assert code == 0, output
    assert output.startswith(f"ok: {spec_file}") and "label status (positive: bad)" in output

    code, output = cli("spec", "init", credit_csv, "--name", "credit", "--label", "status", "--positive", "bad",
                       "--out", spec_file)  # fmt: skip
    assert code == 2 and "pass another --out file, or --force" in output

    unquoted = spec_file.read_text().replace('["No", "Yes"]', "[No, Yes]")
    spec_file.write_text(unquoted.replace('categorical: ["savings", "guarantor"]', 'categorical: ["saving"]'))
    code, output = cli("spec", "check", spec_file)
    assert code == 2
    assert "problem: contract.columns.guarantor.allowed.0: Input should be a valid string" in output
    assert output.count("how to fix: quote values meant as text") == 1  # said once for both booleans


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.csv", "--label", "status", "--positive", "bad"], "data file missing.csv does not exist"),
        (["CSV", "--label", "state", "--positive", "bad"], "did you mean 'status'"),
        (["CSV", "--label", "status", "--positive", "1"], "use one of its values: 'bad', 'good'"),
    ],
)
def test_init_bad_input_exits_2_with_a_fix(
    tmp_path: Path, credit_csv: Path, args: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    given = [str(credit_csv) if a == "CSV" else a for a in args]
    code, output = cli("spec", "init", *given, "--name", "credit")
    assert code == 2 and message in output and "how to fix" in output
    assert "Traceback" not in output and not (tmp_path / "credit.yaml").exists()
