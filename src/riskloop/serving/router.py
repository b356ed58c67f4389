"""Champion and challenger behind one served name, as the deployment record says.

On the cluster Knative splits traffic between an InferenceService's revisions;
on one machine :class:`Router` does it, a small stand-in under the same
name (``/v1/models/<name>:predict``, ``/v2/models/<name>/infer``):

* **canary**: each request goes to the challenger with ``canary_percent``
  probability (per request, as Knative splits revisions), or, ``sticky``, when
  a hash of its first instance's entity (the spec's first entity column, e.g.
  ``card_id``; its id column when it has none) falls below it (an entity then stays
  on one model, at the price of a biased comparison: fraud clusters by card). The model that answered is
  in the response (``model_version``), in the metrics and the prediction log
  (``role`` label);
* **shadow**: the champion answers; the same request is scored by the
  challenger on a background thread, logged with ``role=shadow``, without a
  second write of the card's state. A shadow that fails or is slow changes
  neither the response nor its latency; when the shadow queue is full the
  shadow copy is dropped and counted.

A thread in each serving process polls the record (``registry/deployment.py``). On a
new revision it loads any new version (hash-checked, from the registry) while
requests keep using the current routes, then swaps the routes in one
assignment: a request in flight finishes on the routes it started with.

A request that names a version (V2 ``/v2/models/<name>/versions/<v>/infer``) goes to
that version if it is served (champion or challenger), bypassing the split.
:class:`Pinned` serves one version with the same interface (``riskloop serve
--model-alias``, a predictor pod).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from riskloop.data.spec import DatasetSpec
from riskloop.registry.deployment import Deployment, Drill, read_deployment
from riskloop.serving.loader import ServedModel
from riskloop.serving.predictor import ModelNotReady, NotFound, Runtime, Scored, ScoringModel, scoring_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Routes:
    """One revision of the deployment record with its loaded models."""

    deployment: Deployment
    champion: ScoringModel
    challenger: ScoringModel | None  # role challenger (canary) or shadow

    def pick(self, route_key: str | None) -> ScoringModel:
        """The model for a request whose first instance's entity is ``route_key`` (None: unreadable)."""
        d = self.deployment
        if self.challenger is None or d.mode != "canary" or d.canary_percent == 0:
            return self.champion
        if d.sticky and route_key is not None:
            return self.challenger if zlib.crc32(route_key.encode()) % 100 < d.canary_percent else self.champion
        return self.challenger if random.random() * 100 < d.canary_percent else self.champion

    def by_version(self, version: str) -> ScoringModel:
        """The served model of ``version``, for a request that names it."""
        for model in (self.champion, self.challenger):
            if model is not None and model.model_version == version:
                return model
        raise NotFound(
            f"model {self.champion.name} has no version {version!r} served here; served: {', '.join(self.versions())}"
        )

    def versions(self) -> list[str]:
        return [m.model_version for m in (self.champion, self.challenger) if m is not None]


def route_key(spec: DatasetSpec, first: Any) -> str | None:
    """The entity a sticky split hashes: the first instance's first entity column (else its id), if text."""
    column = spec.entity_columns[0] if spec.entity_columns else spec.id_column
    value = first.get(column) if isinstance(first, dict) else None
    return value if isinstance(value, str) else None


async def dispatch(
    routes: Routes,
    instances: list[Any],
    *,
    request_id: str,
    explain: bool,
    reasons: int,
    version: str | None,
    started: float,
    where: str,
    shadow: Callable[[ScoringModel, list[Any], str], None] | None = None,
) -> tuple[ScoringModel, list[Scored]]:
    """Score a request on ``routes``: the named version, or the split's pick; the shadow gets a copy."""
    if version is not None:
        target = routes.by_version(version)
    else:
        target = routes.pick(route_key(routes.champion.spec, instances[0] if instances else None))
    drill = target.drill
    if drill is not None and drill.added_latency_ms:
        await asyncio.sleep(drill.added_latency_ms / 1000)
    scored = target.predict(
        instances, request_id=request_id, explain=explain, reasons=reasons, started=started, where=where
    )
    challenger = routes.challenger
    if version is None and shadow is not None and challenger is not None and routes.deployment.mode == "shadow":
        shadow(challenger, instances, request_id)
    return target, scored


