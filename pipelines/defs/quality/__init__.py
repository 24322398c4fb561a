"""Data-quality asset checks (Great Expectations suites) on every raw source and on kpi_daily."""
