"""Serving load test: riskloop against MLServer and a bare ASGI ceiling, side by side in one run.

Five targets serve the same XGBoost model (the same ``model.ubj``), each on
127.0.0.1 with one worker process, all measured in this one run:

``riskloop-features``
    ``riskloop serve --model-alias champion --features feast --workers 1``:
    riskloop's raw ASGI app on uvicorn (httptools, uvloop), V1 request of one raw
    transaction, schema validation, one Feast online lookup (sqlite), real-time
    features, ``inplace_predict``, push of the card's new state, metrics,
    prediction log.
``riskloop-redis-features``
    The same server on the **Redis** online store, as on the cluster: a throwaway
    ``redis-server`` on 127.0.0.1 (no persistence) started by this script,
    materialized with the same held-out-day state; its CPU counts in the
    target's CPU per request (and is reported on its own).
``riskloop-nofeatures``
    The same server with ``--features none``: everything but the feature store.
``mlserver``
    MLServer 1.7 with its xgboost runtime (its own venv: it cannot share one with
    Feast), ``parallel_workers: 0`` so inference runs in the one server process
    as in the other targets, and ``OMP_NUM_THREADS=1`` so XGBoost scores on one
    thread as in the other targets (``--mlserver-omp-threads 0`` leaves its
    default). V2 request of one **feature row** (what riskloop
    builds from the transaction and its looked-up features): no feature lookup,
    no validation beyond V2's. A model saved as a plain Booster loads in the
    runtime as ``XGBRegressor`` (its first try), whose ``predict`` output is the
    ``binary:logistic`` probability, i.e. riskloop's score.
``ceiling``
    ``benchmarks/serving/ceiling.py``: raw ASGI + orjson + ``inplace_predict`` on
    uvicorn, the same feature row. The upper bound for one worker.

Both online stores are first reset to the prepared state (sqlite: restored
from the snapshot taken right after preparation; Redis: ``FLUSHALL`` and the
same materialization), so that every feature target starts from the same store
state. All targets are started first (readiness, checked requests: the scores
of MLServer and the ceiling must equal the model's own on the same rows, those
of the two feature targets must equal each other on the same 20 transactions,
sqlite against Redis; then a warm-up); then they are measured in ``--rounds``
interleaved rounds, the order rotating each round, so that neighbours on this
shared machine hit every target alike:

* closed loop: ``wrk -t1 -c8 --latency`` with ``post.lua``, 20 s per target in
  all (4 × 5 s), cycling through request bodies (riskloop: the held-out day's
  transactions in time order, a fresh transaction id per request, so every
  request is a real lookup and a real push; the others: as many distinct
  feature rows) → req/s over all rounds, latency percentiles of the median round;
* open loop: ``hey -q`` at a fixed total rate (500 req/s), 20 s per target in
  all, from ``--hey-streams`` staggered hey processes with one body each and
  ``-o csv``, so p50/p99 come from every request's own latency; the load
  average at each round's start and end is recorded;
* peak RSS of each server's process tree, sampled every 0.2 s with psutil from
  start to stop, and each server's CPU seconds per request (the Redis target's
  redis-server included, and reported on its own);
* the goals (:func:`goals`), per feature target: req/s ≥ 2× MLServer's and
  ≥ 50 % of the ceiling's, CPU per request ≤ 2× the ceiling's, open-loop p99
  ≤ 3× the ceiling's p99 in the same run;
* a py-spy profile of each riskloop server under an extra wrk load (not part of
  the numbers), bucketed into feature lookup, push, model, validation, metrics,
  prediction log, logging, the protocol (``serving/app.py``, ``serving/oip.py``)
  and the server stack (uvicorn, httptools, uvloop, asyncio);
* ``feast_calls.py`` on the same state after the servers stopped, once per
  online store (sqlite; Redis while its server still runs): Feast's SDK lookup
  and push, riskloop's ``OnlineFeatures`` and the online store's own read and
  write, with and without typeguard.

State (synthetic data, a trained and registered champion, the online store
materialized up to the held-out day) is prepared the way the serving
integration tests do it, in a fresh state directory under
``.riskloop/bench/`` that is removed at the end (``--keep-state`` keeps it).
MLServer's venv is created once with uv under ``.riskloop/bench/mlserver-venv``
from ``mlserver-requirements.txt`` and reused while that file is unchanged.

Nothing here asserts a time: the script measures and writes ``--out``.

Usage::

    .venv/bin/python benchmarks/serving/run.py
    .venv/bin/python benchmarks/serving/run.py --duration 5 --open-loop-duration 5 --out /tmp/serving.json
"""

from __future__ import annotations

import argparse
import atexit
import csv
import hashlib
import io
import json
import math
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: _common is one level up
from _common import machine_info as common_machine_info

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BENCH_DIR = REPO / ".riskloop" / "bench"
SPEC = "synthetic-fraud"
HELD_OUT = "2026-01-14"  # the last generated day: never trained on, replayed through the server
GENERATOR = {"days": 14, "n_cards": 600, "n_merchants": 120, "seed": 21}
TARGETS = ("riskloop-features", "riskloop-redis-features", "riskloop-nofeatures", "mlserver", "ceiling")
FEATURE_TARGETS = ("riskloop-features", "riskloop-redis-features")  # the goals' subjects
VERSIONED = (
    "uvicorn",
    "uvloop",
    "httptools",
    "pydantic",
    "orjson",
    "feast",
    "redis",
    "xgboost",
    "numpy",
    "pandas",
    "psutil",
)
RSS_INTERVAL_S = 0.2
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0


# ------------------------------------------------------------------------- state
@dataclass(frozen=True)
class Prepared:
    """Everything the targets and the load generators need, as plain files."""

    state_dir: Path
    model_name: str
    model_version: str
    model_path: Path  # the registered champion's model.ubj
    model_sha256: str
    n_features: int
    transactions: list[dict[str, Any]]  # held-out day, time order: riskloop request instances
    feature_rows: list[list[float]]  # complete model rows (no missing value): MLServer and ceiling
    reference_scores: list[float]  # the model's own scores of feature_rows (inplace_predict, in process)
    seconds: float


PREPARED_FILE = "prepared.json"