class Router:
    """Serves the model named ``name`` per the deployment record at ``record``."""

    def __init__(
        self,
        name: str,
        *,
        record: Path,
        load_version: Callable[[str], ServedModel],
        spec: DatasetSpec,
        runtime: Callable[[], Runtime],
        max_instances: int = 256,
        poll_seconds: float = 0.25,
        shadow_queue: int = 512,
    ) -> None:
        self.name, self.ready = name, False
        self.record, self.load_version, self.spec = record, load_version, spec
        self.runtime_factory, self.max_instances = runtime, max_instances
        self.poll_seconds, self.shadow_queue = poll_seconds, shadow_queue
        self._served: dict[str, ServedModel] = {}
        self._models: dict[tuple[str, str, Drill | None], ScoringModel] = {}
        self._routes: Routes | None = None
        self._process: _ProcessState | None = None

    def __getstate__(self) -> dict[str, Any]:
        # KServe pickles models into its worker processes: each starts its own runtime and watcher
        state = self.__dict__.copy()
        state["_process"] = None
        return state

    @property
    def routes(self) -> Routes:
        if self._routes is None:
            raise ModelNotReady(f"model {self.name} is not ready: its deployment record was not loaded")
        return self._routes

    # ------------------------------------------------------------------ lifecycle
    def load(self) -> bool:
        """Ready once the record's models are loaded and, for a Feast-backed spec, the feature store answers a
        warm-up lookup."""
        deployment = read_deployment(self.record)
        if deployment is None:
            log.error("no deployment record at %s", self.record)
            self.ready = False
            return False
        self._ensure_process()
        routes = self._build(deployment)
        if not routes.champion.load():  # a fraud model's warm-up lookup through the process's feature store
            self.ready = False
            return False
        self._routes = routes
        self.ready = True
        return True

    def start(self) -> None:
        """This process's runtime and record watcher (each worker process calls it at startup)."""
        self._ensure_process()

    def champion(self) -> ScoringModel:
        return self.routes.champion

    def stop(self) -> None:
        proc = self._process
        if proc is not None and proc.pid == os.getpid():
            proc.stopping.set()
            proc.shadow_pool.shutdown(wait=True, cancel_futures=False)
            proc.runtime.close()

    def _ensure_process(self) -> _ProcessState:
        proc = self._process
        if proc is None or proc.pid != os.getpid():
            proc = self._process = _ProcessState(self.runtime_factory(), self.shadow_queue)
            routes = self._routes
            for model in (routes.champion, routes.challenger) if routes else ():
                if model is not None:
                    model.attach(proc.runtime)
            proc.watcher = threading.Thread(target=self._watch, args=(proc,), name="deployment-watch", daemon=True)
            proc.watcher.start()
        return proc

    def _model(self, version: str, role: str, drill: Drill | None) -> ScoringModel:
        key = (version, role, drill)
        model = self._models.get(key)
        if model is None:
            served = self._served.get(version)
            if served is None:
                served = self._served[version] = self.load_version(version)
            model = scoring_model(self.spec)(
                self.name,
                bundle=served.bundle,
                model_version=served.version,
                spec=self.spec,
                runtime=self.runtime_factory,
                role=role,
                max_instances=self.max_instances,
                drill=drill,
            )
            # XGBoost's first prediction builds its caches: pay it here, not in the first requests' latency
            served.bundle.predict(np.zeros((1, len(served.bundle.features.names)), dtype=np.float32))
            self._models[key] = model
        if self._process is not None:
            model.attach(self._process.runtime)  # also marks a model that comes back as served again
            model.ready = True
        return model

    def _build(self, d: Deployment) -> Routes:
        champion = self._model(d.champion_version, "champion", None)
        challenger = None
        if d.challenger_version is not None:
            challenger = self._model(d.challenger_version, "shadow" if d.mode == "shadow" else "challenger", d.drill)
        return Routes(d, champion, challenger)

    def _watch(self, proc: _ProcessState) -> None:
        last: tuple[int, int] | None = None
        while not proc.stopping.wait(self.poll_seconds):
            try:
                st = os.stat(self.record)
                stamp = (st.st_mtime_ns, st.st_size)
                if stamp == last:
                    continue
                last = stamp
                deployment = read_deployment(self.record)
                if deployment is None or deployment.revision == self.routes.deployment.revision:
                    continue
                self.switch(deployment)
            except Exception:  # keep serving the current routes; say why the new ones were not taken
                log.exception(
                    "deployment record %s not applied; still serving revision %s",
                    self.record,
                    self._routes.deployment.revision if self._routes else None,
                )

    def switch(self, deployment: Deployment) -> None:
        """Load what ``deployment`` needs, then route new requests by it (one assignment)."""
        routes = self._build(deployment)
        old, self._routes = self._routes, routes
        log.info(
            "deployment revision %d: champion v%s, challenger %s (%s %d%%)",
            deployment.revision,
            deployment.champion_version,
            deployment.challenger_version,
            deployment.mode,
            deployment.canary_percent,
        )
        live = {id(routes.champion), id(routes.challenger)}
        if old is not None:
            for m in (old.champion, old.challenger):
                if m is not None and id(m) not in live:
                    m.retire()

    # ------------------------------------------------------------------ predict
    def versions(self) -> list[str]:
        return self.routes.versions()

    async def predict(
        self,
        instances: list[Any],
        *,
        request_id: str,
        explain: bool = False,
        reasons: int = 0,
        version: str | None = None,
        started: float | None = None,
        where: str = "instances",
    ) -> tuple[ScoringModel, list[Scored]]:
        """Score a request on the current routes; the model that answered and its scores."""
        t0 = time.perf_counter() if started is None else started
        proc = self._ensure_process()
        # one request id for the answer and its shadow copy, so the log pairs them
        return await dispatch(
            self.routes,
            instances,
            request_id=request_id,
            explain=explain,
            reasons=reasons,
            version=version,
            started=t0,
            where=where,
            shadow=lambda model, copy, rid: self._submit_shadow(proc, model, copy, rid),
        )

    def _submit_shadow(self, proc: _ProcessState, shadow: ScoringModel, instances: list[Any], request_id: str) -> None:
        if not proc.shadow_slots.acquire(blocking=False):
            if proc.runtime.metrics is not None:
                proc.runtime.metrics.count_shadow_dropped(shadow.model_labels)
            return

        def run() -> None:
            try:
                started = time.perf_counter()
                if shadow.drill is not None and shadow.drill.added_latency_ms:
                    time.sleep(shadow.drill.added_latency_ms / 1000)
                shadow.predict(instances, request_id=request_id, started=started)
            except Exception as exc:  # counted by the predictor; never reaches the client
                log.debug("shadow scoring failed: %s", exc)
            finally:
                proc.shadow_slots.release()

        proc.shadow_pool.submit(run)


