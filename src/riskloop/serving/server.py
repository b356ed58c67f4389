"""Run the predictor app on uvicorn: httptools, uvloop, no access log, one or more worker processes.

* the host is passed through (default ``127.0.0.1`` locally; ``0.0.0.0`` only in a pod);
* no access-log line per request (it cost ~7 % of a request's CPU; requests are counted in ``/metrics``
  and each scored instance is in the prediction log), no ``server``/``date`` headers;
* ``workers`` > 1: uvicorn's supervisor starts that many processes on one shared socket, each with a
  copy of the app (pickled: models, routes; each builds its own store connections, log writer and
  record watcher at startup); prometheus-client aggregates ``/metrics`` through the files in
  ``PROMETHEUS_MULTIPROC_DIR``, which the caller sets before any metric exists.
"""

from __future__ import annotations

import signal

import uvicorn
from uvicorn.supervisors import Multiprocess

from riskloop.serving.app import App


class PredictorServer:
    """The app, where it listens and with how many workers; :meth:`start` serves until SIGTERM/SIGINT."""

    def __init__(self, app: App, *, host: str = "127.0.0.1", http_port: int = 8080, workers: int = 1) -> None:
        self.app, self.host, self.http_port, self.workers = app, host, http_port, workers

    def config(self) -> uvicorn.Config:
        return uvicorn.Config(
            self.app,
            host=self.host,
            port=self.http_port,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            access_log=False,
            server_header=False,
            date_header=False,
            log_level="info",
            workers=self.workers,
            timeout_graceful_shutdown=30,
        )

    def start(self) -> None:
        """Serve until SIGTERM or SIGINT, then finish the requests in flight, flush and return (exit 0).

        uvicorn stops gracefully on those signals and then raises the signal again with the handler that
        was in place before it started; with the defaults that kills the process (SIGTERM: exit -15,
        SIGINT: a KeyboardInterrupt traceback) after a clean shutdown. A stop asked for is a normal exit
        here, as it was with KServe's server: both signals are ignored once uvicorn hands them back.
        """
        config = self.config()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        if self.workers > 1:
            sock = config.bind_socket()
            Multiprocess(config, sockets=[sock]).run()
        else:
            uvicorn.Server(config).run()


__all__ = ["PredictorServer"]
