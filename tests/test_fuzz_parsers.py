"""Property-based fuzzing of every source parser (issue #7 item 6; docs/reliability.md section 6).

Each parser gets arbitrary bytes, mutated valid files and valid shapes with wrong types. The outcome
must be either a result whose counts reconcile (rows read = loaded + quarantined, checked against the
warehouse, and against the number of rows written when the test knows it) or the parser's documented
error naming the file:

| parser | documented error |
|---|---|
| FX CSV (``load_fx``) | ``ValueError`` starting with the file |
| events JSON lines (``parse_event`` / ``load_events_day``) | ``EventError`` per line (quarantined with its row number) |
| legacy CUR / FOCUS (``billing_formats``) | ``BillingFormatError`` naming the file, bad rows in ``rejects`` |
| metric Parquet files (``load_metrics_day``) | the file quarantined as one row naming it |
| Prometheus ``query_range`` answers | ``PrometheusError`` naming the URL |
| the catalog YAML | ``CatalogError`` |

Deterministic (``derandomize=True``, no example database) and sized to stay fast in the suite.
Examples found by fuzzing that used to crash are pinned with ``@example``.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipelines.lib import warehouse
from pipelines.lib.catalog import DEFAULT_CATALOG_PATH, CatalogError, load_catalog, parse_catalog
from pipelines.lib.ingest.billing import ensure_billing_tables
from pipelines.lib.ingest.events import EventError, ParsedEvent, gunzip_lines, load_events_day, parse_event
from pipelines.lib.ingest.fx import FX_KEY, load_fx
from pipelines.lib.ingest.metrics import METRICS, FileMetricsReader, load_metrics_day
from pipelines.lib.sources.billing_formats import (
    LINE_ITEM_SCHEMA,
    BillingFormatError,
    BillingParse,
    detect_format,
    parse_cur_legacy,
    parse_focus,
)
from pipelines.lib.sources.billing_load import load_billing_files
from pipelines.lib.sources.prometheus import SAMPLE_SCHEMA, PrometheusClient, PrometheusError, PrometheusSource
from pipelines.lib.storage import InputTooLarge, LocalStorage

FIXTURES = Path(__file__).parent / "fixtures" / "sources"
KEY = b"fuzz-pseudonym-key"
DAY = date(2026, 11, 2)

#: Cheap properties (pure parsing) and properties that load a warehouse per example.
#: ``PULSO_FUZZ_SCALE=20`` multiplies every example count (a deeper run; the suite uses 1).
SCALE = int(os.environ.get("PULSO_FUZZ_SCALE", "1"))
FAST = settings(
    max_examples=120 * SCALE,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LOADS = settings(FAST, max_examples=30 * SCALE)

# Values that broke or could break a parser: numbers out of range, non-finite, dates at the calendar's
# edges (UTC conversion overflows), wrong JSON shapes, control characters, huge digits.
HOSTILE_TEXT = [
    "",
    " ",
    "NULL",
    "null",
    "abc",
    "1e400",
    "-1e400",
    "1e-400",
    "NaN",
    "nan",
    "Infinity",
    "-Infinity",
    "99999999999999999999999",
    "-0",
    "-5",
    "0.0000000001",
    "1,5",
    " 1 ",
    "0x10",
    "1_000",
    "0001-01-01T00:00:00+05:00",
    "9999-12-31T23:59:59-05:00",
    "0001-01-01T00:00:00Z",
    "2026-13-45T00:00:00Z",
    "2026-11-02T10:00:00",
    "2026-11-02",
    "[1, 2]",
    '{"a": 1}',
    '{"a":',
    "\x00",
    "\u202e",
    "🙂",
    "\r\n",
    '"',
]
hostile_text = st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=20))
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    hostile_text,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    c = warehouse.connect(":memory:")
    ensure_billing_tables(c)
    yield c
    c.close()


def _quarantined(con: duckdb.DuckDBPyConnection) -> int:
    return con.execute("SELECT count(*) FROM quarantine.rows").fetchall()[0][0]


def _folder(files: dict[str, bytes]) -> tempfile.TemporaryDirectory:
    """A temporary source folder holding ``files`` (read through the real LocalStorage)."""
    tmp = tempfile.TemporaryDirectory(prefix="pulso-fuzz-")
    for key, data in files.items():
        path = Path(tmp.name) / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return tmp


# --- mutations of valid files ------------------------------------------------------------------------


@st.composite
def byte_mutations(draw: st.DrawFn, base: bytes) -> bytes:
    """``base`` with a few random edits: bytes flipped, inserted or deleted, a cut, a line repeated."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(("flip", "insert", "delete", "truncate", "dup_line")))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[at:]
        elif op == "dup_line":
            lines = bytes(data).split(b"\n")
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(i, lines[i])
            data = bytearray(b"\n".join(lines))
    return bytes(data)


