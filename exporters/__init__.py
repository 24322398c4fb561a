"""Pulso's Prometheus exporter: serves what the pipeline published (``python -m exporters.serve``)."""