def prepare_state(state_dir: Path) -> Prepared:
    """Synthetic data, a registered champion and a materialized online store in ``state_dir``.

    The same steps as ``tests/integration/serving/conftest.py``: ingest, validate,
    training set, train, evaluate, gate, register, then materialize up to the
    start of the held-out day. A directory prepared before (it holds
    ``prepared.json``) is reused as it is, pushed state included.
    """
    t0 = time.perf_counter()
    os.environ["RISKLOOP_STATE_DIR"] = str(state_dir)
    os.environ.update(SQLITE_ENV)  # this process's own store is the sqlite one; Redis's is set per call
    marker = state_dir / PREPARED_FILE
    if marker.is_file():
        saved = json.loads(marker.read_text())
        return Prepared(
            **{
                **saved,
                "state_dir": state_dir,
                "model_path": Path(saved["model_path"]),
                "seconds": time.perf_counter() - t0,
            }
        )
    import numpy as np
    import pandas as pd

    from riskloop import steps
    from riskloop.data.spec import load_spec
    from riskloop.data.synthetic import GeneratorParams, write_partitions
    from riskloop.model import matrix
    from riskloop.serving.loader import resolve_model
    from riskloop.settings import Settings

    s = Settings()
    s.ensure_dirs()
    spec = load_spec(SPEC)
    write_partitions(
        GeneratorParams(
            days=GENERATOR["days"],
            n_cards=GENERATOR["n_cards"],
            n_merchants=GENERATOR["n_merchants"],
            seed=GENERATOR["seed"],
        ),
        spec.source_path(s.root),
    )
    w = s.root / "work"
    steps.ingest(spec.name, "2026-01-01", HELD_OUT, w / "batch.parquet", s)
    steps.validate(spec.name, w / "batch.parquet", w / "valid.parquet", w / "q.parquet", -1, s, "bench")
    info = steps.build_training_set(spec.name, w / "valid.parquet", HELD_OUT, 2.0, 2.0, 3.0, 0, w / "ts.parquet", s)
    out = steps.train(
        spec.name,
        w / "ts.parquet",
        {"n_estimators": 80},
        w / "model",
        s,
        pipeline_run_id="bench",
        data_sha256=info.data_sha256,
        data_snapshot=str(w / "ts.parquet"),
        cutoff_date=HELD_OUT,
        maturity_days=2.0,
    )
    ev = steps.evaluate(spec.name, w / "ts.parquet", w / "model", out.mlflow_run_id, w / "report", s, target_fpr=0.01)
    gate = steps.gate(
        ev.comparison,
        {},
        s,
        spec_name=spec.name,
        mlflow_run_id=out.mlflow_run_id,
        pipeline_run_id="bench",
        gate_result_path=w / "gate.json",
    )
    steps.register(
        out.mlflow_run_id,
        w / "model",
        gate,
        spec.name,
        s,
        pipeline_run_id="bench",
        data_sha256=info.data_sha256,
        data_snapshot=str(w / "ts.parquet"),
    )
    steps.materialize(HELD_OUT, 30, s)

    name = spec.registered_model(s.mlflow.model_name)
    served = resolve_model(s, model_name=name, alias="champion")
    # the file the loader downloaded and hash-checked: MLServer and the ceiling load this very file
    want = served.bundle.meta.get("model_sha256")
    found = [
        f
        for f in (s.root / "serving" / f"{name}-v{served.version}").rglob("model.ubj")
        if hashlib.sha256(f.read_bytes()).hexdigest() == want
    ]
    if not found:
        raise SystemExit(f"no model.ubj with sha256 {want} under {s.root / 'serving'}")
    model_path = found[0]

    valid = pd.read_parquet(w / "valid.parquet")
    day = valid[valid["event_timestamp"] >= pd.Timestamp(HELD_OUT, tz="UTC")]
    day = day.sort_values(["event_timestamp", "transaction_id"]).reset_index(drop=True)
    from riskloop.serving.replay import instances

    transactions = instances(day)  # as the serving tests build them

    x = matrix(pd.read_parquet(w / "ts.parquet"), served.bundle.features)
    complete = x[np.isfinite(x).all(axis=1)]
    if len(complete) == 0:
        raise SystemExit("no training row without a missing value: cannot build JSON feature rows")
    rows = complete[-len(transactions) :] if len(complete) > len(transactions) else complete
    prep = Prepared(
        state_dir=state_dir,
        model_name=name,
        model_version=served.version,
        model_path=model_path,
        model_sha256=served.bundle.meta.get("model_sha256", ""),
        n_features=int(x.shape[1]),
        transactions=transactions,
        feature_rows=rows.astype(np.float64).tolist(),
        reference_scores=served.bundle.predict(rows).tolist(),
        seconds=time.perf_counter() - t0,
    )
    saved = {k: v for k, v in prep.__dict__.items() if k not in ("state_dir", "seconds")}
    marker.write_text(json.dumps({**saved, "model_path": str(model_path)}) + "\n")
    return prep


# ------------------------------------------------------------------- online stores
ONLINE_SNAPSHOT = "online.prepared.db"  # next to the sqlite online store: its state right after preparation
SQLITE_ENV = {"RISKLOOP_FEAST__ONLINE_STORE": "sqlite"}  # pinned: an inherited redis setting must not leak in


