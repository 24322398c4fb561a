"""Resources shared by every domain: the DuckDB warehouse (the one writer) and the published store."""

import os
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource


def warehouse_path() -> str:
    return os.environ.get("PULSO_WAREHOUSE", "data/warehouse.duckdb")


def published_root() -> Path:
    return Path(os.environ.get("PULSO_PUBLISHED", "data/published"))


@dg.definitions
def resources() -> dg.Definitions:
    path = warehouse_path()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return dg.Definitions(resources={"duckdb": DuckDBResource(database=path)})