@st.composite
def csv_cell_mutations(draw: st.DrawFn, base: bytes) -> tuple[bytes, list[list[str]]]:
    """``base`` (a CSV) with cells replaced by hostile values, rows dropped or given extra fields.
    Returns the file and its data rows as Python's csv module reads them back (the reference count)."""
    rows = list(csv.reader(io.StringIO(base.decode("utf-8"))))
    header, body = rows[0], rows[1:]
    for _ in range(draw(st.integers(1, 5))):
        op = draw(st.sampled_from(("cell", "cell", "cell", "drop_row", "extra_field", "short_row")))
        r = draw(st.integers(0, len(body) - 1)) if body else None
        if r is None:
            break
        if op == "cell" and body[r]:
            body[r][draw(st.integers(0, len(body[r]) - 1))] = draw(hostile_text)
        elif op == "drop_row" and len(body) > 1:
            body.pop(r)
        elif op == "extra_field":
            body[r] = [*body[r], draw(hostile_text)]
        elif op == "short_row":
            body[r] = body[r][: draw(st.integers(0, len(header) - 1))]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([header, *body])
    text = out.getvalue()
    return text.encode("utf-8"), list(csv.reader(io.StringIO(text, newline="")))[1:]


#: A metric file (found by the deep run) whose embedded Arrow schema is damaged: pyarrow refuses the footer,
#: polars reads the 4 rows. The limits must still be checked.
FLATBUFFER_DAMAGE = (FIXTURES / "metric-damaged-arrow-schema.parquet").read_bytes()


def _replace(table: pa.Table, columns: list[tuple[str, pa.Array]]) -> pa.Table:
    """``table`` with columns replaced (or added) by arrays of other types."""
    for name, values in columns:
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, values)
        else:
            table = table.append_column(name, values)
    return table


# --- FX CSV ------------------------------------------------------------------------------------------

FX_VALID = b"date,ars_per_usd\n2026-11-02,1000.5\n2026-11-03,1001.25\n2026-11-05,999\n"


def _check_fx(con: duckdb.DuckDBPyConnection, data: bytes, rows_written: int | None = None) -> None:
    with _folder({FX_KEY: data}) as root:
        storage = LocalStorage(root)
        where = storage.describe(FX_KEY)
        before = _quarantined(con)
        try:
            result = load_fx(con, storage)
        except ValueError as exc:  # the documented error: names the file
            assert str(exc).startswith(where), exc
            return
        assert result.reconciled, result
        if rows_written is not None:
            assert result.rows_read == rows_written
        assert con.execute("SELECT count(*) FROM raw.fx_rates").fetchall()[0][0] == result.rows_loaded
        new = con.execute("SELECT source_file, reason FROM quarantine.rows OFFSET ?", [before]).fetchall()
        assert len(new) == result.rows_quarantined
        assert all(f == where and reason for f, reason in new)


