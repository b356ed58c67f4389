"""Where a with-features request's time goes: Feast's SDK calls against the online store's own calls.

For one single-row request the predictor reads the card's and merchant's rows
and writes the card's new state. This times three ways of doing that, in the
same process, on the same online store and the same held-out cards. The store
is the one the settings select: sqlite by default, Redis with
``RISKLOOP_FEAST__ONLINE_STORE=redis RISKLOOP_FEAST__REDIS_CONNECTION=host:port``
(``run.py`` times both); the output names it and the backend riskloop's
``OnlineFeatures`` picked on it (``sqlite``, ``redis`` or ``provider``):

``sdk_lookup`` / ``sdk_push``
    Feast's SDK: ``FeatureStore.get_online_features`` of the feature service
    (``card_daily``, ``merchant_daily``, ``card_recent`` and the python-mode
    on-demand view) and ``FeatureStore.push`` of the card's new state (what the
    predictor did up to git ``878321c``).
``riskloop_lookup`` / ``riskloop_push``
    ``riskloop.features.store.OnlineFeatures`` as the server calls it now: views
    resolved once, the store read and written through its backend
    (``riskloop.features.online``: one statement or one Redis round trip per
    call), the on-demand function called directly, TTL check.
``direct_read`` / ``direct_write``
    ``provider.online_read`` of the three feature views (feature views resolved
    once, up front) and ``provider.online_write_batch`` of one ``card_recent``
    row: the same rows read and written, without Feast resolving the feature
    service, the views and the push source from registry protos on every call.
    The on-demand view's arithmetic is not in it (riskloop computes the same
    features in its own code for training; python mode costs ~0.2 ms in Feast).

Each is run twice, in a child process with typeguard active (Feast decorates its
classes with ``@typechecked``) and in one under ``python -O``, where typeguard's
decorators do nothing, so the share of runtime type checks shows.

Usage (on a state prepared by ``run.py``; prepares one if the directory is empty)::

    .venv/bin/python benchmarks/serving/feast_calls.py --state-dir .riskloop/bench/serving-state --calls 300
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VIEWS = ("card_daily", "merchant_daily", "card_recent")
SERVICE = "fraud_detector_v1"


def time_calls(fn: Callable[[dict[str, Any]], object], rows: list[dict[str, Any]]) -> dict[str, float]:
    """Per-call milliseconds of ``fn`` over ``rows`` (after 20 warm-up calls)."""
    for r in rows[:20]:
        fn(r)
    ms = []
    for r in rows[20:]:
        t0 = time.perf_counter()
        fn(r)
        ms.append((time.perf_counter() - t0) * 1000)
    ms.sort()
    return {
        "calls": len(ms),
        "p50_ms": round(statistics.median(ms), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
        "p99_ms": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 3),
    }


def child(state_dir: Path, calls: int) -> dict[str, Any]:
    """The six timings in this process (typeguard on unless run with ``-O``)."""
    os.environ["RISKLOOP_STATE_DIR"] = str(state_dir)
    import pandas as pd
    from feast.data_source import PushMode
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import DoubleList, Int64List, Value

    from riskloop.features.compute import CardState
    from riskloop.features.store import OnlineFeatures, StoreConfig, open_store
    from riskloop.settings import Settings

    store = open_store(StoreConfig.from_settings(Settings()))
    prepared = json.loads((state_dir / "prepared.json").read_text())
    txs = prepared["transactions"]
    at = datetime(2026, 1, 14, 12, tzinfo=UTC)
    at_us = int(at.timestamp()) * 1_000_000
    rows = [
        {
            "card_id": t["card_id"],
            "merchant_id": t["merchant_id"],
            "amount": float(t["amount"]),
            "country": t["country"],
            "event_hour": 12.0,
            "event_us": at_us,
        }
        for t in txs[: calls + 20]
    ]
    state = CardState((1_768_000_000_000_000,), (10.0,))
    views = {name: store.get_feature_view(name) for name in VIEWS}
    provider, config = store._get_provider(), store.config

    def key(join_key: str, value: str) -> EntityKey:
        return EntityKey(join_keys=[join_key], entity_values=[Value(string_val=value)])

    def direct_read(r: dict[str, Any]) -> object:
        card = [key("card_id", r["card_id"])]
        return (
            provider.online_read(config, views["card_daily"], card),
            provider.online_read(config, views["merchant_daily"], [key("merchant_id", r["merchant_id"])]),
            provider.online_read(config, views["card_recent"], card),
        )

    def direct_write(r: dict[str, Any]) -> object:
        values = {
            "recent_event_us": Value(int64_list_val=Int64List(val=list(state.event_us))),
            "recent_amounts": Value(double_list_val=DoubleList(val=list(state.amounts))),
        }
        provider.online_write_batch(
            config, views["card_recent"], [(key("card_id", r["card_id"]), values, at, None)], None
        )
        return None

    def sdk_lookup(r: dict[str, Any]) -> object:
        fs = store.get_feature_service(SERVICE, allow_cache=True)
        entity = {k: v for k, v in r.items() if k != "event_us"}
        return store.get_online_features(features=fs, entity_rows=[entity]).to_dict()

    def sdk_push(r: dict[str, Any]) -> object:
        frame = pd.DataFrame(
            {
                "card_id": [r["card_id"]],
                "feature_timestamp": [at],
                "recent_event_us": [list(state.event_us)],
                "recent_amounts": [list(state.amounts)],
            }
        )
        store.push("card_recent_push", frame, to=PushMode.ONLINE)
        return None

    online = OnlineFeatures(store, SERVICE)
    return {
        "online_store": store.config.online_store.type,
        "riskloop_backend": getattr(online, "backend", None),
        "sdk_lookup": time_calls(sdk_lookup, rows),
        "riskloop_lookup": time_calls(lambda r: online.lookup([r]), rows),
        "direct_read": time_calls(direct_read, rows),
        "sdk_push": time_calls(sdk_push, rows),
        "riskloop_push": time_calls(lambda r: online.push([r["card_id"]], [state], [at]), rows),
        "direct_write": time_calls(direct_write, rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here too")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    state_dir = args.state_dir.resolve()
    if args.child:
        print(json.dumps(child(state_dir, args.calls)))
        return
    if not (state_dir / "prepared.json").is_file():
        sys.path.insert(0, str(HERE))
        from run import prepare_state

        prepare_state(state_dir)
    result: dict[str, Any] = {
        "state_dir": str(state_dir),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }
    for mode, flags in (("typeguard_on", []), ("python_-O", ["-O"])):
        done = subprocess.run(
            [sys.executable, *flags, __file__, "--child", "--state-dir", str(state_dir), "--calls", str(args.calls)],
            capture_output=True,
            text=True,
            check=True,
        )
        result[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
