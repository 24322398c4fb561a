"""Pulso alerting: SLO burn-rate rules for Prometheus and Alertmanager (``alerts.rules``,
``python -m alerts.generate``), plus the scheduled anomaly alerts to Slack (sub-packages)."""