class RedisServer:
    """A throwaway ``redis-server`` (Debian's) on 127.0.0.1 for the Redis target: no persistence, own directory.

    Started in its own session like the targets; :meth:`stop` is idempotent and
    also registered with ``atexit``, so the server goes away on every way out of
    the script (``main`` turns SIGTERM into ``SystemExit`` for the same reason).
    """

    def __init__(self, work: Path) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise SystemExit(
                "redis-server is not installed: apt-get install -y redis-server (or deselect the target: "
                "--targets without riskloop-redis-features)"
            )
        self.port = free_port()
        self.dir = work / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = self.dir / "redis-server.log"
        argv = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.argv = [*argv, "--dir", str(self.dir)]
        self.process = subprocess.Popen(
            self.argv, stdout=self.log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
        )
        atexit.register(self.stop)
        self.version = _tool_version([exe, "--version"])
        deadline = time.monotonic() + 20
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"redis-server exited {self.process.returncode}:\n{self.log.read_text()[-2000:]}")
            try:
                self.client().ping()
                return
            except Exception:  # redis.ConnectionError until it listens
                if time.monotonic() > deadline:
                    self.stop()
                    raise SystemExit(f"redis-server not answering on {self.connection} after 20 s") from None
                time.sleep(0.1)

    @property
    def connection(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """What the settings read to use this server as Feast's online store."""
        return {"RISKLOOP_FEAST__ONLINE_STORE": "redis", "RISKLOOP_FEAST__REDIS_CONNECTION": self.connection}

    def client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _with_env(env: dict[str, str], fn: Callable[[], Any]) -> Any:
    """``fn()`` with ``env`` laid over this process's environment (Settings() reads it), restored after."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return fn()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def reset_online_stores(state_dir: Path, redis: RedisServer | None) -> dict[str, Any]:
    """Put every online store into the prepared state, so each feature target starts from the same one.

    Every request pushes a card's state, so the stores drift from the prepared
    state as soon as a target is checked. sqlite: the store is restored from a
    snapshot (sqlite's backup API, consistent under WAL) taken the first time,
    i.e. right after preparation for a fresh state directory. Redis: ``FLUSHALL``,
    then the same ``materialize`` step as in preparation (Feast's Redis store
    skips a write older than what it holds, so materializing over pushed state
    would not reset it).
    """
    import sqlite3

    from riskloop import steps
    from riskloop.settings import Settings

    t0 = time.perf_counter()
    db = Settings().feast_dir / "online.db"
    snapshot = db.with_name(ONLINE_SNAPSHOT)
    out: dict[str, Any] = {}
    taking = not snapshot.is_file()
    source, target = (db, snapshot) if taking else (snapshot, db)
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    out["sqlite"] = (
        "snapshot taken of the prepared store" if taking else "restored from the snapshot taken after preparation"
    )
    if redis is not None:
        redis.client().flushall()
        _with_env(redis.env, lambda: steps.materialize(HELD_OUT, 30, Settings()))
        out["redis"] = f"FLUSHALL, then materialize({HELD_OUT}, 30 days back) into {redis.connection}"
        out["redis_keys"] = int(redis.client().dbsize())
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


# ---------------------------------------------------------------------- MLServer
def ensure_mlserver_venv(venv: Path, requirements: Path) -> Path:
    """MLServer's own venv (uv), rebuilt only when the requirements file changed. Returns its ``mlserver``."""
    stamp = venv / ".requirements-sha256"
    want = hashlib.sha256(requirements.read_bytes()).hexdigest()
    exe = venv / "bin" / "mlserver"
    if exe.is_file() and stamp.is_file() and stamp.read_text().strip() == want:
        return exe
    uv = shutil.which("uv")
    if uv is None:
        raise SystemExit("uv is not on PATH: install it (pip install uv) to build MLServer's venv")
    shutil.rmtree(venv, ignore_errors=True)
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    subprocess.run([uv, "venv", "--quiet", "--python", py, str(venv)], check=True)
    subprocess.run(
        [uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), "-r", str(requirements)], check=True
    )
    stamp.write_text(want + "\n")
    return exe


def write_mlserver_repo(root: Path, prep: Prepared, *, http_port: int, grpc_port: int, metrics_port: int) -> Path:
    """``settings.json`` and ``model-settings.json`` for one MLServer process serving ``prep.model_path``."""
    root.mkdir(parents=True, exist_ok=True)
    settings = {
        "host": "127.0.0.1",
        "http_port": http_port,
        "grpc_port": grpc_port,
        "metrics_port": metrics_port,
        "parallel_workers": 0,  # inference in the server process: one worker, like every other target
        "debug": False,
        "load_models_at_startup": True,
    }
    model = {
        "name": prep.model_name,
        "implementation": "mlserver_xgboost.XGBoostModel",
        "parameters": {"uri": str(prep.model_path), "version": prep.model_version},
    }
    (root / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    (root / "model-settings.json").write_text(json.dumps(model, indent=2) + "\n")
    return root


# ------------------------------------------------------------------------ targets
@dataclass(frozen=True)
class TargetSpec:
    """How to start one target and talk to it."""

    name: str
    description: str
    argv: list[str]
    env: dict[str, str]
    ready_url: str
    predict_url: str
    bodies: list[str]  # closed loop: cycled; "{{n}}" becomes the request number
    stream_bodies: list[str]  # open loop: one per hey process
    score_of: Callable[[Any], list[float]]  # scores out of a response body
    reference: list[float] | None  # expected scores of bodies[:len(reference)] (one row per body), if known
    sidecar_pid: int | None = None  # a process of the target's own outside its tree (its redis-server): CPU counted


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build_targets(
    prep: Prepared,
    mlserver: Path | None,
    work: Path,
    hey_streams: int,
    *,
    omp_threads: int = 1,
    redis: RedisServer | None = None,
) -> list[TargetSpec]:
    """The targets (the Redis one only with a ``redis`` server), each with its own ports and request bodies."""
    base_env = {**os.environ, "RISKLOOP_STATE_DIR": str(prep.state_dir), **SQLITE_ENV}
    v1 = [
        json.dumps({"instances": [{**t, "transaction_id": f"{t['transaction_id']}-b{{{{n}}}}"}]}, separators=(",", ":"))
        for t in prep.transactions
    ]
    # one card per hey stream: distinct cards, so the streams look up and push different keys
    picked: list[dict[str, Any]] = []
    for t in prep.transactions:
        if all(t["card_id"] != p["card_id"] for p in picked):
            picked.append(t)
        if len(picked) == hey_streams:
            break
    v1_streams = [
        json.dumps({"instances": [{**t, "transaction_id": f"{t['transaction_id']}-hey{i}"}]}, separators=(",", ":"))
        for i, t in enumerate(picked)
    ]
    rows = prep.feature_rows
    ceiling_bodies = [json.dumps({"instances": [r]}, separators=(",", ":")) for r in rows]
    v2_bodies = [
        json.dumps(
            {
                "inputs": [{"name": "input-0", "shape": [1, len(r)], "datatype": "FP32", "data": r}],
                "outputs": [{"name": "predict"}],
            },
            separators=(",", ":"),
        )
        for r in rows
    ]

    def riskloop(features: str, redis: RedisServer | None = None) -> TargetSpec:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        if features == "none":
            name, store = "riskloop-nofeatures", ", no feature store"
        elif redis is None:
            name, store = "riskloop-features", ", Feast online lookup + push on sqlite"
        else:
            name, store = "riskloop-redis-features", f", Feast online lookup + push on Redis ({redis.connection})"
        return TargetSpec(
            name=name,
            description=(
                f"riskloop serve --model-alias champion --features {features} --workers 1 "
                f"(raw ASGI app on uvicorn, V1, one raw transaction{store})"
            ),
            argv=[
                sys.executable,
                "-m",
                "riskloop.cli",
                "serve",
                "--model-alias",
                "champion",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
                "--features",
                features,
            ],
            env={**base_env, **(redis.env if redis is not None else {})},
            ready_url=f"{url}/v1/models/{prep.model_name}",
            predict_url=f"{url}/v1/models/{prep.model_name}:predict",
            bodies=v1,
            stream_bodies=v1_streams,
            score_of=lambda r: [float(p["score"]) for p in r["predictions"]],
            reference=None,
            sidecar_pid=redis.process.pid if redis is not None else None,
        )

    targets = [riskloop("feast"), *([riskloop("feast", redis)] if redis is not None else []), riskloop("none")]
    if mlserver is not None:
        http, grpc, metrics = free_port(), free_port(), free_port()
        repo = write_mlserver_repo(work / "mlserver-repo", prep, http_port=http, grpc_port=grpc, metrics_port=metrics)
        url = f"http://127.0.0.1:{http}"
        targets.append(
            TargetSpec(
                name="mlserver",
                description=(
                    "MLServer 1.7 + mlserver-xgboost, parallel_workers 0, "
                    + (f"OMP_NUM_THREADS={omp_threads}" if omp_threads else "XGBoost's default threads")
                    + ", V2, one feature row (no feature lookup), output 'predict'"
                ),
                argv=[str(mlserver), "start", str(repo)],
                # its own venv: nothing of the project's environment may leak in. One OpenMP thread, as riskloop
                # and the ceiling score: the runtime leaves XGBoost's default (every core), whose spinning threads
                # fight the load generator for the 2 cores (a trial run swung from 336 to 57 req/s between rounds)
                env={
                    **{
                        k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "OMP_NUM_THREADS")
                    },
                    **({"OMP_NUM_THREADS": str(omp_threads)} if omp_threads else {}),
                },
                ready_url=f"{url}/v2/models/{prep.model_name}/ready",
                predict_url=f"{url}/v2/models/{prep.model_name}/infer",
                bodies=v2_bodies,
                stream_bodies=v2_bodies[:hey_streams],
                score_of=lambda r: [float(v) for v in r["outputs"][0]["data"]],
                reference=prep.reference_scores,
            )
        )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    targets.append(
        TargetSpec(
            name="ceiling",
            description="bare ASGI (uvicorn) + orjson + booster.inplace_predict, one feature row",
            argv=[sys.executable, str(HERE / "ceiling.py"), "--model", str(prep.model_path), "--port", str(port)],
            env=base_env,
            ready_url=f"{url}/health",
            predict_url=f"{url}/predict",
            bodies=ceiling_bodies,
            stream_bodies=ceiling_bodies[:hey_streams],
            score_of=lambda r: [float(v) for v in r["predictions"]],
            reference=prep.reference_scores,
        )
    )
    return targets


class RssSampler:
    """Peak RSS of a process and all its descendants, sampled every ``interval`` seconds in a thread.

    The sum over the tree counts pages that processes share once per process
    (an upper bound); every target here runs as a single process, so it is exact.
    """

    def __init__(self, pid: int, interval: float = RSS_INTERVAL_S) -> None:
        self.pid, self.interval = pid, interval
        self.peak_bytes = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)
        self._thread.start()

    def _tree(self) -> list[psutil.Process]:
        root = psutil.Process(self.pid)
        return [root, *root.children(recursive=True)]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                total = 0
                for p in self._tree():
                    try:
                        total += p.memory_info().rss
                    except psutil.NoSuchProcess:
                        continue
            except psutil.NoSuchProcess:
                return
            self.peak_bytes = max(self.peak_bytes, total)
            self.samples += 1
            self._stop.wait(self.interval)

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the live tree so far."""
        total = 0.0
        try:
            procs = self._tree()
        except psutil.NoSuchProcess:
            return math.nan
        for p in procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                continue
        return total

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@dataclass
class Running:
    spec: TargetSpec
    process: subprocess.Popen[bytes]
    log: Path
    rss: RssSampler
    sidecar: RssSampler | None = None  # the target's redis-server, outside its process tree
    ready_seconds: float = math.nan
    notes: list[str] = field(default_factory=list)

    def cpu_seconds(self) -> tuple[float, float]:
        """CPU seconds so far: the server's tree plus its sidecar, and the sidecar's alone (0 without one)."""
        side = self.sidecar.cpu_seconds() if self.sidecar is not None else 0.0
        return self.rss.cpu_seconds() + side, side


def start(spec: TargetSpec, logs: Path) -> Running:
    """Start a target in its own process group and wait until it answers its readiness URL."""
    log = logs / f"{spec.name}.log"
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        spec.argv, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=spec.env, cwd=REPO, start_new_session=True
    )
    run = Running(
        spec, proc, log, RssSampler(proc.pid), RssSampler(spec.sidecar_pid) if spec.sidecar_pid is not None else None
    )
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            run.rss.stop()
            if run.sidecar is not None:
                run.sidecar.stop()
            raise SystemExit(f"{spec.name} exited {proc.returncode} before it was ready:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(spec.ready_url, timeout=2) as r:
                if r.status == 200:
                    run.ready_seconds = time.perf_counter() - t0
                    return run
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    stop(run)
    raise SystemExit(f"{spec.name} not ready in {READY_TIMEOUT_S:g} s:\n{log.read_text()[-3000:]}")


def stop(run: Running) -> int:
    """Terminate the target's process group (SIGTERM, then SIGKILL after a grace period)."""
    pgid = run.process.pid  # start_new_session: the group id is the leader's pid
    try:
        if run.process.poll() is None:
            os.killpg(pgid, signal.SIGTERM)
            try:
                run.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                run.notes.append(f"did not stop within {STOP_TIMEOUT_S:g} s of SIGTERM: killed")
        os.killpg(pgid, signal.SIGKILL)  # whatever the leader left behind
    except ProcessLookupError:
        pass
    run.rss.stop()
    if run.sidecar is not None:
        run.sidecar.stop()  # the sampler only: the redis-server itself is main's to stop
    return int(run.process.wait(timeout=10))


