"""``kserve.ModelServer`` as riskloop runs it: same protocols, fewer surprises.

KServe 0.21's server binds ``0.0.0.0`` unconditionally, starts gRPC by default,
logs timings for every request and has no request-size limit. Here:

* the host is passed through (default ``127.0.0.1`` locally; ``0.0.0.0`` only in a pod);
* gRPC stays off unless asked for;
* the per-request timing middleware and uvicorn's access log are left out (a log
  line per request costs ~7 % of a request's CPU; requests are counted in
  ``/metrics`` and each scored instance is in the prediction log);
* the event loop is uvloop (KServe's ``asyncio.run`` never lets uvicorn install it);
* bodies over ``max_body_bytes`` get ``413`` before they are read into memory;
* ``/metrics`` serves riskloop's metrics, aggregated across worker processes.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from kserve import ModelServer
from kserve.protocol.rest.multiprocess.server import RESTServerMultiProcess
from kserve.protocol.rest.server import RESTServer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from riskloop.serving.kserve.predictor import FeatureStoreUnavailable
from riskloop.serving.metrics import render_metrics

DEFAULT_MAX_BODY_BYTES = 1 << 20


class BodyLimit:
    """ASGI middleware: reject request bodies larger than ``limit`` bytes with 413."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _too_large(send, self.limit)
            return
        seen = 0
        too_large = False

        async def counted() -> Message:
            nonlocal seen, too_large
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    too_large = True
                    return {"type": "http.disconnect"}
            return message

        if declared is None:  # chunked upload: count as it streams
            started = False

            async def guarded_send(message: Message) -> None:
                nonlocal started
                if too_large and not started:
                    started = True
                    await _too_large(send, self.limit)
                    return
                if not too_large:
                    started = started or message["type"] == "http.response.start"
                    await send(message)

            await self.app(scope, counted, guarded_send)
            if too_large and not started:
                await _too_large(send, self.limit)
            return
        await self.app(scope, receive, send)


async def _too_large(send: Send, limit: int) -> None:
    body = f'{{"error": "request body over the {limit} byte limit; send fewer instances per request"}}'.encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RiskloopRESTServer(RESTServer):  # type: ignore[misc]
    """KServe's REST server with the host passed through and riskloop's middleware."""

    max_body_bytes = DEFAULT_MAX_BODY_BYTES

    def __init__(self, *args: Any, host: str, max_body_bytes: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.host = host
        self.config.access_log = False
        self.max_body_bytes = max_body_bytes
        _quiet()

    def _add_middlewares(self, app: FastAPI) -> None:
        app.add_middleware(BodyLimit, limit=self.max_body_bytes)

    def _add_exception_handlers(self, app: FastAPI) -> None:
        super()._add_exception_handlers(app)
        app.add_exception_handler(FeatureStoreUnavailable, _unavailable)

    def _register_endpoints(self, app: FastAPI) -> None:
        # registered before KServe's own /metrics, so this one answers
        app.add_api_route("/metrics", _metrics, methods=["GET"])
        # each worker flushes its own prediction log on shutdown (workers skip atexit)
        inner = app.router.lifespan_context

        @contextlib.asynccontextmanager
        async def lifespan(a: Any) -> AsyncIterator[None]:
            _quiet()  # again in each worker process
            async with inner(a):
                yield
            self._stop_models()

        app.router.lifespan_context = lifespan
        super()._register_endpoints(app)

    def _stop_models(self) -> None:
        for model in list(self.dataplane.model_registry.get_models().values()):
            stop = getattr(model, "stop", None)
            if callable(stop):
                stop()


def _quiet() -> None:
    """No access-log line per request; KServe's own ORJSONResponse deprecation said once, not per response."""
    access = logging.getLogger("uvicorn.access")
    access.handlers, access.propagate = [], False  # uvicorn's protocol then skips the line (hasHandlers)
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated", category=DeprecationWarning)


async def _unavailable(_request: Any, exc: Exception) -> Response:
    return JSONResponse(status_code=503, content={"error": str(exc)}, headers={"retry-after": "1"})


def _metrics() -> Response:
    body, content_type = render_metrics()
    return Response(content=body, media_type=content_type)


class RiskloopModelServer(ModelServer):  # type: ignore[misc]
    """``kserve.ModelServer`` with a host, gRPC off by default and a body limit."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        http_port: int = 8080,
        workers: int = 1,
        enable_grpc: bool = False,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            http_port=http_port,
            workers=workers,
            enable_grpc=enable_grpc,
            enable_latency_logging=False,
            enable_docs_url=False,
            **kwargs,
        )
        self.host, self.max_body_bytes = host, max_body_bytes

    def start(self, models: list[Any]) -> None:
        import uvloop

        self._register_and_check_atleast_one_model_is_ready(models)
        common = {
            "access_log_format": self.access_log_format,
            "workers": self.workers,
            "grace_period": self.grace_period,
            "event_loop": self.event_loop,
            "timeout_keep_alive": self.timeout_keep_alive,
        }
        from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING

        if self.workers > 1:
            multi = RESTServerMultiProcess(
                FASTAPI_APP_IMPORT_STRING, self.dataplane, self.model_repository_extension, self.http_port, **common
            )
            multi._rest_server = RiskloopRESTServer(
                FASTAPI_APP_IMPORT_STRING,
                self.dataplane,
                self.model_repository_extension,
                self.http_port,
                host=self.host,
                max_body_bytes=self.max_body_bytes,
                **common,
            )
            self._rest_multiprocess_server = multi
            self.servers.append(multi.start())
        else:
            self._rest_server = RiskloopRESTServer(
                FASTAPI_APP_IMPORT_STRING,
                self.dataplane,
                self.model_repository_extension,
                self.http_port,
                host=self.host,
                max_body_bytes=self.max_body_bytes,
                **common,
            )
            self.servers.append(self._rest_server.start())
        if self.enable_grpc:
            from kserve.model_server import args
            from kserve.protocol.grpc.server import GRPCServer

            self._grpc_server = GRPCServer(
                self.grpc_port,
                self.dataplane,
                self.model_repository_extension,
                kwargs=vars(args),
                grace_period=self.grace_period,
            )
            self.servers.append(self._grpc_server.start(self.max_threads))
        self.register_signal_handler()

        async def serve() -> None:
            self.setup_event_loop()  # KServe's exception handler, on the loop that runs
            await self._serve()

        uvloop.run(serve())
