"""Run a :class:`~pipelines.lib.quality.suites.Suite` against the warehouse with Great Expectations 1.x.

Order: the table exists → its columns have the contract's SQL types (checked on DuckDB's own schema,
because ``.df()`` turns DECIMAL into float) → a pandas batch (``.df()``) of the day being checked, with
the suite's derived boolean columns computed in SQL, is validated by an ephemeral GE context → freshness
→ row-count reconciliation against the load audit (``ops.loads``). Every failure becomes one line of
text naming the table, the rule and how many rows break it; categorical offenders (unknown statuses,
currencies…) are listed, other values never (rows may hold money or pseudonymous ids).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import duckdb

from pipelines.lib.catalog import load_catalog
from pipelines.lib.quality.suites import Expect, Suite

_SAMPLE_KINDS = ("in_set",)  # only categorical offenders are shown in messages


@dataclass
class QualityOutcome:
    """What a suite found: ``passed`` when there is no failure; ``failures`` are readable sentences."""

    asset: str
    table: str
    rows_checked: int = 0
    expectations_run: int = 0
    failures: list[str] = field(default_factory=list)
    scope: str = "all rows"
    newest_day: date | None = None
    audit: dict[str, int] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures

    def metadata(self) -> dict[str, Any]:
        """Plain values for Dagster check metadata."""
        return {
            "table": self.table,
            "scope": self.scope,
            "rows_checked": self.rows_checked,
            "expectations_run": self.expectations_run,
            "failures": "\n".join(self.failures) or "none",
            "failure_count": len(self.failures),
            "newest_day": self.newest_day.isoformat() if self.newest_day else "none",
            **{f"audit_{k}": v for k, v in self.audit.items()},
        }


def _table_columns(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, str] | None:
    schema, _, name = table.partition(".")
    rows = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
        [schema, name],
    ).fetchall()
    return {c: t for c, t in rows} if rows else None


def _expect_columns(e: Expect) -> list[str]:
    if e.kind == "unique":
        return list(e.args["columns"])
    if e.kind == "columns":
        return []
    return [e.column] if e.column else []


def _to_gx(e: Expect) -> Any:
    import great_expectations as gx

    x = gx.expectations
    if e.kind == "not_null":
        return x.ExpectColumnValuesToNotBeNull(column=e.column)
    if e.kind == "in_set":
        return x.ExpectColumnValuesToBeInSet(column=e.column, value_set=e.args["values"])
    if e.kind == "between":
        return x.ExpectColumnValuesToBeBetween(
            column=e.column, min_value=e.args.get("min_value"), max_value=e.args.get("max_value")
        )
    if e.kind == "unique":
        cols = e.args["columns"]
        return (
            x.ExpectColumnValuesToBeUnique(column=cols[0])
            if len(cols) == 1
            else x.ExpectCompoundColumnsToBeUnique(column_list=cols)
        )
    if e.kind == "true":
        return x.ExpectColumnValuesToBeInSet(column=e.column, value_set=[True])
    if e.kind == "columns":
        return x.ExpectTableColumnsToMatchSet(column_set=e.args["columns"], exact_match=False)
    if e.kind == "min_rows":
        return x.ExpectTableRowCountToBeBetween(min_value=e.args["min"])
    raise ValueError(f"unknown expectation kind {e.kind!r}")


def _describe_failure(suite: Suite, e: Expect, result: dict[str, Any]) -> str:
    where = f"{suite.table}: {e.kind}" + (f" {e.column}" if e.column else "")
    if e.kind == "unique":
        where += f" ({', '.join(e.args['columns'])})"
    if e.kind == "min_rows":
        return f"{where}: {result.get('observed_value')} rows, expected at least {e.args['min']}" + (
            f" ({e.why})" if e.why else ""
        )
    if e.kind == "columns":
        return f"{where}: missing {result.get('details', {}).get('mismatched', {}).get('missing', '?')}"
    count = result.get("unexpected_count")
    total = result.get("element_count")
    text = f"{where}: {count} of {total} rows fail"
    if e.kind in _SAMPLE_KINDS and result.get("partial_unexpected_list"):
        shown = sorted({str(v) for v in result["partial_unexpected_list"]})[:5]
        text += f" (e.g. {', '.join(shown)})"
    if e.why:
        text += f" — {e.why}"
    return text


def _validate_with_gx(
    suite: Suite, frame: Any, expectations: list[Expect]
) -> list[tuple[Expect, dict[str, Any], bool]]:
    """Validate a pandas frame with an ephemeral GE context; one (expectation, result, success) per item."""
    import great_expectations as gx

    context = _context()
    name = f"{suite.name}-{uuid.uuid4().hex[:8]}"  # unique per run: the context is reused in the process
    try:
        asset = context.data_sources.add_pandas(name).add_dataframe_asset(suite.asset)
        batch = asset.add_batch_definition_whole_dataframe("checked_rows")
        gx_suite = context.suites.add(gx.ExpectationSuite(name=name))
        by_id = {}
        for e in expectations:
            added = gx_suite.add_expectation(_to_gx(e))
            by_id[added.id] = e
        validation = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=gx_suite))
        report = validation.run(batch_parameters={"dataframe": frame})
    finally:
        for delete in (context.validation_definitions.delete, context.suites.delete, context.data_sources.delete):
            try:
                delete(name)
            except Exception:  # noqa: BLE001, S110 - not created because an earlier step failed
                pass
    # GE reorders results; match each to its expectation by id
    return [(by_id[r.expectation_config.id], r.result or {}, bool(r.success)) for r in report.results]


_CONTEXT: Any = None


def _context() -> Any:
    """One ephemeral GE context per process (creating one makes a temp folder; reuse it)."""
    global _CONTEXT
    if _CONTEXT is None:
        os.environ["GX_ANALYTICS_ENABLED"] = "False"  # never phone home (network only to loopback)
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        _CONTEXT = gx.get_context(mode="ephemeral")
        _CONTEXT.variables.progress_bars = ProgressBarsConfig(globally=False)
    return _CONTEXT


def _today_ar() -> date:
    return datetime.now(ZoneInfo(load_catalog().timezone)).date()


def run_suite(con: duckdb.DuckDBPyConnection, suite: Suite, day: date | None = None) -> QualityOutcome:
    """Check ``suite.table``: the rows of ``day`` (a partition), else of its newest day, else all rows."""
    outcome = QualityOutcome(suite.asset, suite.table)
    actual = _table_columns(con, suite.table)
    if actual is None:
        outcome.failures.append(f"{suite.table}: table does not exist (asset {suite.asset} not materialized?)")
        return outcome
    missing = [c for c in suite.columns if c not in actual]
    present = [t for t in suite.also if _table_columns(con, t) is not None]
    # table names come from the suites (code), never from input
    union = " UNION ALL BY NAME ".join(f"SELECT * FROM {t}" for t in (suite.table, *present))  # noqa: S608
    relation = f"({union})" if present else suite.table
    for column, wanted in suite.columns.items():
        if column not in actual:
            outcome.failures.append(f"{suite.table}: missing column {column}")
        elif wanted and actual[column] != wanted:
            outcome.failures.append(f"{suite.table}: column {column} is {actual[column]}, expected {wanted}")

    where = "TRUE"
    params: list[Any] = []
    if suite.day_column and suite.day_column in actual:
        newest = con.execute(f"SELECT max({suite.day_column}) FROM {relation}").fetchone()[0]  # noqa: S608
        outcome.newest_day = newest
        checked_day = day or newest
        if checked_day is not None:
            where, params = f"{suite.day_column} = ?", [checked_day]
            outcome.scope = f"{suite.day_column} = {checked_day.isoformat()}"
        _freshness(suite, outcome, newest, day)

    usable = [
        e
        for e in suite.expectations
        if not set(_expect_columns(e)) & set(missing) and (e.kind != "true" or e.column in suite.derived)
    ]
    derived = {}
    for name, sql in suite.derived.items():
        try:  # a rule over a missing or mistyped column cannot run: say so instead of crashing
            con.execute(f"SELECT ({sql}) FROM {relation} LIMIT 0")  # noqa: S608
            derived[name] = sql
        except duckdb.Error as exc:
            outcome.failures.append(f"{suite.table}: rule {name} cannot be evaluated ({str(exc).splitlines()[0]})")
    select = ", ".join([*(f'"{c}"' for c in actual), *(f"({sql}) AS {name}" for name, sql in derived.items())])
    frame = con.execute(f"SELECT {select} FROM {relation} WHERE {where}", params).df()  # noqa: S608
    outcome.rows_checked = len(frame)
    usable = [e for e in usable if e.kind != "true" or e.column in derived]
    for e, result, success in _validate_with_gx(suite, frame, usable):
        outcome.expectations_run += 1
        if not success:
            outcome.failures.append(
                _explain(con, suite, e, _describe_failure(suite, e, result), relation, where, params)
            )
    if suite.audit_source:
        _reconcile(con, suite, outcome)
    return outcome


def _explain(
    con: duckdb.DuckDBPyConnection, suite: Suite, e: Expect, text: str, relation: str, where: str, params: list
) -> str:
    """Say where a failure comes from: a duplicated key's files (when rows carry ``source_file``), and for
    an empty table, what the loads quarantined instead (count and first reasons)."""
    if e.kind == "unique" and "source_file" in (_table_columns(con, suite.table) or {}):
        cols = ", ".join(f'"{c}"' for c in e.args["columns"])
        found = con.execute(
            f"SELECT {cols}, list(DISTINCT source_file ORDER BY source_file) FROM {relation} WHERE {where} "  # noqa: S608
            f"GROUP BY ALL HAVING count(*) > 1 ORDER BY ALL LIMIT 1",
            params,
        ).fetchall()
        if found:
            *key, files = found[0]
            example = f" (e.g. {key[-1]} in {' and '.join(str(f) for f in files)})"
            head, sep, tail = text.partition(" — ")
            return f"{head}{example}{sep}{tail}"
    if e.kind == "min_rows" and suite.audit_source and _table_columns(con, "quarantine.rows") is not None:
        count, samples = con.execute(
            "SELECT count(*), list(source_file || coalesce(' row ' || row_number, '') || ': ' || reason "
            "ORDER BY loaded_at DESC, source_file, row_number)[1:3] FROM quarantine.rows WHERE source = ?",
            [suite.audit_source],
        ).fetchone()
        if count:
            return f"{text}; {count} rows quarantined by the {suite.audit_source} loads (quarantine.rows), e.g. " + (
                "; ".join(samples)
            )
    return text


def _freshness(suite: Suite, outcome: QualityOutcome, newest: date | None, day: date | None) -> None:
    if suite.freshness_days is None:
        return
    expected = day or _today_ar()
    if newest is None:
        outcome.failures.append(f"{suite.table}: no rows at all (freshness)")
    elif (expected - newest).days > suite.freshness_days:
        outcome.failures.append(
            f"{suite.table}: stale: newest {suite.day_column} is {newest.isoformat()}, "
            f"more than {suite.freshness_days} days before {expected.isoformat()}"
        )


def _reconcile(con: duckdb.DuckDBPyConnection, suite: Suite, outcome: QualityOutcome) -> None:
    """Rows read = loaded + quarantined on every audited load of the source (``ops.loads``)."""
    if _table_columns(con, "ops.loads") is None:
        outcome.failures.append(f"ops.loads: load audit missing; cannot reconcile {suite.audit_source} row counts")
        return
    totals = con.execute(
        "SELECT count(*), coalesce(sum(rows_read), 0), coalesce(sum(rows_loaded), 0), "
        "coalesce(sum(rows_quarantined), 0), "
        "count(*) FILTER (WHERE rows_read <> rows_loaded + rows_quarantined) FROM ops.loads WHERE source = ?",
        [suite.audit_source],
    ).fetchone()
    loads, read, loaded, quarantined, broken = (int(v) for v in totals)
    outcome.audit = {"loads": loads, "rows_read": read, "rows_loaded": loaded, "rows_quarantined": quarantined}
    if loads == 0:
        outcome.failures.append(f"ops.loads: no load of {suite.audit_source} recorded")
    elif broken:
        outcome.failures.append(
            f"ops.loads: {broken} load(s) of {suite.audit_source} do not reconcile "
            f"(read {read} vs loaded {loaded} + quarantined {quarantined})"
        )
