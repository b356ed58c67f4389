"""Replay transactions through a running model server over HTTP: simulated live traffic.

``make run`` drives its canary with it, the delivery drills use it to check
what each request got back, and ``riskloop replay`` sends a landed day to any
server (an InferenceService behind Kourier, with its Host header). Instances
are sent on a few connections, ``batch_size`` per request (V1 protocol); each
answer is kept as (card, status, version).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx
import pandas as pd

if TYPE_CHECKING:
    from riskloop.data.spec import DatasetSpec
    from riskloop.settings import Settings


def instances(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Validated transactions (in the order given) as request instances."""
    out: list[dict[str, Any]] = []
    for r in frame.to_dict(orient="records"):
        out.append(
            {
                "transaction_id": str(r["transaction_id"]),
                "card_id": str(r["card_id"]),
                "merchant_id": str(r["merchant_id"]),
                "amount": float(r["amount"]),
                "currency": str(r["currency"]),
                "merchant_category": str(r["merchant_category"]),
                "channel": str(r["channel"]),
                "country": str(r["country"]),
                "device_type": str(r["device_type"]),
                "distance_from_home_km": float(r["distance_from_home_km"]),
                "card_age_days": int(r["card_age_days"]),
                "event_timestamp": pd.Timestamp(r["event_timestamp"]).isoformat(),
            }
        )
    return out


def day_instances(s: Settings, spec: DatasetSpec, day: date) -> list[dict[str, Any]]:
    """One landed day's valid transactions (from the storage root), in time order, as request instances."""
    from riskloop.data.io import read_partitions
    from riskloop.data.validate import split_batch

    raw = read_partitions(spec.source_path(s.shared), day, day)
    valid = split_batch(raw, spec.contract, where=f"day {day}").valid
    return instances(valid.sort_values("event_timestamp"))


@dataclass(frozen=True)
class Answer:
    card_id: str
    status: int  # 0: no HTTP answer (connection error or timeout)
    model_version: str | None


@dataclass
class Replay:
    """Send ``rows`` to ``<url>/v1/models/<model>:predict`` on ``connections`` threads.

    ``batch_size`` consecutive rows per request; ``once``: each row is sent once
    and the threads end (``wait``), else the rows cycle until ``stop``. With
    ``once`` the rows are dealt to the connections in batches in order, so each
    card's transactions still reach the server nearly in time order.
    """

    url: str
    model: str
    rows: Sequence[dict[str, Any]]
    connections: int = 2
    timeout_seconds: float = 10.0
    batch_size: int = 1
    once: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)  # e.g. the Host header Kourier routes by
    _answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self, offset: int) -> None:
        endpoint = f"{self.url}/v1/models/{self.model}:predict"
        n, k = len(self.rows), self.batch_size
        with httpx.Client(timeout=self.timeout_seconds, headers=dict(self.headers)) as http:
            i = offset * k
            while not self._stop.is_set() and not (self.once and i >= n):
                batch = [self.rows[j % n] for j in range(i, min(i + k, n) if self.once else i + k)]
                i += self.connections * k
                try:
                    r = http.post(endpoint, json={"instances": batch})
                    version = r.json()["predictions"][0]["model_version"] if r.status_code == 200 else None
                    answer = Answer(str(batch[0]["card_id"]), r.status_code, version)
                except httpx.HTTPError:
                    answer = Answer(str(batch[0]["card_id"]), 0, None)
                with self._lock:
                    self._answers.append(answer)

    def start(self) -> Replay:
        if not self.rows:
            raise ValueError("nothing to replay: no rows")
        self._threads = [
            threading.Thread(target=self._run, args=(k,), name=f"replay-{k}", daemon=True)
            for k in range(self.connections)
        ]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.wait()

    def wait(self) -> None:
        """Until every thread ended (with ``once``: every row sent)."""
        for t in self._threads:
            t.join()

    def __enter__(self) -> Replay:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def answers(self) -> list[Answer]:
        with self._lock:
            return list(self._answers)


__all__ = ["Answer", "Replay", "day_instances", "instances"]
