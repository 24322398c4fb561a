"""Source connectors: where each stream comes from (local folder, S3, a Prometheus server)."""
