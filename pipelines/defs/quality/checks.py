"""Asset checks: one Great Expectations suite per raw source asset and for ``kpi_daily``.

The suites (``pipelines.lib.quality.suites``) are blocking where bad rows would corrupt KPIs: a failed
blocking check stops downstream assets of the same run. Each check reads the warehouse through the
shared ``duckdb`` resource, only the partition's day (or the newest day) of its table.
"""

from datetime import date

import dagster as dg
from dagster_duckdb import DuckDBResource

from pipelines.lib.quality.suites import Suite, all_suites


def _partition_day(context: dg.AssetCheckExecutionContext) -> date | None:
    """The run's partition day (the last day of a multi-day run), when the run is partitioned."""
    try:
        if context.has_partition_key:
            return date.fromisoformat(context.partition_key)
        if context.has_partition_key_range:
            return date.fromisoformat(context.partition_key_range.end)
    except (ValueError, dg.DagsterInvariantViolationError):  # an unpartitioned run or a non-day key
        return None
    return None


def build_quality_check(suite: Suite) -> dg.AssetChecksDefinition:
    """A Dagster asset check running ``suite`` (Great Expectations imported only when it runs)."""

    @dg.asset_check(
        asset=suite.asset,
        name=suite.name,
        blocking=suite.blocking,
        pool="duckdb",  # the warehouse's one-connection pool: never read while another process writes
        description=f"Great Expectations suite on {suite.table}: schema and SQL types, ranges, allowed values "
        f"from the catalog, uniqueness, freshness and row-count reconciliation.",
    )
    def _check(context: dg.AssetCheckExecutionContext, duckdb: DuckDBResource) -> dg.AssetCheckResult:
        from pipelines.lib.quality.runner import run_suite  # GE is slow to import; only at run time

        with duckdb.get_connection() as con:
            outcome = run_suite(con, suite, _partition_day(context))
        for failure in outcome.failures:
            context.log.warning(failure)
        return dg.AssetCheckResult(
            passed=outcome.passed,
            severity=dg.AssetCheckSeverity.ERROR if suite.blocking else dg.AssetCheckSeverity.WARN,
            metadata=outcome.metadata(),
        )

    return _check


@dg.definitions
def quality_checks() -> dg.Definitions:
    """Every suite as an asset check."""
    return dg.Definitions(asset_checks=[build_quality_check(s) for s in all_suites()])
