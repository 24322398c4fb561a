"""Source resources: where metrics, billing, events and FX come from (local folder, S3, Prometheus)."""
