from __future__ import annotations

from pathlib import Path

import pytest

from riskloop.data.spec import load_spec, parse_spec, shipped_specs
from riskloop.errors import ConfigError


def test_shipped_specs_load() -> None:
    assert {"synthetic-fraud", "ulb-creditcard"} <= set(shipped_specs())
    s = load_spec("synthetic-fraud")
    assert s.features.service == "fraud_detector_v1"
    assert s.categories["channel"] == ("pos", "contactless", "online")
    u = load_spec("ulb-creditcard")
    assert u.features.source == "raw" and len(u.features.raw_columns) == 29


def test_unknown_name_lists_choices() -> None:
    with pytest.raises(ConfigError, match="synthetic-fraud"):
        load_spec("nope")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_spec(tmp_path / "missing.yaml")


def test_invalid_yaml_and_fields() -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_spec("a: [", where="x.yaml")
    good = (Path(__file__).parents[2] / "src/riskloop/data/specs/synthetic-fraud.yaml").read_text()
    with pytest.raises(ConfigError, match="surprise: Extra inputs"):
        parse_spec(good + "\nsurprise: 1\n", where="x.yaml")
    with pytest.raises(ConfigError, match="absent from contract"):
        parse_spec(good.replace("id_column: transaction_id", "id_column: txn"), where="x.yaml")
    with pytest.raises(ConfigError, match="allowed"):
        parse_spec(
            good.replace("channel: {type: category, allowed: [pos, contactless, online]}", "channel: {type: category}"),
            where="x.yaml",
        )


def test_spec_source_hashes_the_exact_bytes_a_version_records(tmp_path: Path) -> None:
    import hashlib

    from riskloop.data.spec import read_spec_source, spec_difference

    shipped = read_spec_source("german-credit")
    path = tmp_path / "credit.yaml"
    path.write_bytes(shipped.text.replace("\n", "\r\n").encode())  # line endings are part of the bytes
    mine = read_spec_source(path)
    assert mine.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() != shipped.sha256
    assert mine.parse() == shipped.parse() == load_spec(path)
    assert spec_difference(shipped, mine) == ""  # what a person would call a difference: none
    edited = tmp_path / "edited.yaml"
    edited.write_text(shipped.text.replace("require_approval: true", "require_approval: false"))
    diff = spec_difference(shipped, read_spec_source(edited))
    assert diff.splitlines() == ["-require_approval: true", "+require_approval: false"]
    path.write_bytes(b"name: \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_spec_source(path)