def post(url: str, body: str, timeout: float = 10.0) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body.encode(), method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return int(r.status), json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode(errors="replace")


CHECK_REQUESTS = 20


def check(run: Running) -> dict[str, Any]:
    """``CHECK_REQUESTS`` requests, all 200; scores against the model's own where the reference is known.

    The scores come back under ``"scores"`` (the feature targets' are compared
    with each other by :func:`compare_feature_scores`).
    """
    spec = run.spec
    n = (
        min(len(spec.reference), CHECK_REQUESTS)
        if spec.reference is not None
        else min(len(spec.bodies), CHECK_REQUESTS)
    )
    diffs, scores = [], []
    for i in range(n):
        status, payload = post(spec.predict_url, spec.bodies[i].replace("{{n}}", f"check{i}"))
        if status != 200:
            raise SystemExit(f"{spec.name}: check request answered {status}: {str(payload)[:500]}")
        got = spec.score_of(payload)
        scores.append(got[0])
        if spec.reference is not None:
            diffs.append(abs(got[0] - spec.reference[i]))
    out: dict[str, Any] = {"requests": n, "status": 200, "scores": scores}
    if diffs:
        out["max_abs_score_diff_vs_model"] = max(diffs)
    return out


def compare_feature_scores(results: dict[str, dict[str, Any]]) -> None:
    """The feature targets, on the same store state and the same transactions, must score alike (sqlite vs Redis).

    Each checked request looked up the card and merchant, and pushed the card's
    state, which the next request of the same card read back: equal scores mean
    both online paths read and write the same rows. A difference stops the run:
    the two targets would not be serving the same thing.
    """
    present = [name for name in FEATURE_TARGETS if name in results]
    if len(present) < 2:
        return
    base = results[present[0]]["check"]["scores"]
    for name in present[1:]:
        other = results[name]["check"]["scores"]
        diff = max(abs(a - b) for a, b in zip(base, other, strict=True))
        results[name]["check"][f"max_abs_score_diff_vs_{present[0]}"] = diff
        if diff > 1e-9:
            raise SystemExit(
                f"{name} and {present[0]} scored the same {len(base)} transactions from the same store state "
                f"differently (max |diff| {diff:g}): {name} {other[:5]}..., {present[0]} {base[:5]}...; "
                "the online paths disagree (see riskloop.features.online)"
            )


# ------------------------------------------------------------------ load generators
def run_wrk(url: str, bodies_file: Path, *, seconds: float, connections: int, timeout_s: int = 5) -> dict[str, Any]:
    """``wrk -t1 -c<connections> -d<seconds>s --latency`` with post.lua; parsed numbers plus wrk's CPU time."""
    seconds = max(1, math.ceil(seconds - 1e-9))  # wrk takes whole seconds only (-d0.75s is a usage error)
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk (or scripts/services.sh install)")
    argv = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{seconds:g}s",
        f"--timeout={timeout_s}s",
        "--latency",
        "-s",
        str(HERE / "post.lua"),
        url,
        "--",
        str(bodies_file),
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"wrk failed ({done.returncode}) on {url}: {(done.stderr or done.stdout)[-2000:]}")
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if line is None:
        raise SystemExit(f"wrk printed no summary:\n{done.stdout[-2000:]}")
    raw = json.loads(line.removeprefix("WRK_JSON "))
    non2xx = 0
    for ln in done.stdout.splitlines():
        if ln.strip().startswith("Non-2xx or 3xx responses:"):
            non2xx = int(ln.split(":")[1])
    pct = raw["latency_us"]["percentiles"]
    seconds_run = raw["duration_us"] / 1e6
    return {
        "command": " ".join(["wrk", *argv[1:7], "benchmarks/serving/post.lua", url, "--", "<bodies file>"]),
        "requests": raw["requests"],
        "seconds": round(seconds_run, 3),
        "req_per_s": round(raw["requests"] / seconds_run, 1),
        "non_2xx": non2xx,
        "socket_errors": raw["errors"],
        "latency_ms": {
            "mean": round(raw["latency_us"]["mean"] / 1000, 3),
            "p50": pct["50"] / 1000,
            "p75": pct["75"] / 1000,
            "p90": pct["90"] / 1000,
            "p99": pct["99"] / 1000,
            "p99.9": pct["99.9"] / 1000,
            "max": raw["latency_us"]["max"] / 1000,
        },
        "loadgen_cpu_seconds": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 2),
        "report": done.stdout,
    }