class Pinned:
    """One model version served under its name, with the router's interface (no record, no split)."""

    def __init__(self, model: ScoringModel) -> None:
        self.model, self.name = model, model.name
        self._routes = Routes(Deployment(model_name=model.name, champion_version=model.model_version), model, None)

    @property
    def ready(self) -> bool:
        return self.model.ready

    @property
    def model_version(self) -> str:
        return self.model.model_version

    def load(self) -> bool:
        return self.model.load()

    def start(self) -> None:
        self.model.rt  # noqa: B018  # this process's runtime (store connection, log writer) before the first request

    def champion(self) -> ScoringModel:
        return self.model

    def stop(self) -> None:
        self.model.stop()

    def versions(self) -> list[str]:
        return self._routes.versions()

    async def predict(
        self,
        instances: list[Any],
        *,
        request_id: str,
        explain: bool = False,
        reasons: int = 0,
        version: str | None = None,
        started: float | None = None,
        where: str = "instances",
    ) -> tuple[ScoringModel, list[Scored]]:
        return await dispatch(
            self._routes,
            instances,
            request_id=request_id,
            explain=explain,
            reasons=reasons,
            version=version,
            started=time.perf_counter() if started is None else started,
            where=where,
        )


class _ProcessState:
    """What each serving process owns: the runtime, the record watcher, the shadow thread."""

    def __init__(self, runtime: Runtime, shadow_queue: int) -> None:
        self.pid = os.getpid()
        self.runtime = runtime
        self.stopping = threading.Event()
        self.watcher: threading.Thread | None = None
        self.shadow_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shadow")
        self.shadow_slots = threading.BoundedSemaphore(shadow_queue)


__all__ = ["Pinned", "Router", "Routes", "dispatch", "route_key"]
