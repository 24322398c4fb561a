"""Dagster resources choosing each source by configuration or environment; switching source is config only.

Resource keys: ``metrics_source``, ``billing_source``, ``events_source``, ``fx_source``. Each has one
``location`` setting: empty (the default) means "from the environment" (``PULSO_<SOURCE>_SOURCE``, else
``$PULSO_SOURCES/<source>``, see :mod:`pipelines.lib.sources.config`); a run config may set it explicitly.
A location is a local folder, ``s3://bucket/prefix`` or, for metrics only, a Prometheus base URL.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from pipelines.lib.sources.config import source_location
from pipelines.lib.storage import LocalStorage, Storage


def resolve_storage(source: str, location: str) -> Storage:
    """A :class:`Storage` for ``location`` (a folder or ``s3://…``); errors name the source."""
    if location.startswith("s3://"):
        from pipelines.lib.sources.s3 import S3Storage

        return S3Storage.from_url(location)
    if location.startswith(("http://", "https://")):
        raise ValueError(f"{source} source {location!r}: only metrics can come from a Prometheus URL")
    return LocalStorage(location)


class SourceResource(dg.ConfigurableResource):
    """One source stream's location (see module doc)."""

    source: str
    location: str = ""

    def resolved_location(self) -> str:
        """The configured location, or the environment's when none is configured."""
        return self.location or source_location(self.source)

    def storage(self) -> Storage:
        """The files of this source (local folder or S3 bucket prefix)."""
        return resolve_storage(self.source, self.resolved_location())

    def describe(self) -> str:
        """Where the source is, for run metadata (no credentials ever appear in a location)."""
        return self.resolved_location()


class MetricsSourceResource(SourceResource):
    """Metric samples from files (folder/S3) or from a Prometheus server's ``/api/v1/query_range``."""

    source: str = "metrics"
    timeout_seconds: float = 30.0
    max_retries: int = 4

    def is_prometheus(self) -> bool:
        """Whether the location is a Prometheus base URL."""
        return self.resolved_location().startswith(("http://", "https://"))

    def reader(self) -> Any:
        """An object with ``samples(metric, start_utc, end_utc)`` in the contract's columns.

        ``PrometheusSource`` for a URL, otherwise the warehouse's ``FileMetricsReader`` over the files.
        """
        location = self.resolved_location()
        if self.is_prometheus():
            from pipelines.lib.sources.prometheus import PrometheusClient, PrometheusSource

            client = PrometheusClient(location, timeout_seconds=self.timeout_seconds, max_retries=self.max_retries)
            return PrometheusSource(location, client=client)
        from pipelines.lib.ingest.metrics import FileMetricsReader

        return FileMetricsReader(resolve_storage("metrics", location))

    def storage(self) -> Storage:
        if self.is_prometheus():
            raise ValueError(
                f"metrics source {self.resolved_location()!r} is a Prometheus server, not files; use reader()"
            )
        return super().storage()


def source_resources() -> dict[str, SourceResource]:
    """The four source resources with locations left to the environment."""
    return {
        "metrics_source": MetricsSourceResource(),
        "billing_source": SourceResource(source="billing"),
        "events_source": SourceResource(source="events"),
        "fx_source": SourceResource(source="fx"),
    }


@dg.definitions
def resources() -> dg.Definitions:
    """Register the source resources for every asset in the project."""
    return dg.Definitions(resources=source_resources())
