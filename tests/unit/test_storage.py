"""Shared storage on the local filesystem: locations, atomic writes, listings, and the storage root setting."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest
from pydantic import ValidationError

from riskloop.errors import ConfigError
from riskloop.settings import Settings
from riskloop.storage import Location, check_uri, location


def test_a_local_path_and_a_file_uri_are_the_same_location(tmp_path: Path) -> None:
    by_path = location(tmp_path / "a")
    by_uri = location(f"file://{tmp_path}/a")
    assert by_path == by_uri and by_path.local_path == tmp_path / "a"
    assert (by_path / "b" / "c.json").uri == f"{tmp_path}/a/b/c.json"
    assert (by_path / "b").name == "b" and (by_path / "b" / "c.json").parent == by_path / "b"
    assert location("s3://bucket/x/y").parent.uri == "s3://bucket/x"
    assert location(by_path) is by_path


def test_an_object_store_location_has_no_local_path() -> None:
    loc = location("s3://bucket/prefix/") / "predictions"
    assert loc.uri == "s3://bucket/prefix/predictions" and loc.path == "bucket/prefix/predictions"
    assert loc.local_path is None and loc.name == "predictions"


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("relative/dir", "relative path"),
        ("ftp://host/x", "scheme 'ftp'"),
        ("s3:///no-bucket", "names no bucket"),
        ("s3://bucket/x?endpoint_override=localhost:9000", "query"),
    ],
)
def test_unusable_storage_roots_are_refused_with_a_fix(uri: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as err:
        check_uri(uri)
    assert err.value.fix and err.value.where == "RISKLOOP_STORAGE__URI"


def test_the_setting_is_checked_and_defaults_to_the_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RISKLOOP_STATE_DIR", str(tmp_path))
    s = Settings()
    assert s.shared == location(tmp_path) and s.predictions.local_path == tmp_path / "predictions"
    assert s.monitor_state("fraud-detector").uri == f"{tmp_path}/monitoring/fraud-detector-state.json"
    monkeypatch.setenv("RISKLOOP_STORAGE__URI", "s3://riskloop/state")
    s = Settings()
    assert s.predictions.uri == "s3://riskloop/state/predictions"
    monkeypatch.setenv("RISKLOOP_STORAGE__URI", "gopher://x")
    with pytest.raises(ValidationError, match=r"storage.uri[\s\S]*scheme 'gopher'[\s\S]*how to fix"):
        Settings()


def test_writes_leave_no_partial_or_temporary_file(tmp_path: Path) -> None:
    target = location(tmp_path) / "deep" / "dir" / "state.json"
    target.write_text('{"a": 1}')
    target.write_text('{"a": 2}')  # replaces
    assert target.read_text() == '{"a": 2}' and target.is_file() and target.size() == 8
    table = pa.table({"x": [1, 2, 3]})
    (location(tmp_path) / "deep" / "t.parquet").write_table(table)
    assert (location(tmp_path) / "deep" / "t.parquet").read_table().equals(table)
    assert sorted(os.listdir(tmp_path / "deep")) == ["dir", "t.parquet"]
    assert os.listdir(tmp_path / "deep" / "dir") == ["state.json"]


def test_a_failed_write_keeps_the_old_content(tmp_path: Path) -> None:
    target = location(tmp_path) / "t.parquet"
    target.write_table(pa.table({"x": [1]}))
    with pytest.raises(AttributeError):  # fails inside the parquet writer, after the file was opened
        target.write_table("not a table")  # type: ignore[arg-type]
    assert target.read_table().column("x").to_pylist() == [1]
    assert os.listdir(tmp_path) == ["t.parquet"]


def test_children_are_sorted_filtered_and_hide_temporary_names(tmp_path: Path) -> None:
    for name in ("date=2026-01-02", "date=2026-01-01"):
        (tmp_path / name).mkdir()
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".part-1.parquet.tmp").write_text("half")
    root = location(tmp_path)
    assert [c.name for c in root.children()] == ["date=2026-01-01", "date=2026-01-02", "notes.txt"]
    assert [c.name for c in root.children(dirs=True)] == ["date=2026-01-01", "date=2026-01-02"]
    assert [c.name for c in root.children(dirs=False)] == ["notes.txt"]
    assert location(tmp_path / "missing").children() == []
    assert root.is_dir() and not root.is_file() and not location(tmp_path / "missing").is_dir()


def test_files_lists_every_depth_in_one_go_without_hidden_names(tmp_path: Path) -> None:
    for relative in (
        "date=2026-01-02/part-0.parquet",
        "date=2026-01-01/part-0.parquet",
        "notes.txt",
        "date=2026-01-01/.part-1.parquet.tmp",
        ".cache/x.parquet",
        "a/b/c.parquet",
    ):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text("x")
    listed = location(tmp_path).files()
    assert [relative for relative, _ in listed] == [
        "a/b/c.parquet",
        "date=2026-01-01/part-0.parquet",
        "date=2026-01-02/part-0.parquet",
        "notes.txt",
    ]
    assert all(f == location(tmp_path) / relative for relative, f in listed)
    assert location(tmp_path / "missing").files() == []
    assert location(tmp_path / "notes.txt").size() == 1 and location(tmp_path / "missing.txt").size() is None


def test_reading_what_is_not_there_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        location(tmp_path / "nothing.json").read_text()


def test_locations_are_values() -> None:
    a, b = location("s3://b/x"), location("s3://b/x")
    assert a == b and hash(a) == hash(b) and {a, b} == {a}
    assert isinstance(a / "y", Location) and str(a / "y") == "s3://b/x/y" and repr(a) == "Location('s3://b/x')"


def test_experiments_keep_artifacts_where_every_pod_can_read_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Embedded sqlite: under the state dir. A tracking server: its own artifact store, never a pod's disk."""
    monkeypatch.setenv("RISKLOOP_STATE_DIR", str(tmp_path))
    assert Settings().experiment_artifact_location == (tmp_path / "mlartifacts").as_uri()
    monkeypatch.setenv("RISKLOOP_MLFLOW__TRACKING_URI", f"sqlite:///{tmp_path}/other.db")
    assert Settings().experiment_artifact_location == (tmp_path / "mlartifacts").as_uri()
    monkeypatch.setenv("RISKLOOP_MLFLOW__TRACKING_URI", "http://mlflow.riskloop.svc.cluster.local:5000")
    assert Settings().experiment_artifact_location is None


def test_the_prediction_log_flushes_less_often_on_an_object_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file per flush and process: once a second would be 86,400 objects a day per replica."""
    monkeypatch.setenv("RISKLOOP_STATE_DIR", str(tmp_path))
    s = Settings()
    assert s.serving.flush_seconds_for(s.predictions) == 1.0
    assert s.serving.flush_seconds_for(location("s3://riskloop/state/predictions")) == 60.0
    monkeypatch.setenv("RISKLOOP_SERVING__LOG_FLUSH_SECONDS", "5")
    assert Settings().serving.flush_seconds_for(location("s3://riskloop/state/predictions")) == 5.0
    monkeypatch.setenv("RISKLOOP_SERVING__LOG_FLUSH_SECONDS", "0")
    with pytest.raises(ValidationError, match="log_flush_seconds"):
        Settings()
