"""Data quality: Great Expectations 1.x suites per warehouse asset (run as Dagster asset checks)."""