@FAST
@given(data=st.one_of(st.binary(max_size=300), byte_mutations(FX_VALID)))
@example(data=b"date,ars_per_usd\n2026-11-02,1\xff\n")  # not UTF-8: crashed with a bare UnicodeDecodeError
@example(data=b'date,ars_per_usd\n"' + b"9" * 200_000 + b'"\n')  # field past csv's limit: crashed with csv.Error
@example(data=b"date,ars_per_usd")  # no rows: crashed in DuckDB's executemany (empty list)
@example(data=b"date,ars_per_usd\n2026-11-02,99999999999999999999999\n")  # crashed: past DECIMAL(18,6) in DuckDB
def test_fx_any_bytes_load_or_name_the_file(con, data: bytes) -> None:
    _check_fx(con, data)


@FAST
@given(mutated=csv_cell_mutations(FX_VALID))
def test_fx_wrong_values_are_quarantined_and_counted(con, mutated: tuple[bytes, list[list[str]]]) -> None:
    data, rows = mutated
    _check_fx(con, data, sum(1 for r in rows if any(c.strip() for c in r)))  # blank rows are not rows


# --- events JSON lines -------------------------------------------------------------------------------


def _event(i: int, kind: str = "booking.created", niche: str = "barber") -> dict[str, Any]:
    ev = {
        "event_id": f"e{i}",
        "type": kind,
        "occurred_at": "2026-11-02T15:00:00.000Z",
        "niche": niche,
        "country": "AR",
        "region": "buenos_aires",
        "user": {"id": f"u{i}", "name": "Ana", "email": "a@example.com"},
        "payload": {
            "booking_id": f"b{i}",
            "professional_id": "p1",
            "scheduled_for": "2026-11-03T15:00:00.000Z",
            "price_ars": 15000.5,
            "channel": "web",
        },
    }
    if kind == "payment.updated":
        ev["payload"] = {
            "provider": "mercadopago",
            "payment": {
                "id": f"pay{i}",
                "status": "approved",
                "status_detail": "accredited",
                "transaction_amount": 15000.5,
                "transaction_amount_refunded": 0,
                "currency_id": "ARS",
                "date_created": "2026-11-02T15:00:00.000Z",
                "date_approved": "2026-11-02T15:00:01.000Z",
                "date_last_updated": "2026-11-02T15:00:01.000Z",
            },
        }
    return ev


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    return out


@st.composite
def mutated_event(draw: st.DrawFn, i: int = 0) -> bytes:
    """A valid event with fields replaced by values of any JSON type, or removed."""
    ev = _event(
        i,
        draw(st.sampled_from(("booking.created", "payment.updated", "session.started"))),
        draw(st.sampled_from(("barber", "psychology"))),
    )
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(_paths(ev)))
        parent = ev
        for k in path[:-1]:
            parent = parent[k] if isinstance(parent, dict) and isinstance(parent.get(k), dict) else None
            if parent is None:
                break
        if parent is None:
            continue
        if draw(st.booleans()):
            parent[path[-1]] = draw(json_values)
        else:
            parent.pop(path[-1], None)
    return json.dumps(ev).encode()


event_lines = st.one_of(
    mutated_event(),
    st.binary(max_size=60),
    mutated_event().flatmap(lambda b: byte_mutations(b)),
    st.sampled_from([b'{"price_ars": 1e400}', b"[]", b"null", b'"x"', b"NaN", b"{}" * 3]),
)


@pytest.fixture(scope="module")
def catalog_bits() -> tuple[ZoneInfo, frozenset[str]]:
    catalog = load_catalog()
    return ZoneInfo(catalog.timezone), frozenset(catalog.sensitive_niches)


def _with(path: tuple, value: Any, kind: str = "booking.created") -> bytes:
    ev = _event(1, kind)
    parent = ev
    for k in path[:-1]:
        parent = parent[k]
    parent[path[-1]] = value
    return json.dumps(ev).encode()


