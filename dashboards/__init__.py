"""Pulso's Grafana dashboards as code (grafanalib), generated from the catalog.

``python -m dashboards.generate [--out build/grafana]`` writes::

    <out>/dashboards/<uid>.json                 # one file per dashboard, fixed uids
    <out>/provisioning/datasources/pulso.yaml   # the Prometheus datasource, fixed uid
    <out>/provisioning/dashboards/pulso.yaml    # a `file` provider, allowUiUpdates: false

Mount ``<out>/provisioning`` as ``/etc/grafana/provisioning`` and ``<out>/dashboards`` at the provider's
path (``/var/lib/grafana/dashboards/pulso`` by default) in a stock Grafana.
"""
