"""The feature pipeline's steps: offline tables + Feast registry, then the online store."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

from riskloop.data.spec import load_spec
from riskloop.errors import ConfigError
from riskloop.settings import Settings
from riskloop.steps.common import parse_day, valid_frame


def build_features(spec_name: str, valid_path: Path, settings: Settings) -> dict[str, Path]:
    """Write both tiers' offline tables from validated rows and register the Feast objects."""
    from riskloop.features.store import StoreConfig, apply_definitions, open_store, write_feature_tables

    spec = load_spec(spec_name)
    if spec.features.source != "feast":
        raise ConfigError(f"dataset {spec.name} has no Feast features", fix="use a spec with features.source feast")
    cfg = StoreConfig.from_settings(settings)
    paths = write_feature_tables(valid_frame(spec, valid_path), cfg.offline_dir)
    apply_definitions(open_store(cfg), cfg.offline_dir)
    return dict(paths)


def materialize(end_date: str, days_back: int, settings: Settings, *, tables_dir: Path | None = None) -> str:
    """Load rows stamped in ``[end_date - days_back, end_date]`` (00:00 UTC) into the online store.

    ``tables_dir``: the offline tables ``build_features`` wrote, handed over as an artifact. On a cluster
    each step is its own pod, so they are put back where the registry's sources point before loading.
    """
    from riskloop.features.store import StoreConfig, open_store
    from riskloop.features.store import materialize as load

    end = datetime.combine(parse_day(end_date, "end_date"), datetime.min.time(), tzinfo=timezone.utc)
    cfg = StoreConfig.from_settings(settings)
    if tables_dir is not None:
        tables = sorted(tables_dir.glob("*.parquet"))
        if not tables:
            raise ConfigError(
                f"no offline feature tables in {tables_dir}",
                where="materialize",
                fix="pass the tables artifact of the build_features step",
            )
        cfg.offline_dir.mkdir(parents=True, exist_ok=True)
        for table in tables:
            if table.resolve() != (cfg.offline_dir / table.name).resolve():
                shutil.copyfile(table, cfg.offline_dir / table.name)
    load(open_store(cfg), end - timedelta(days=days_back), end)
    return end.isoformat()
