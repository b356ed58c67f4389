"""The model server's entry point: ``python -m riskloop.serving --model-dir /mnt/models --host 0.0.0.0``.

This is what a predictor pod runs (the InferenceService's container command): the registered version
its storage initializer put in ``--model-dir``, checked against the hashes the pod is given. ``riskloop
serve`` builds its server with the same :func:`build_server`; it adds what needs the layers above serving
(the deployment record's champion, the approval check of a pinned version, a challenger to deploy).
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from riskloop.data.spec import DatasetSpec, SpecSource, load_spec
from riskloop.errors import RiskloopError
from riskloop.settings import Settings, disable_telemetry


def model_dir_spec(s: Settings, model_dir: Path, given: str | None) -> DatasetSpec:
    """The spec the model in ``model_dir`` was trained under: its ``dataset_spec.yaml``, checked against the
    sha256 the version records (``expected_spec_sha256``); a --spec given must be that spec."""
    from riskloop.registry.mlflow_registry import SPEC_FILE

    path = model_dir / SPEC_FILE
    expected = s.expected_spec_sha256
    if not path.is_file():
        if expected:  # the version records a spec, so its directory must carry it: fail closed
            raise RiskloopError(
                f"{SPEC_FILE} is missing in {model_dir}, but the version records spec sha256 {expected[:12]}…",
                where=str(path),
                fix="the model directory is incomplete: re-download the registered version",
            )
        return load_spec(given or "synthetic-fraud")  # a directory trained before models carried their spec
    source = SpecSource(path.read_bytes().decode("utf-8"), str(path))
    if expected and expected != source.sha256:
        raise RiskloopError(
            f"{SPEC_FILE} in {model_dir} has sha256 {source.sha256[:12]}…, the version records {expected[:12]}…",
            where=str(path),
            fix="the model directory was altered: re-download the registered version",
        )
    if given is not None and load_spec(given) != source.parse():
        raise RiskloopError(
            f"--spec {given} is not the spec the model in {model_dir} was trained under",
            where=str(path),
            fix="leave out --spec: the model directory carries its spec",
        )
    return source.parse()


def build_server(
    s: Settings,
    name: str,
    ds: DatasetSpec,
    *,
    follow_record: bool,
    alias: str | None = None,
    version: str | None = None,
    model_dir: Path | None = None,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    max_instances: int = 256,
    role: str = "champion",
    features: str = "feast",
) -> tuple[Any, Any]:
    """The model server and its model, loaded and ready to start.

    ``follow_record``: a router over the deployment record (champion, challenger, canary share, switched
    live); otherwise the one version ``alias``/``version``/``model_dir`` names. ``ds`` is the spec the served
    model was trained under (the caller has read and checked it): a Feast-backed spec is served with its
    online features (``features``: feast, or none for overhead benchmarks), a raw-column spec from the
    request's own columns (no feature store).
    """
    from riskloop.serving.app import App
    from riskloop.serving.loader import resolve_model
    from riskloop.serving.predictor import scoring_model
    from riskloop.serving.router import Pinned
    from riskloop.serving.server import PredictorServer

    feast = ds.features.source == "feast"
    store: Any = None
    if feast:
        from riskloop.features.store import StoreConfig

        store = StoreConfig.from_settings(s)
    _check_reason_texts(ds)
    runtime = functools.partial(
        _serving_runtime,
        store,
        ds.features.service,
        str(s.predictions),
        features if feast else "none",
        s.serving.flush_seconds_for(s.predictions),
    )
    model: Any
    if follow_record:
        from riskloop.registry.deployment import deployment_path
        from riskloop.serving.router import Router

        model = Router(
            name,
            record=deployment_path(s.root, name),
            load_version=functools.partial(_load_version, s, name),
            spec=ds,
            runtime=runtime,
            max_instances=max_instances,
        )
    else:
        served = resolve_model(s, model_name=name, alias=alias, version=version, model_dir=model_dir)
        model = Pinned(
            scoring_model(ds)(
                name,
                bundle=served.bundle,
                model_version=served.version,
                spec=ds,
                runtime=runtime,
                role=role,
                max_instances=max_instances,
            )
        )
    if not model.load():
        raise RiskloopError(
            "the feature store is not reachable: the model is not ready",
            fix="run `riskloop features apply && riskloop features materialize`, or start Redis",
        )
    n_workers = workers or s.serving.workers
    if n_workers > 1:
        # workers are separate processes: prometheus-client aggregates through files in this dir
        from riskloop.serving.metrics import AGGREGATE_ENV, MULTIPROC_ENV

        multiproc = s.root / "serving" / "prometheus-multiproc"
        shutil.rmtree(multiproc, ignore_errors=True)
        multiproc.mkdir(parents=True)
        os.environ[MULTIPROC_ENV] = str(multiproc)
        os.environ[AGGREGATE_ENV] = "1"
    server = PredictorServer(
        App(model), host=host or s.serving.host, http_port=port or s.serving.http_port, workers=n_workers
    )
    return server, model


def _check_reason_texts(ds: DatasetSpec) -> None:
    """Say once, at start, which ``reasons:`` entries of the spec name no model feature (a typo never shows)."""
    from riskloop.model import feature_spec

    unknown = sorted(set(ds.reasons) - set(feature_spec(ds).names))
    if unknown:
        print(
            f"warning: the spec's reasons name no model feature: {', '.join(unknown)} "
            f"(features: {', '.join(feature_spec(ds).names)}); those texts are never used",
            file=sys.stderr,
        )


def run_server(server: Any, model: Any) -> None:
    """Say what is served where, then serve until stopped; the model's background work stops with it."""
    what = (
        f"version {model.model_version}"
        if not hasattr(model, "routes")
        else f"per {model.record} (revision {model.routes.deployment.revision})"
    )  # a Pinned model or a Router
    print(f"serving {model.name} {what} on http://{server.host}:{server.http_port}", file=sys.stderr, flush=True)
    try:
        server.start()
    finally:
        model.stop()