def run_hey(
    url: str, bodies: Sequence[str], work: Path, *, rate: float, seconds: float, workers_per_stream: int
) -> dict[str, Any]:
    """Open loop at ``rate`` req/s in total: one ``hey -q`` process per body, every request's latency from its CSV.

    hey paces each worker with its own ticker at ``-q`` req/s, all of a process's
    workers in the same phase: 50 workers at 10 req/s send bursts of 50 requests
    every 100 ms, not 500 evenly spaced ones. So each process gets few workers
    (``workers_per_stream``, 1 by default) at a higher rate, and the processes'
    starts are staggered by a fraction of the period, which spreads their ticks
    evenly. A worker whose request is still out when its tick comes sends late
    (closed-loop behaviour), so the achieved rate is reported next to the target
    rate: equal means the server kept up and the latencies are open-loop ones.
    """
    hey = shutil.which("hey")
    if hey is None:
        raise SystemExit("hey is not installed: apt-get install -y hey")
    per_worker = rate / (len(bodies) * workers_per_stream)
    procs = []
    load_start = os.getloadavg()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for i, body in enumerate(bodies):
        body_file = work / f"hey-body-{i}.json"
        body_file.write_text(body)
        argv = [
            hey,
            "-z",
            f"{seconds:g}s",
            "-c",
            str(workers_per_stream),
            "-q",
            f"{per_worker:g}",
            "-m",
            "POST",
            "-T",
            "application/json",
            "-D",
            str(body_file),
            "-t",
            "10",
            "-o",
            "csv",
            url,
        ]
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        time.sleep(1 / per_worker / len(bodies))  # stagger the tickers' phases
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    for p in procs:
        out, err = p.communicate(timeout=seconds + 60)
        if p.returncode != 0:
            raise SystemExit(f"hey failed ({p.returncode}): {err[-2000:]}")
        for row in csv.DictReader(io.StringIO(out)):
            latencies.append(float(row["response-time"]))
            statuses[row["status-code"]] = statuses.get(row["status-code"], 0) + 1
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_end = os.getloadavg()
    if not latencies:
        raise SystemExit("hey recorded no request")
    latencies.sort()
    return {
        "command": (
            f"{len(bodies)} staggered × hey -z {seconds:g}s -c {workers_per_stream} -q {per_worker:g} "
            f"-m POST -T application/json -D <body> -o csv {url}"
        ),
        "seconds": seconds,
        "target_req_per_s": rate,
        "achieved_req_per_s": round(len(latencies) / seconds, 1),
        "requests": len(latencies),
        "status_counts": statuses,
        "latency_ms": latency_summary(latencies),
        "loadgen_cpu_seconds": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 2),
        "load_average_1_5_15_start": [round(x, 2) for x in load_start],
        "load_average_1_5_15_end": [round(x, 2) for x in load_end],
        "latencies_s": latencies,
    }


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


# ------------------------------------------------------------------------ profile
PY_SPY = "py-spy==0.4.3"
# Where a sampled stack's time goes. First the work buckets: the first whose pattern occurs anywhere in the
# stack wins, so they claim the library frames under them (Feast, redis-py, sqlite3, XGBoost, prometheus-client).
# A stack none of them claims is the protocol's or the server's: the innermost frame of either decides, so
# uvicorn's send/receive called from the app count as server stack and the app's own code (routing, body,
# JSON via orjson, whose C calls have no frame of their own) as protocol. A stack with no known frame at all
# is counted as "unattributed" and its leaves listed, so a stale pattern shows instead of hiding in a bucket.
# A thread parked in a wait still shows up in non-blocking sampling now and then: counted apart, not as work.
IDLE_LEAF = r"(Condition\.wait|Event\.wait|_worker \(concurrent/futures/thread\.py|select \(selectors\.py|poll \()"
_ONLINE_IO = r"(Redis|Sqlite|Feast)OnlineIO"  # riskloop/features/online.py: the store backends under lookup/push
# "[ .]" after a function name: the function itself or its comprehensions ("f.<locals>.<listcomp> (")
BUCKETS: tuple[tuple[str, str], ...] = (
    ("feast push (OnlineFeatures.push, online.py write)", rf"(^|;)(OnlineFeatures\.push|{_ONLINE_IO}\.write)[ .]"),
    (
        "feast lookup (OnlineFeatures.lookup, online.py read)",
        rf"(^|;)(OnlineFeatures\.lookup|{_ONLINE_IO}\.read(_view)?)[ .]",
    ),
    # riskloop scores through predict_dense (model/bundle.py: XGBoost's C API, the call inplace_predict makes)
    (
        "model (bundle.predict_dense / inplace_predict)",
        r"(^|;)(ModelBundle\.predict|predict_dense|[\w.]*inplace_predict)[ .]",
    ),
    ("request validation (schema.py)", r"riskloop/serving/schema\.py"),
    ("metrics (prometheus-client)", r"riskloop/serving/metrics\.py|prometheus_client/"),
    ("prediction log", r"riskloop/serving/prediction_log\.py"),
    (
        "predictor, other (router, real-time features, rows, response)",
        r"riskloop/serving/(predictor|router)\.py|riskloop/features/compute\.py",
    ),
    ("logging and warnings", r"logging/__init__\.py|warnings\.py|(^|;)_showwarn"),
)
INNER_BUCKETS: tuple[tuple[str, str], ...] = (
    ("protocol (serving/app.py: routing, body, JSON; serving/oip.py: V2 codec)", r"riskloop/serving/(app|oip)\.py"),
    (
        "server stack (uvicorn, httptools, uvloop, asyncio)",
        r"uvicorn/|httptools|uvloop|asyncio/|selectors\.py|socket\.py|threading\.py|"
        r"riskloop/serving/(server|__main__)\.py|riskloop/cli/|typer/|click/",
    ),
)
UNATTRIBUTED = "unattributed (no known frame: see top_unattributed_leaves)"


def ensure_py_spy(venv: Path) -> Path:
    """py-spy in a throwaway venv of its own (uv), installed on first use."""
    exe = venv / "bin" / "py-spy"
    if exe.is_file():
        return exe
    uv = shutil.which("uv")
    if uv is None:
        raise SystemExit("uv is not on PATH: install it (pip install uv) to profile with py-spy")
    subprocess.run(
        [uv, "venv", "--quiet", "--python", f"{sys.version_info.major}.{sys.version_info.minor}", str(venv)], check=True
    )
    subprocess.run([uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), PY_SPY], check=True)
    return exe


