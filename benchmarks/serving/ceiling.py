"""The serving ceiling: a bare ASGI endpoint that only parses a row, scores it and answers.

No framework, no validation, no feature lookup, no metrics, no log: orjson in,
``booster.inplace_predict`` (one thread, as riskloop scores), orjson out, on
uvicorn with one worker. Whatever riskloop serves on top of that is overhead
this endpoint does not pay, so its throughput is the upper bound for one
worker on this machine.

    POST /predict   {"instances": [[f1, f2, ...], ...]}  ->  {"predictions": [score, ...]}
    GET  /health    200 once the model is loaded

Feature rows are in the model's order with categories as their integer codes
(``model.json``); ``null`` is a missing value.

Usage::

    .venv/bin/python benchmarks/serving/ceiling.py --model path/to/model.ubj --port 8093
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import uvicorn
import xgboost as xgb

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON = [(b"content-type", b"application/json")]


def load_booster(model_path: Path) -> xgb.Booster:
    """The model, set to one thread (single rows are fastest that way, and riskloop does the same)."""
    booster = xgb.Booster(model_file=str(model_path))
    booster.set_param({"nthread": 1})
    return booster


def make_app(booster: xgb.Booster) -> App:
    """The ASGI app scoring with ``booster``."""

    async def respond(send: Send, status: int, body: bytes) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*JSON, (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["method"] == "GET" and scope["path"] == "/health":
            await respond(send, 200, b'{"ready": true}')
            return
        if scope["method"] != "POST" or scope["path"] != "/predict":
            await respond(send, 404, b'{"error": "POST /predict or GET /health"}')
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        try:
            x = np.asarray(orjson.loads(body)["instances"], dtype=np.float32)
            if x.ndim != 2:
                raise ValueError("instances must be a list of rows")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            await respond(send, 400, orjson.dumps({"error": str(exc)}))
            return
        scores = booster.inplace_predict(x, validate_features=False)
        await respond(send, 200, orjson.dumps({"predictions": np.asarray(scores, dtype=np.float64).tolist()}))

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="model.ubj to serve")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8093)
    args = parser.parse_args()
    uvicorn.run(
        make_app(load_booster(args.model)),
        host=args.host,
        port=args.port,
        workers=1,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