def _load_version(s: Settings, model_name: str, version: str) -> Any:
    from riskloop.serving.loader import resolve_model

    return resolve_model(s, model_name=model_name, version=version)


def _serving_runtime(
    cfg: Any, service: str | None, predictions: str, features: str = "feast", flush_seconds: float = 1.0
) -> Any:
    """What each serving process builds for itself (picklable: a partial over plain values); no feature store
    for a raw-column spec (``service`` None)."""
    from riskloop.features.store import OnlineFeatures, open_store
    from riskloop.serving.metrics import ServingMetrics
    from riskloop.serving.prediction_log import PredictionLog
    from riskloop.serving.predictor import NoFeatures, Runtime
    from riskloop.storage import location

    if features not in ("feast", "none"):
        raise RiskloopError(f"--features {features!r} is not one of feast, none")
    source = OnlineFeatures(open_store(cfg), service) if features == "feast" and service else NoFeatures()
    return Runtime(source, ServingMetrics(), PredictionLog(location(predictions), flush_seconds=flush_seconds))


def _int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer from ``low`` to ``high`` (the bounds ``riskloop serve`` has), else exit 2."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not in {low}..{high}")
        return value

    return parse


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the model directory a predictor pod is given; a RiskloopError is a message and exit code 2."""
    parser = argparse.ArgumentParser(
        prog="python -m riskloop.serving",
        description=(
            "Serve one registered model directory (KServe V1 and Open Inference Protocol V2 REST): online features "
            "from Feast for a Feast-backed spec, the request's own columns for a raw-column spec (read from the "
            "directory's dataset_spec.yaml). Locally, `riskloop serve` also follows the deployment record."
        ),
    )
    parser.add_argument("--model-dir", type=Path, required=True, help="The model directory, e.g. /mnt/models.")
    parser.add_argument("--host", help="Bind address; default 127.0.0.1 (settings).")
    parser.add_argument("--port", type=_int_in(1, 65535), help="HTTP port; default 8080 (settings).")
    parser.add_argument("--workers", type=_int_in(1, 32), help="Worker processes; default 1 (settings).")
    parser.add_argument("--max-instances", type=_int_in(1, 10_000), default=256, help="Instances per request.")
    parser.add_argument("--spec", help="Dataset spec; must be the one the model directory carries.")
    args = parser.parse_args(argv)
    disable_telemetry()
    try:
        s = Settings()
        s.ensure_dirs()
        ds = model_dir_spec(s, args.model_dir, args.spec)
        # in a pod the InferenceService names the model (its readiness probe is /v1/models/<name>)
        name = s.model_name or ds.registered_model(s.mlflow.model_name)
        server, model = build_server(
            s,
            name,
            ds,
            follow_record=False,
            model_dir=args.model_dir,
            host=args.host,
            port=args.port,
            workers=args.workers,
            max_instances=args.max_instances,
        )
    except RiskloopError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    run_server(server, model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