def profile(
    run: Running, py_spy: Path, bodies_file: Path, work: Path, *, seconds: float, connections: int
) -> dict[str, Any]:
    """Sample the server with py-spy (non-blocking, 200 Hz) under a separate, unrecorded wrk load.

    Idle threads are not sampled, so the samples are where the server's threads
    run Python (or C called from it); the buckets add up to 100 %.
    """
    import re

    raw = work / f"{run.spec.name}.py-spy.txt"
    spy = subprocess.Popen(
        [
            str(py_spy),
            "record",
            "--pid",
            str(run.process.pid),
            "--rate",
            "200",
            "--nonblocking",
            "--duration",
            f"{seconds + 2:g}",
            "--format",
            "raw",
            "--output",
            str(raw),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)  # attach before the load starts
    load = run_wrk(run.spec.predict_url, bodies_file, seconds=seconds, connections=connections)
    _, err = spy.communicate(timeout=seconds + 60)
    if spy.returncode != 0 or not raw.is_file():
        return {"error": f"py-spy failed ({spy.returncode}): {err[-1000:]}"}
    counts = dict.fromkeys([*(name for name, _ in (*BUCKETS, *INNER_BUCKETS)), UNATTRIBUTED], 0)
    patterns = [(name, re.compile(pat)) for name, pat in BUCKETS]
    inner = [(name, re.compile(pat)) for name, pat in INNER_BUCKETS]
    idle_leaf = re.compile(IDLE_LEAF)
    functions: dict[str, int] = {}
    unattributed: dict[str, int] = {}
    total = idle = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        leaf = stack.rsplit(";", 1)[-1]
        if idle_leaf.match(leaf):
            idle += int(n)
            continue
        total += int(n)
        bucket = next((name for name, pat in patterns if pat.search(stack)), None)
        if bucket is None:
            frames = reversed(stack.split(";"))
            bucket = next((name for f in frames for name, pat in inner if pat.search(f)), UNATTRIBUTED)
        if bucket == UNATTRIBUTED:
            unattributed[leaf] = unattributed.get(leaf, 0) + int(n)
        counts[bucket] += int(n)
        functions[leaf] = functions.get(leaf, 0) + int(n)
    top = sorted(functions.items(), key=lambda kv: -kv[1])[:15]
    return {
        "tool": f"{PY_SPY} record --rate 200 --nonblocking --format raw, during wrk -c{connections} -d{seconds:g}s",
        "samples": total,
        "idle_samples_left_out": idle,
        "req_per_s_while_sampled": load["req_per_s"],
        "share": {name: round(c / total, 4) if total else 0.0 for name, c in counts.items()},
        "top_leaf_functions": [{"frame": f, "share": round(c / total, 4)} for f, c in top],
        "top_unattributed_leaves": [
            {"frame": f, "share": round(c / total, 4)}
            for f, c in sorted(unattributed.items(), key=lambda kv: -kv[1])[:10]
        ],
        "raw_file": raw.name,
    }


# -------------------------------------------------------------------------- a run
def measure_all(specs: list[TargetSpec], work: Path, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Start every target, then measure them in interleaved rounds, then stop them all.

    The machine is shared: a neighbour's burst would hit whichever target is
    being measured at the time. So each target's closed and open loop are cut
    into ``--rounds`` slices, and the slices of all targets alternate (the order
    rotates every round): every target sees the same mix of neighbours. The
    servers not under load meanwhile sit idle.
    """
    runs: dict[str, Running] = {}
    results: dict[str, dict[str, Any]] = {}
    bodies: dict[str, Path] = {}
    try:
        for spec in specs:
            print(f"[{spec.name}] starting", flush=True)
            bodies[spec.name] = work / f"{spec.name}-bodies.txt"
            bodies[spec.name].write_text("\n".join(spec.bodies) + "\n")
            run = runs[spec.name] = start(spec, work)
            results[spec.name] = {
                "description": spec.description,
                "argv": spec.argv,
                "distinct_bodies": len(spec.bodies),
                "ready_seconds": round(run.ready_seconds, 2),
                "check": check(run),
            }
        compare_feature_scores(results)  # before any warm-up: every feature store still in the same state
        for spec in specs:
            run_wrk(spec.predict_url, bodies[spec.name], seconds=args.warmup, connections=args.connections)
        # wrk takes whole seconds only (-d0.75s is a usage error): each round is rounded up to them, ≥ 1 s
        slice_s = float(max(1, math.ceil(args.duration / args.rounds - 1e-9)))
        if slice_s * args.rounds != args.duration:
            print(f"closed loop: {args.rounds} rounds of {slice_s:g} s (wrk takes whole seconds)", flush=True)
        closed: dict[str, list[dict[str, Any]]] = {spec.name: [] for spec in specs}
        for r in range(args.rounds):
            for spec in specs[r % len(specs) :] + specs[: r % len(specs)]:
                run = runs[spec.name]
                load = os.getloadavg()[0]
                cpu0, side0 = run.cpu_seconds()
                res = run_wrk(spec.predict_url, bodies[spec.name], seconds=slice_s, connections=args.connections)
                cpu1, side1 = run.cpu_seconds()
                res["server_cpu_seconds"] = round(cpu1 - cpu0, 3)  # its redis-server's included
                if run.sidecar is not None:
                    res["redis_cpu_seconds"] = round(side1 - side0, 3)
                res["round"], res["load_average_1m_before"] = r, round(load, 2)
                closed[spec.name].append(res)
            print(
                f"closed loop round {r + 1}/{args.rounds}: "
                + ", ".join(f"{n} {v[-1]['req_per_s']:g} req/s" for n, v in closed.items()),
                flush=True,
            )
        for name, rounds in closed.items():
            results[name]["closed_loop"] = combine_closed(rounds)
        open_specs = [spec for spec in specs if args.open_loop == "all" or spec.name in (*FEATURE_TARGETS, "ceiling")]
        if args.open_loop_duration > 0 and open_specs:
            opened: dict[str, list[dict[str, Any]]] = {spec.name: [] for spec in open_specs}
            for r in range(args.rounds):
                for spec in open_specs[r % len(open_specs) :] + open_specs[: r % len(open_specs)]:
                    run = runs[spec.name]
                    cpu0, side0 = run.cpu_seconds()
                    res = run_hey(
                        spec.predict_url,
                        spec.stream_bodies,
                        work,
                        rate=args.rate,
                        seconds=args.open_loop_duration / args.rounds,
                        workers_per_stream=args.hey_workers,
                    )
                    cpu1, side1 = run.cpu_seconds()
                    res["server_cpu_seconds"] = round(cpu1 - cpu0, 3)  # its redis-server's included
                    if run.sidecar is not None:
                        res["redis_cpu_seconds"] = round(side1 - side0, 3)
                    res["round"] = r
                    opened[spec.name].append(res)
                print(
                    f"open loop round {r + 1}/{args.rounds} at {args.rate:g} req/s: "
                    + ", ".join(f"{n} {v[-1]['achieved_req_per_s']:g} req/s" for n, v in opened.items()),
                    flush=True,
                )
            for name, rounds in opened.items():
                results[name]["open_loop"] = combine_open(rounds, rate=args.rate)
        if args.profile > 0:
            for spec in specs:
                if spec.name.startswith("riskloop"):
                    print(
                        f"[{spec.name}] profiling {args.profile:g} s with py-spy (not part of the numbers)", flush=True
                    )
                    results[spec.name]["profile"] = profile(
                        runs[spec.name],
                        ensure_py_spy(args.tools_venv),
                        bodies[spec.name],
                        work,
                        seconds=args.profile,
                        connections=args.connections,
                    )
    finally:
        for name, run in runs.items():
            code = stop(run)
            results[name].update(
                {
                    "exit_code": code,
                    "peak_rss_mib": round(run.rss.peak_bytes / 2**20, 1),
                    "rss_samples": run.rss.samples,
                    "notes": run.notes,
                    "log_bytes": run.log.stat().st_size if run.log.exists() else 0,
                }
            )
            if run.sidecar is not None:
                results[name]["redis_peak_rss_mib"] = round(run.sidecar.peak_bytes / 2**20, 1)
    return results


def combine_closed(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One target's closed-loop rounds: req/s over all of them; latency percentiles as the median round's."""
    requests = sum(r["requests"] for r in rounds)
    seconds = sum(r["seconds"] for r in rounds)
    cpu = sum(r["server_cpu_seconds"] for r in rounds)
    keys = ("mean", "p50", "p90", "p99", "p99.9", "max")
    return {
        "requests": requests,
        "seconds": round(seconds, 3),
        "req_per_s": round(requests / seconds, 1),
        "req_per_s_by_round": [r["req_per_s"] for r in rounds],
        "non_2xx": sum(r["non_2xx"] for r in rounds),
        "socket_errors": {k: sum(r["socket_errors"][k] for r in rounds) for k in rounds[0]["socket_errors"]},
        "latency_ms": {k: round(statistics.median(r["latency_ms"][k] for r in rounds), 3) for k in keys},
        "latency_ms_range_over_rounds": {
            k: [min(r["latency_ms"][k] for r in rounds), max(r["latency_ms"][k] for r in rounds)] for k in keys
        },
        "server_cpu_seconds": round(cpu, 2),
        "server_cpu_ms_per_request": round(cpu * 1000 / max(requests, 1), 3),
        **redis_cpu(rounds, requests),
        "loadgen_cpu_seconds": round(sum(r["loadgen_cpu_seconds"] for r in rounds), 2),
        "command": rounds[0]["command"],
        "rounds": list(rounds),
    }


def redis_cpu(rounds: Sequence[dict[str, Any]], requests: int) -> dict[str, Any]:
    """The redis-server's share of ``server_cpu_seconds`` (which includes it), for a target with one."""
    if not any("redis_cpu_seconds" in r for r in rounds):
        return {}
    cpu = sum(r["redis_cpu_seconds"] for r in rounds)
    return {"redis_cpu_seconds": round(cpu, 3), "redis_cpu_ms_per_request": round(cpu * 1000 / max(requests, 1), 3)}


def combine_open(rounds: Sequence[dict[str, Any]], *, rate: float) -> dict[str, Any]:
    """One target's open-loop rounds, merged exactly: every request's latency is in the pool."""
    latencies = sorted(x for r in rounds for x in r.pop("latencies_s"))
    statuses: dict[str, int] = {}
    for r in rounds:
        for code, n in r["status_counts"].items():
            statuses[code] = statuses.get(code, 0) + n
    seconds = sum(r["seconds"] for r in rounds)
    ok = statuses.get("200", 0)
    cpu = sum(r["server_cpu_seconds"] for r in rounds)
    return {
        "target_req_per_s": rate,
        "achieved_req_per_s": round(len(latencies) / seconds, 1),
        "achieved_req_per_s_by_round": [r["achieved_req_per_s"] for r in rounds],
        "requests": len(latencies),
        "seconds": seconds,
        "status_counts": statuses,
        "non_200": len(latencies) - ok,
        "latency_ms": latency_summary(latencies),
        "server_cpu_seconds": round(cpu, 2),
        "server_cpu_ms_per_request": round(cpu * 1000 / max(ok, 1), 3),
        **redis_cpu(rounds, ok),
        "load_average_1m_start_end_by_round": [
            [r["load_average_1_5_15_start"][0], r["load_average_1_5_15_end"][0]] for r in rounds
        ],
        "loadgen_cpu_seconds": round(sum(r["loadgen_cpu_seconds"] for r in rounds), 2),
        "command": rounds[0]["command"],
        "rounds": list(rounds),
    }


def latency_summary(sorted_s: Sequence[float]) -> dict[str, float]:
    """Percentiles in milliseconds of sorted latencies in seconds."""
    if not sorted_s:
        return {}
    out = {f"p{p:g}": round(percentile(sorted_s, p) * 1000, 3) for p in (50, 90, 99, 99.9)}
    out["max"] = round(sorted_s[-1] * 1000, 3)
    out["mean"] = round(statistics.fmean(sorted_s) * 1000, 3)
    return out


def goals(targets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The goals, checked on this run's numbers (``None`` where a target or a measurement is missing).

    For each feature target (sqlite and Redis): closed-loop req/s ≥ 2× MLServer's
    and ≥ 50 % of the ceiling's; server CPU per request (its redis-server's
    included) ≤ 2× the ceiling's; open loop at the offered rate: p99 ≤ 3× the
    ceiling's p99 in the same run, counted only where the target kept up (≥ 98 %
    of the rate achieved, every answer a 200) and so did the ceiling (else its
    p99 is no reference). Without features: the two throughput ratios only.
    """

    def closed(name: str, key: str) -> float | None:
        t = targets.get(name)
        return float(t["closed_loop"][key]) if t and "closed_loop" in t else None

    def opened(name: str) -> dict[str, Any] | None:
        t = targets.get(name)
        return t.get("open_loop") if t else None

    def kept_up(o: dict[str, Any]) -> bool:
        return bool(o["achieved_req_per_s"] >= 0.98 * o["target_req_per_s"] and o["non_200"] == 0)

    ml, ceil = closed("mlserver", "req_per_s"), closed("ceiling", "req_per_s")
    ceil_cpu = closed("ceiling", "server_cpu_ms_per_request")
    ceil_open = opened("ceiling")
    out: dict[str, Any] = {}
    for variant in (*FEATURE_TARGETS, "riskloop-nofeatures"):
        if variant not in targets and variant not in ("riskloop-features", "riskloop-nofeatures"):
            continue
        mine = closed(variant, "req_per_s")
        entry: dict[str, Any] = {
            "vs_mlserver": round(mine / ml, 3) if mine and ml else None,
            "vs_ceiling": round(mine / ceil, 3) if mine and ceil else None,
            "goal_2x_mlserver_met": (mine >= 2 * ml) if mine and ml else None,
            "goal_half_ceiling_met": (mine >= 0.5 * ceil) if mine and ceil else None,
        }
        out[variant] = entry
        if variant not in FEATURE_TARGETS:
            continue
        cpu = closed(variant, "server_cpu_ms_per_request")
        entry.update(
            {
                "cpu_ms_per_request": cpu,
                "redis_cpu_ms_per_request": (targets.get(variant, {}).get("closed_loop") or {}).get(
                    "redis_cpu_ms_per_request"
                ),
                "ceiling_cpu_ms_per_request": ceil_cpu,
                "cpu_vs_ceiling": round(cpu / ceil_cpu, 3) if cpu and ceil_cpu else None,
                "goal_cpu_2x_ceiling_met": (cpu <= 2 * ceil_cpu) if cpu and ceil_cpu else None,
            }
        )
        o = opened(variant)
        if o and ceil_open:
            p99, ceil_p99 = o["latency_ms"]["p99"], ceil_open["latency_ms"]["p99"]
            entry.update(
                {
                    "open_loop_rate_req_per_s": o["target_req_per_s"],
                    "open_loop_achieved_req_per_s": o["achieved_req_per_s"],
                    "open_loop_p99_ms": p99,
                    "ceiling_open_loop_achieved_req_per_s": ceil_open["achieved_req_per_s"],
                    "ceiling_open_loop_p99_ms": ceil_p99,
                    "open_loop_p99_vs_ceiling": round(p99 / ceil_p99, 2) if ceil_p99 else None,
                    "goal_p99_3x_ceiling_met": (kept_up(o) and p99 <= 3 * ceil_p99) if kept_up(ceil_open) else None,
                }
            )
        else:
            entry["goal_p99_3x_ceiling_met"] = None
        met = [
            entry[k]
            for k in (
                "goal_2x_mlserver_met",
                "goal_half_ceiling_met",
                "goal_cpu_2x_ceiling_met",
                "goal_p99_3x_ceiling_met",
            )
        ]
        entry["all_goals_met"] = all(met) if all(m is not None for m in met) else None
    return out


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = common_machine_info(
        VERSIONED, wrk=_tool_version(["wrk", "--version"]), hey=_dpkg_version("hey")
    )
    return info


def _tool_version(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0] if text else None


def _dpkg_version(package: str) -> str | None:
    try:
        done = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def mlserver_versions(venv: Path) -> dict[str, str]:
    code = (
        "import json, importlib.metadata as m; print(json.dumps({d: m.version(d) for d in "
        "('mlserver', 'mlserver-xgboost', 'xgboost', 'fastapi', 'starlette', 'uvicorn', 'numpy', 'pandas')}))"
    )
    done = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True)
    result: dict[str, str] = json.loads(done.stdout)
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "serving.json")
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated subset of {','.join(TARGETS)}")
    parser.add_argument(
        "--duration", type=float, default=20.0, help="closed-loop seconds per target, split over --rounds wrk runs"
    )
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds the measured seconds are cut into")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per target (wrk, not recorded)")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections (wrk -c)")
    parser.add_argument("--rate", type=float, default=500.0, help="open-loop total req/s")
    parser.add_argument(
        "--open-loop-duration",
        type=float,
        default=20.0,
        help="open-loop seconds per target, split over --rounds; 0 skips it",
    )
    parser.add_argument(
        "--open-loop",
        choices=("features", "all"),
        default="all",
        help="which targets get the open-loop run: all, or the feature targets and the ceiling (the p99 goal's "
        "reference)",
    )
    parser.add_argument("--hey-streams", type=int, default=10, help="hey processes (one request body each)")
    parser.add_argument("--hey-workers", type=int, default=1, help="hey workers per process (hey -c)")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="prepare state here, or reuse it if prepared before (default: a fresh directory "
        "under .riskloop/bench/, removed at the end)",
    )
    parser.add_argument("--keep-state", action="store_true", help="keep the state directory afterwards")
    parser.add_argument("--mlserver-venv", type=Path, default=BENCH_DIR / "mlserver-venv")
    parser.add_argument(
        "--mlserver-omp-threads",
        type=int,
        default=1,
        help="OMP_NUM_THREADS for MLServer (riskloop and the ceiling score on one thread); "
        "0 leaves XGBoost's default, every core",
    )
    parser.add_argument(
        "--profile",
        type=float,
        default=10.0,
        help="seconds of py-spy sampling of each riskloop server under an extra wrk load; 0 skips",
    )
    parser.add_argument(
        "--feast-calls",
        type=int,
        default=200,
        help="calls per timing in feast_calls.py (Feast SDK vs the online store's own calls); 0 skips",
    )
    parser.add_argument("--tools-venv", type=Path, default=BENCH_DIR / "tools-venv", help="where py-spy is installed")
    args = parser.parse_args(argv)
    wanted = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = sorted(set(wanted) - set(TARGETS))
    if unknown:
        parser.error(f"unknown targets {unknown}; choose from {', '.join(TARGETS)}")

    # SIGTERM as SystemExit: the finally blocks stop the servers and the redis-server (atexit is the backstop)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    t_start = time.perf_counter()
    started = datetime.now(UTC)
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    state_dir = args.state_dir or BENCH_DIR / f"serving-state-{started:%Y%m%dT%H%M%S}"
    state_dir.mkdir(parents=True, exist_ok=True)
    work = state_dir / "bench"
    work.mkdir(exist_ok=True)
    redis: RedisServer | None = None
    try:
        print(f"preparing state in {state_dir}", flush=True)
        prep = prepare_state(state_dir)
        print(
            f"prepared in {prep.seconds:.1f} s: model v{prep.model_version}, {len(prep.transactions)} held-out "
            f"transactions, {len(prep.feature_rows)} feature rows",
            flush=True,
        )
        mlserver = None
        ml_versions: dict[str, str] = {}
        venv_seconds = math.nan
        if "mlserver" in wanted:
            t0 = time.perf_counter()
            mlserver = ensure_mlserver_venv(args.mlserver_venv, HERE / "mlserver-requirements.txt")
            venv_seconds = time.perf_counter() - t0
            ml_versions = mlserver_versions(args.mlserver_venv)
        if "riskloop-redis-features" in wanted:
            redis = RedisServer(work)
            print(f"redis-server on {redis.connection} (pid {redis.process.pid})", flush=True)
        print("resetting the online stores to the prepared state", flush=True)
        store_reset = reset_online_stores(state_dir, redis)
        specs = [
            t
            for t in build_targets(
                prep, mlserver, work, args.hey_streams, omp_threads=args.mlserver_omp_threads, redis=redis
            )
            if t.name in wanted
        ]
        results = measure_all(specs, work, args)
        feast_calls: dict[str, Any] | None = None
        feast_calls_redis: dict[str, Any] | None = None
        if args.feast_calls > 0:
            print(f"timing Feast's calls against the online store's own ({args.feast_calls} calls each)", flush=True)
            feast_calls = run_feast_calls(state_dir, args.feast_calls, SQLITE_ENV)
            if redis is not None:
                print("the same on Redis", flush=True)
                feast_calls_redis = run_feast_calls(state_dir, args.feast_calls, redis.env)
        report = {
            "benchmark": "serving",
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "date": started.isoformat(timespec="seconds"),
            "wall_seconds": round(time.perf_counter() - t_start, 1),
            "machine": {**machine_info(), "redis_server": redis.version if redis is not None else None},
            "mlserver_venv": {
                "path": str(args.mlserver_venv),
                "versions": ml_versions,
                "ensure_seconds": round(venv_seconds, 1),
            },
            "params": {
                "rounds": args.rounds,
                "mlserver_omp_threads": args.mlserver_omp_threads,
                "closed_loop": {
                    "tool": "wrk",
                    "threads": 1,
                    "connections": args.connections,
                    "seconds": args.duration,
                    "seconds_per_round": max(1, math.ceil(args.duration / args.rounds - 1e-9)),
                    "warmup_seconds": args.warmup,
                },
                "open_loop": {
                    "tool": "hey",
                    "rate_req_per_s": args.rate,
                    "seconds": args.open_loop_duration,
                    "streams": args.hey_streams,
                    "workers_per_stream": args.hey_workers,
                    "targets": args.open_loop,
                },
                "workers_per_server": 1,
                "rss_interval_seconds": RSS_INTERVAL_S,
                "generator": GENERATOR,
                "held_out_day": HELD_OUT,
                "redis_server_argv": redis.argv if redis is not None else None,
            },
            "online_store_reset": store_reset,
            "model": {
                "name": prep.model_name,
                "version": prep.model_version,
                "sha256": prep.model_sha256,
                "n_features": prep.n_features,
            },
            "prepare_seconds": round(prep.seconds, 1),
            "targets": results,
            "goals": goals(results),
            "feast_calls": feast_calls,
            "feast_calls_redis": feast_calls_redis,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(summary_table(results))
        print(json.dumps(report["goals"], indent=2))
        print(f"wrote {args.out} ({report['wall_seconds']} s)")
    finally:
        if redis is not None:
            redis.stop()
        if not args.keep_state and args.state_dir is None:
            shutil.rmtree(state_dir, ignore_errors=True)


def run_feast_calls(state_dir: Path, calls: int, env: dict[str, str]) -> dict[str, Any]:
    """``feast_calls.py`` on the online store ``env`` selects; its JSON."""
    done = subprocess.run(
        [sys.executable, str(HERE / "feast_calls.py"), "--state-dir", str(state_dir), "--calls", str(calls)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env},
    )
    if done.returncode != 0:
        raise SystemExit(f"feast_calls.py failed ({done.returncode}) with {env}:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def summary_table(results: dict[str, dict[str, Any]]) -> str:
    """One line per target; CPU per request includes a target's redis-server (also shown on its own)."""
    lines = [
        f"{'target':<25}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'open r/s':>10}{'open p50':>10}{'open p99':>10}"
        f"{'RSS MiB':>9}{'cpu ms/req':>11}{'redis ms':>10}"
    ]
    for name, r in results.items():
        c, o = r.get("closed_loop", {}), r.get("open_loop", {})
        lines.append(
            f"{name:<25}{c.get('req_per_s', math.nan):>9}{c.get('latency_ms', {}).get('p50', math.nan):>9}"
            f"{c.get('latency_ms', {}).get('p99', math.nan):>9}"
            f"{o.get('achieved_req_per_s', math.nan):>10}"
            f"{o.get('latency_ms', {}).get('p50', math.nan):>10}"
            f"{o.get('latency_ms', {}).get('p99', math.nan):>10}{r.get('peak_rss_mib', math.nan):>9}"
            f"{c.get('server_cpu_ms_per_request', math.nan):>11}{c.get('redis_cpu_ms_per_request', '-'):>10}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
