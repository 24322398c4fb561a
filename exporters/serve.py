"""Serve the Pulso exporter over HTTP: ``python -m exporters.serve [--host 127.0.0.1] [--port 9108]``.

The port defaults to ``$PULSO_EXPORTER_PORT`` (9108), the published store to ``$PULSO_PUBLISHED``.

Served by prometheus_client's threaded WSGI server. The text exposition of the data families (thousands
of series at m6 scale; prometheus_client formats ~20-40 us per sample) is rendered once per published
version and reused; each scrape renders the freshness families (``pulso_up``, age, ...) anew and checks
the manifest (one ``stat``). ``make_registry`` gives the same metrics through a plain
``CollectorRegistry`` for anything that wants one.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
from pathlib import Path
from wsgiref.simple_server import WSGIServer, make_server

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler

from exporters.collector import PublishedCollector, data_families, freshness_families

DEFAULT_PORT = 9108


def make_registry(root: Path | str | None = None, stale_after_seconds: float | None = None) -> CollectorRegistry:
    """An own registry with the Pulso collector (registering calls ``describe()``, which reads no data)."""
    registry = CollectorRegistry(auto_describe=True)
    kwargs = {} if stale_after_seconds is None else {"stale_after_seconds": stale_after_seconds}
    registry.register(PublishedCollector(root, **kwargs))
    return registry


class _Families:
    """The minimal registry interface ``generate_latest`` needs, over a fixed list of families."""

    def __init__(self, families: list) -> None:
        self.families = families

    def collect(self):
        return iter(self.families)


class ExporterApp:
    """WSGI app: ``/metrics`` in the Prometheus text format, data part cached per published version."""

    def __init__(self, collector: PublishedCollector) -> None:
        self.collector = collector
        self._lock = threading.Lock()
        self._key: object = object()
        self._data_text = b""

    def render(self) -> bytes:
        """The body of one scrape."""
        state, error = self.collector.refresh()
        # The key comes from the state itself: another thread may refresh the collector meanwhile.
        key = None if state is None else (state.version, state.publish_id)
        with self._lock:
            if key != self._key:
                self._data_text = generate_latest(_Families(data_families(self.collector.catalog, state)))
                self._key = key
            data_text = self._data_text
        fresh = freshness_families(state, self.collector.clock(), self.collector.stale_after, error)
        return generate_latest(_Families(fresh)) + data_text

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO", "/") not in ("/", "/metrics"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"Pulso exporter: metrics are at /metrics\n"]
        body = self.render()
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body)))])
        return [body]


def start(
    port: int = 0, host: str = "127.0.0.1", root: Path | str | None = None, stale_after_seconds: float | None = None
) -> tuple[WSGIServer, threading.Thread]:
    """Start serving in a background thread; ``port=0`` picks a free one (``server.server_port``)."""
    kwargs = {} if stale_after_seconds is None else {"stale_after_seconds": stale_after_seconds}
    app = ExporterApp(PublishedCollector(root, **kwargs))
    server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_SilentHandler)
    thread = threading.Thread(target=server.serve_forever, name="pulso-exporter", daemon=True)
    thread.start()
    return server, thread


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
