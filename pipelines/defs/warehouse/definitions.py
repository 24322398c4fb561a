"""Register the warehouse assets, jobs, schedules and sensor (picked up by ``load_from_defs_folder``)."""

import dagster as dg

from pipelines.defs.warehouse.assets import WAREHOUSE_ASSETS
from pipelines.defs.warehouse.automation import (
    intraday_refresh,
    late_data_sensor,
    marts_job,
    nightly_finalize,
    warehouse_job,
)


@dg.definitions
def warehouse() -> dg.Definitions:
    """Assets of the warehouse flow and their automation."""
    return dg.Definitions(
        assets=WAREHOUSE_ASSETS,
        jobs=[warehouse_job, marts_job],
        schedules=[intraday_refresh, nightly_finalize],
        sensors=[late_data_sensor],
    )
