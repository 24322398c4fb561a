"""Serve the Pulso exporter over HTTP: ``python -m exporters.serve [--host 127.0.0.1] [--port 9108]``.

The port defaults to ``$PULSO_EXPORTER_PORT`` (9108), the published store to ``$PULSO_PUBLISHED``.
Uses prometheus_client's threaded WSGI server with an own registry holding only the Pulso collector.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_wsgi_server

from exporters.collector import PublishedCollector

DEFAULT_PORT = 9108


def make_registry(root: Path | str | None = None, stale_after_seconds: float | None = None) -> CollectorRegistry:
    """An own registry with the Pulso collector (registering calls ``describe()``, which reads no data)."""
    registry = CollectorRegistry(auto_describe=True)
    kwargs = {} if stale_after_seconds is None else {"stale_after_seconds": stale_after_seconds}
    registry.register(PublishedCollector(root, **kwargs))
    return registry


def start(port: int = 0, host: str = "127.0.0.1", root: Path | str | None = None,
          stale_after_seconds: float | None = None) -> tuple[WSGIServer, threading.Thread]:
    """Start serving in a background thread; ``port=0`` picks a free one (``server.server_port``)."""
    return start_wsgi_server(port, addr=host, registry=make_registry(root, stale_after_seconds))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve Pulso's published KPIs and SLOs as Prometheus metrics")
    parser.add_argument("--host", default=os.environ.get("PULSO_EXPORTER_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PULSO_EXPORTER_PORT", DEFAULT_PORT)))
    parser.add_argument("--published", type=Path, default=None, help="published store (default $PULSO_PUBLISHED)")
    parser.add_argument("--stale-after", type=float, default=None, help="seconds after which data counts as stale")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    server, thread = start(args.port, args.host, args.published, args.stale_after)
    logging.getLogger("pulso.exporter").info("serving http://%s:%d/metrics", args.host, server.server_port)
    try:
        thread.join()
    except KeyboardInterrupt:
        server.shutdown()


if __name__ == "__main__":
    main()