@FAST
@given(line=event_lines)
@example(line=_with(("payload", "price_ars"), 10**20))  # crashed: DECIMAL(18,2) overflow in Arrow
@example(line=_with(("occurred_at",), "0001-01-01T00:00:00+05:00"))  # crashed: OverflowError (UTC before year 1)
@example(line=_with(("payload", "payment", "transaction_amount"), 1e300, "payment.updated"))
def test_event_line_parses_or_names_the_problem(catalog_bits, line: bytes) -> None:
    tz, sensitive = catalog_bits
    try:
        parsed = parse_event(line, KEY, tz, sensitive)
    except EventError as exc:
        assert str(exc)
        return
    assert isinstance(parsed, ParsedEvent)
    assert parsed.event["event_id"] and parsed.event["occurred_at"].tzinfo is not None


@LOADS
@given(lines=st.lists(event_lines, min_size=1, max_size=8), gz=st.booleans(), cut=st.integers(0, 40))
@example(lines=[_with(("payload", "price_ars"), 1e30)], gz=False, cut=0)  # crashed the vectorized path (f64 → i64 cast)
@example(lines=[_with(("payload", "price_ars"), 10**20)], gz=False, cut=0)
def test_event_file_loads_every_line_or_quarantines_it(con, lines: list[bytes], gz: bool, cut: int) -> None:
    text = b"\n".join(lines) + b"\n"
    name = "part-0000.jsonl.gz" if gz else "part-0000.jsonl"
    data = gzip.compress(text, mtime=0) if gz else text
    if gz and cut:
        data = data[: max(len(data) - cut, 0)]  # a cut gzip: complete lines kept, the rest named
    with _folder({f"date={DAY.isoformat()}/{name}": data}) as root:
        storage = LocalStorage(root)
        before = _quarantined(con)
        result = load_events_day(con, storage, DAY, key=KEY)
        assert result.reconciled, result
        if not (gz and cut):  # every non-blank line is a row read
            assert result.rows_read == sum(1 for ln in text.split(b"\n") if ln.strip())
        stored = con.execute(
            "SELECT (SELECT count(*) FROM raw.events WHERE arrival_day = $d) + "
            "(SELECT count(*) FROM psychology.events WHERE arrival_day = $d)",
            {"d": DAY},
        ).fetchall()[0][0]
        # rows loaded = stored + duplicates (the same event_id twice is accounted for, not stored twice)
        assert stored == result.rows_loaded - result.duplicates
        reasons = con.execute("SELECT source_file, reason FROM quarantine.rows OFFSET ?", [before]).fetchall()
        assert len(reasons) == result.rows_quarantined
        assert all(f == storage.describe(f"date={DAY.isoformat()}/{name}") and r for f, r in reasons)


@FAST
@given(data=st.one_of(st.binary(max_size=200), byte_mutations(gzip.compress(b'{"a": 1}\n{"b": 2}\n', mtime=0))))
def test_gunzip_any_bytes_gives_lines_or_a_named_problem(data: bytes) -> None:
    lines, error = gunzip_lines(data, "mem://x.jsonl.gz")
    assert isinstance(lines, list) and (error is None or "gzip" in error)


# --- legacy CUR and FOCUS ----------------------------------------------------------------------------

LEGACY = b"".join((FIXTURES / "aws-cur-legacy-sample.csv").read_bytes().splitlines(keepends=True)[:8])
FOCUS = (FIXTURES / "focus-1.2-multi-provider.csv").read_bytes()
FOCUS_10 = (FIXTURES / "focus-1.0-refund.csv").read_bytes()


