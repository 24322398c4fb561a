"""Choose each source's location from the environment; switching source is configuration only.

``PULSO_<SOURCE>_SOURCE`` (SOURCE = METRICS, BILLING, EVENTS, FX) may be:

- a local folder (the default: ``$PULSO_SOURCES/<source>``, ``PULSO_SOURCES`` defaulting to
  ``data/sources/demo``),
- ``s3://bucket/prefix`` (boto3; endpoint/region/credentials from the usual AWS variables plus
  ``PULSO_S3_ENDPOINT_URL``),
- for metrics only, ``http(s)://host:port`` of a Prometheus server (``/api/v1/query_range``).
"""

from __future__ import annotations

import os
from pathlib import Path

from pipelines.lib.storage import LocalStorage, Storage

SOURCES = ("metrics", "billing", "events", "fx")


def sources_root() -> Path:
    return Path(os.environ.get("PULSO_SOURCES", "data/sources/demo"))


def source_location(source: str) -> str:
    """The configured location of one source (see module doc)."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; one of {SOURCES}")
    return os.environ.get(f"PULSO_{source.upper()}_SOURCE") or str(sources_root() / source)


def storage_for(source: str) -> Storage:
    """A :class:`Storage` over the source's files (local folder or S3)."""
    location = source_location(source)
    if location.startswith("s3://"):
        from pipelines.lib.sources.s3 import S3Storage  # boto3 only when S3 is configured

        return S3Storage.from_url(location)
    if location.startswith(("http://", "https://")):
        raise ValueError(f"{source} source {location!r}: only metrics can come from a Prometheus URL")
    return LocalStorage(location)


def metrics_is_prometheus() -> bool:
    return source_location("metrics").startswith(("http://", "https://"))