def _check_billing(parse: Callable[..., BillingParse], data: bytes, rows_written: int | None = None) -> None:
    source = "fuzz://billing/file.csv"
    try:
        result = parse(data, source)
    except BillingFormatError as exc:
        assert str(exc).startswith(source), exc
        assert "rows read but" not in str(exc)  # the reconciliation guard must never fire
        return
    except InputTooLarge as exc:
        assert str(exc).startswith(source), exc
        return
    assert result.rows_read == result.line_items.height + result.rejects.height
    if rows_written is not None:
        assert result.rows_read == rows_written
    assert dict(result.line_items.schema) == LINE_ITEM_SCHEMA
    assert result.rejects["reason"].null_count() == 0 and (result.rejects["source_file"] == source).all()


def _parquet_of(csv_bytes: bytes, wrong_types: dict[str, pa.Array] | None = None) -> bytes:
    table = _replace(
        pa.Table.from_pylist(list(csv.DictReader(io.StringIO(csv_bytes.decode())))), list((wrong_types or {}).items())
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


@FAST
@given(data=st.one_of(st.binary(max_size=300), byte_mutations(LEGACY), byte_mutations(gzip.compress(LEGACY, mtime=0))))
def test_legacy_cur_any_bytes(data: bytes) -> None:
    _check_billing(parse_cur_legacy, data)


@FAST
@given(mutated=csv_cell_mutations(LEGACY))
def test_legacy_cur_wrong_values_become_rejects(mutated: tuple[bytes, list[list[str]]]) -> None:
    data, rows = mutated
    _check_billing(parse_cur_legacy, data, sum(1 for r in rows if r))


@FAST
@given(data=st.one_of(st.binary(max_size=300), byte_mutations(FOCUS), byte_mutations(FOCUS_10)))
def test_focus_any_bytes(data: bytes) -> None:
    _check_billing(parse_focus, data)


_FOCUS_OVERFLOW = FOCUS.replace(b"2026-11-01T00:00:00Z", b"0001-01-01T00:00:00+05:00", 1)


@FAST
@given(mutated=st.one_of(csv_cell_mutations(FOCUS), csv_cell_mutations(FOCUS_10)))
@example(
    mutated=(_FOCUS_OVERFLOW, list(csv.reader(io.StringIO(_FOCUS_OVERFLOW.decode())))[1:])
)  # crashed: OverflowError
def test_focus_wrong_values_become_rejects(mutated: tuple[bytes, list[list[str]]]) -> None:
    data, rows = mutated
    _check_billing(parse_focus, data, sum(1 for r in rows if r))


_ROWS = 9  # data rows of the FOCUS 1.2 fixture
wrong_columns = st.sampled_from(
    [
        pa.array([1] * _ROWS, pa.int64()),
        pa.array([1.5] * _ROWS, pa.float64()),
        pa.array([True] * _ROWS),
        pa.array([None] * _ROWS, pa.null()),
        pa.array([[1, 2]] * _ROWS, pa.list_(pa.int64())),
        pa.array([{"k": "v"}] * _ROWS),
        pa.array([datetime(2026, 11, 2, tzinfo=UTC)] * _ROWS, pa.timestamp("us", "UTC")),
        pa.array([date(2026, 11, 2)] * _ROWS, pa.date32()),
        pa.array([b"\xff"] * _ROWS, pa.binary()),
        pa.array([[("niche", "barber")]] * _ROWS, pa.map_(pa.string(), pa.string())),
        pa.array([float("nan")] * _ROWS),
        pa.array([10**18] * _ROWS, pa.int64()),
    ]
)


@FAST
@given(
    column=st.sampled_from(
        [
            "BilledCost",
            "EffectiveCost",
            "ListCost",
            "ChargeCategory",
            "ChargePeriodStart",
            "ChargePeriodEnd",
            "BillingCurrency",
            "ServiceName",
            "ProviderName",
            "Tags",
            "BillingPeriodStart",
            "ChargeSubcategory",
        ]
    ),
    values=wrong_columns,
)
@example(column="Tags", values=pa.array([[1, 2]] * _ROWS, pa.list_(pa.int64())))  # crashed: dict() of a list of ints
def test_focus_parquet_columns_of_any_type(column: str, values: pa.Array) -> None:
    data = _parquet_of(FOCUS, {column: values})
    assert detect_format(data, "fuzz://billing/file.parquet") == "focus"
    _check_billing(parse_focus, data, _ROWS)


@LOADS
@given(
    files=st.lists(
        st.tuples(
            st.sampled_from(["legacy/a.csv", "focus/b.csv", "focus/c.csv.gz", "focus/d.parquet"]),
            st.one_of(byte_mutations(FOCUS), csv_cell_mutations(LEGACY).map(lambda m: m[0]), st.binary(max_size=100)),
        ),
        min_size=1,
        max_size=3,
        unique_by=lambda f: f[0],
    )
)
def test_billing_folder_load_reconciles(con, files: list[tuple[str, bytes]]) -> None:
    con.execute("DELETE FROM raw.billing_line_items")
    with _folder({k: (gzip.compress(v, mtime=0) if k.endswith(".gz") else v) for k, v in files}) as root:
        before = _quarantined(con)
        result = load_billing_files(con, LocalStorage(root))
        assert result.reconciled, result
        assert con.execute("SELECT count(*) FROM raw.billing_line_items").fetchall()[0][0] == result.rows_loaded
        assert _quarantined(con) - before == result.rows_quarantined


# --- metric Parquet files ----------------------------------------------------------------------------


def _metric_day_file(frame: pl.DataFrame | pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(frame.to_arrow() if isinstance(frame, pl.DataFrame) else frame, buf)
    return buf.getvalue()


_START = warehouse.day_bounds_utc(DAY)[0]
VALID_METRIC = pl.DataFrame(
    {
        "ts": [_START + timedelta(minutes=m) for m in range(4)],
        "niche": ["barber"] * 4,
        "country": ["AR"] * 4,
        "region": ["cordoba"] * 4,
        "service": ["web"] * 4,
        "route": ["/"] * 4,
        "code": ["200"] * 4,
        "le": [None] * 4,
        "group": [None] * 4,
        "value": [0.0, 5.0, 2.0, 9.0],
    },
    schema=SAMPLE_SCHEMA,
)


metric_columns = st.sampled_from(
    [
        ("value", pa.array(["1.5", "abc", None, "2"])),
        ("value", pa.array([1, 2, 3, 4])),
        ("value", pa.array([True, False, None, True])),
        ("value", pa.array([float("nan"), float("inf"), -1.0, 2.0])),
        ("value", pa.array([None] * 4, pa.null())),
        ("ts", pa.array([1, 2, 3, 4])),
        ("ts", pa.array(["a", "b", None, "d"])),
        ("ts", pa.array([None, None, None, None], pa.timestamp("us", "UTC"))),
        ("ts", pa.array([datetime(2026, 11, 2, 4, m) for m in range(4)], pa.timestamp("ms"))),
        ("niche", pa.array([1, 2, 3, 4])),
        ("le", pa.array([0.1, 0.5, None, float("inf")])),
        ("code", pa.array([[1], [2], [], None], pa.list_(pa.int64()))),
        ("extra", pa.array(["x"] * 4)),
    ]
)


@LOADS
@given(
    data=st.one_of(
        st.binary(max_size=200),
        byte_mutations(_metric_day_file(VALID_METRIC)),
        st.lists(metric_columns, min_size=1, max_size=3).map(
            lambda cols: _metric_day_file(_replace(VALID_METRIC.to_arrow(), cols))
        ),
    ),
    metric=st.sampled_from(["http_requests_total", "active_sessions"]),
)
@example(
    data=_metric_day_file(_replace(VALID_METRIC.to_arrow(), [("value", pa.array(["1.5", "abc", None, "2"]))])),
    metric="http_requests_total",
)  # crashed: polars cast error, file not named
@example(
    data=_metric_day_file(VALID_METRIC.with_columns(pl.col("ts") + timedelta(days=3))), metric="active_sessions"
)  # samples of another day in this day's file: were silently never loaded
@example(data=FLATBUFFER_DAMAGE, metric="http_requests_total")  # pyarrow refuses its footer, polars reads it:
#                                                               the limits were skipped (deep run)
def test_metric_file_loads_or_is_quarantined_by_name(con, data: bytes, metric: str) -> None:
    key = f"{metric}/date={DAY.isoformat()}/part-0.parquet"
    with _folder({key: data}) as root:
        reader = FileMetricsReader(LocalStorage(root))
        before = _quarantined(con)
        result = load_metrics_day(con, reader, DAY)
        assert result.reconciled, result
        new = con.execute("SELECT source_file, row_number, reason FROM quarantine.rows OFFSET ?", [before]).fetchall()
        assert len(new) == result.rows_quarantined
        assert all(f == reader.describe(metric, DAY) and r for f, _, r in new)
        if result.files == len(METRICS):  # the file was read: each of its rows is read and accounted for
            assert result.rows_read == pl.read_parquet(io.BytesIO(data)).height


# --- Prometheus query_range answers (a real HTTP server on loopback) -----------------------------------


class _Answers:
    """What the loopback server answers next: (status, body) per POST, the last one repeated."""

    def __init__(self) -> None:
        self.queue: list[tuple[int, bytes]] = []
        self.lock = threading.Lock()

    def next(self) -> tuple[int, bytes]:
        with self.lock:
            return self.queue.pop(0) if len(self.queue) > 1 else self.queue[0]


@pytest.fixture(scope="module")
def prometheus_stub() -> Iterator[tuple[str, _Answers]]:
    answers = _Answers()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, body = answers.next()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", answers
    server.shutdown()
    server.server_close()


def _matrix(result: Any) -> bytes:
    return json.dumps({"status": "success", "data": {"resultType": "matrix", "result": result}}).encode()


_T0 = _START.timestamp()
series_labels = st.one_of(
    st.fixed_dictionaries(
        {
            "__name__": st.just("http_requests_total"),
            "niche": st.sampled_from(["barber", "psychology"]),
            "code": st.sampled_from(["200", "500"]),
        }
    ),
    json_values,
)
sample_points = st.lists(
    st.one_of(
        st.tuples(
            st.integers(0, 3).map(lambda m: _T0 + 60 * m), st.sampled_from(["1", "2.5", "NaN", "+Inf", "-1", "x", ""])
        ),
        json_values,
    ),
    max_size=4,
)
prometheus_bodies = st.one_of(
    st.binary(max_size=80),
    st.lists(
        st.one_of(st.fixed_dictionaries({"metric": series_labels, "values": sample_points}), json_values), max_size=3
    ).map(_matrix),
    json_values.map(lambda v: json.dumps(v).encode()),
    json_values.map(lambda v: json.dumps({"status": "success", "data": v}).encode()),
    json_values.map(lambda v: json.dumps({"status": "error", "errorType": v, "error": v}).encode()),
)


@FAST
@given(status=st.sampled_from([200, 200, 200, 400, 422]), body=prometheus_bodies, fresh=prometheus_bodies)
@example(status=200, body=b"[]", fresh=b"[]")  # crashed: a JSON array has no .get
@example(status=200, body=_matrix([{"metric": {}, "values": [[1e300, "1"]]}]), fresh=_matrix([]))
def test_prometheus_answer_gives_samples_or_a_named_error(
    prometheus_stub, status: int, body: bytes, fresh: bytes
) -> None:
    url, answers = prometheus_stub
    answers.queue = [(status, body), (status, fresh)]
    source = PrometheusSource(url, PrometheusClient(url, max_retries=0, timeout_seconds=5))
    try:
        frame = source.samples("http_requests_total", _START, _START + timedelta(minutes=4))
    except PrometheusError as exc:
        assert str(exc).startswith(("Prometheus http://127.0.0.1", "http://127.0.0.1")), exc
        return
    assert dict(frame.schema) == SAMPLE_SCHEMA
    assert frame.height == 0 or frame["ts"].is_between(_START, _START + timedelta(minutes=4), closed="left").all()


# --- the catalog -------------------------------------------------------------------------------------

VALID_CATALOG = yaml.safe_load(DEFAULT_CATALOG_PATH.read_text(encoding="utf-8"))


def _catalog_paths(obj: Any, prefix: tuple = (), depth: int = 0) -> list[tuple]:
    out = [prefix] if prefix else []
    if depth >= 4:
        return out
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else []
    for k, v in items:
        out += _catalog_paths(v, (*prefix, k), depth + 1)
    return out


CATALOG_PATHS = _catalog_paths(VALID_CATALOG)
yaml_values = st.recursive(
    st.one_of(json_scalars, st.dates(), st.just(float("nan")), st.just(float("inf"))),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6,
)


@st.composite
def mutated_catalog(draw: st.DrawFn) -> Any:
    """The real catalog with a few entries replaced by values of any YAML type, or removed."""
    data = json.loads(json.dumps(VALID_CATALOG, default=str))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(CATALOG_PATHS))
        parent = data
        for k in path[:-1]:
            try:
                parent = parent[k]
            except (KeyError, IndexError, TypeError):
                parent = None
                break
        if not isinstance(parent, dict | list):
            continue
        try:
            if draw(st.booleans()):
                parent[path[-1]] = draw(yaml_values)
            elif isinstance(parent, dict):
                parent.pop(path[-1], None)
            else:
                parent.pop(path[-1])
        except (IndexError, TypeError, KeyError):
            continue
    return data


@FAST
@given(data=st.one_of(yaml_values, mutated_catalog()))
@example(data={**VALID_CATALOG, "niches": [["not", "a", "mapping"]]})  # crashed: AttributeError
@example(data={**VALID_CATALOG, "countries": [{**VALID_CATALOG["countries"][0], "regions": [{}]}]})  # KeyError
def test_catalog_builds_or_raises_catalog_error(data: Any) -> None:
    try:
        catalog = parse_catalog(data, Path("fuzz/catalog.yaml"))
    except CatalogError as exc:
        assert str(exc)
        return
    # a catalog that builds has well-formed ids everywhere
    assert all(
        isinstance(x.id, str) and x.id
        for x in (
            *catalog.niches,
            *catalog.countries,
            *catalog.regions,
            *catalog.services,
            *catalog.kpis,
            *catalog.slos,
        )
    )


@FAST
@given(text=st.one_of(st.binary(max_size=200), byte_mutations(DEFAULT_CATALOG_PATH.read_bytes()[:3000])))
@example(text=b"timezone: \xff\n")  # crashed: UnicodeDecodeError instead of CatalogError
def test_catalog_file_of_any_bytes(text: bytes) -> None:
    with _folder({"catalog.yaml": text}) as root:
        try:
            load_catalog(Path(root) / "catalog.yaml")
        except CatalogError as exc:
            assert str(exc)


def test_valid_files_parse_to_rows(con) -> None:
    """The unmutated bases of the properties above load fully (so the properties are not vacuous)."""
    assert parse_cur_legacy(LEGACY, "x").line_items.height == 7
    assert parse_focus(FOCUS, "x").line_items.height == _ROWS
    tz, sensitive = ZoneInfo(load_catalog().timezone), frozenset(load_catalog().sensitive_niches)
    assert parse_event(json.dumps(_event(1, "payment.updated")).encode(), KEY, tz, sensitive).payment is not None
    with _folder({FX_KEY: FX_VALID}) as root:
        assert load_fx(con, LocalStorage(root)).rows_loaded == 3
    assert parse_catalog(VALID_CATALOG).niche_ids[0] == "barber"
