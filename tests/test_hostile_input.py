"""Huge or hostile input is refused with a clear error rather than exhausting memory (issue #7 item 7).

Each hostile file sits next to a good one: the hostile file is quarantined as one row naming the file,
the limit and the variable that sets it (``pipelines/lib/limits.py``), the good file still lands, and the
counts reconcile. Memory is checked functionally: Python allocations with ``tracemalloc`` (gzip output
and file reads are Python bytes), and the whole process's peak RSS (``resource.getrusage``) in a fresh
subprocess for the bombs whose expansion would happen in native code (Parquet decoding) — each bound is
far below what the bomb expands to.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
import tracemalloc
import zlib
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.lib import limits, warehouse
from pipelines.lib.ingest.billing import ensure_billing_tables
from pipelines.lib.ingest.events import load_events_day
from pipelines.lib.ingest.fx import load_fx
from pipelines.lib.ingest.metrics import FileMetricsReader, load_metrics_day
from pipelines.lib.sources.billing_load import load_billing_files
from pipelines.lib.sources.s3 import S3Storage
from pipelines.lib.storage import InputTooLarge, LocalStorage
from tests.fixtures.sources.servers import moto_endpoint, new_bucket, s3_env

__all__ = ["moto_endpoint", "s3_env"]  # pytest fixtures used by name below

KEY = b"hostile-pseudonym-key"
DAY = date(2026, 11, 2)
MiB = 1024 * 1024
FOCUS = (Path(__file__).parent / "fixtures" / "sources" / "focus-1.2-multi-provider.csv").read_bytes()
FOCUS_ROWS = 9


def event_line(i: int) -> bytes:
    return json.dumps(
        {
            "event_id": f"e{i}",
            "type": "booking.created",
            "occurred_at": "2026-11-02T15:00:00.000Z",
            "niche": "barber",
            "country": "AR",
            "region": "cordoba",
            "user": {"id": f"u{i}"},
            "payload": {"booking_id": f"b{i}", "price_ars": 1000.5},
        }
    ).encode()


def gzip_bomb(line: bytes, expanded: int) -> bytes:
    """A small gzip that expands to ``expanded`` bytes of repeated ``line``s (compressed in 1 MiB steps)."""
    block = (line + b"\n") * (MiB // (len(line) + 1))
    co = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [co.compress(block) for _ in range(expanded // len(block) + 1)]
    return b"".join([*parts, co.flush()])


@pytest.fixture(scope="module")
def warm(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Run each loader once on good input first, so one-time allocations (the catalog, lazily imported
    modules) are not counted as the hostile file's memory."""
    root = tmp_path_factory.mktemp("warm")
    write(root, f"events/date={DAY.isoformat()}/part-0000.jsonl.gz", gzip.compress(event_line(1) + b"\n"))
    write(root, "billing/focus/good.csv.gz", gzip.compress(FOCUS))
    c = warehouse.connect(":memory:")
    ensure_billing_tables(c)
    load_events_day(c, LocalStorage(root / "events"), DAY, key=KEY)
    load_billing_files(c, LocalStorage(root / "billing"))
    c.close()


def python_peak(fn: Callable[[], Any]) -> tuple[Any, int]:
    """``fn()`` and the peak of Python allocations during it (bytes)."""
    tracemalloc.start()
    try:
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    c = warehouse.connect(":memory:")
    ensure_billing_tables(c)
    yield c
    c.close()


def quarantined(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    return con.execute(
        "SELECT source_file, row_number, reason FROM quarantine.rows ORDER BY source_file, row_number"
    ).fetchall()


def write(root: Path, key: str, data: bytes) -> Path:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# --- limits configuration ------------------------------------------------------------------------------


def test_limits_come_from_one_place_with_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    assert limits.current() == limits.Limits()  # defaults when nothing is set
    monkeypatch.setenv("PULSO_MAX_FILE_BYTES", "64M")
    monkeypatch.setenv("PULSO_MAX_COLUMNS", "300")
    monkeypatch.setenv("PULSO_MAX_EXPANDED_BYTES", "512KiB")
    got = limits.current()
    assert (got.max_file_bytes, got.max_columns, got.max_expanded_bytes) == (64 * MiB, 300, 512 * 1024)
    assert got.max_line_bytes == limits.Limits().max_line_bytes  # the others keep their defaults
    monkeypatch.setenv("PULSO_MAX_LINE_BYTES", "lots")
    with pytest.raises(ValueError, match="PULSO_MAX_LINE_BYTES='lots'"):
        limits.current()


# --- a file past the size limit ------------------------------------------------------------------------


def test_file_past_the_size_limit_is_refused_without_being_read(tmp_path: Path, con, monkeypatch, warm) -> None:
    monkeypatch.setenv("PULSO_MAX_FILE_BYTES", "1M")
    folder = f"date={DAY.isoformat()}"
    big = b"\n".join(event_line(i) for i in range(100_000)) + b"\n"  # ~18 MB of valid events
    assert len(big) > 16 * MiB
    write(tmp_path, f"{folder}/part-0000.jsonl", big)
    write(tmp_path, f"{folder}/part-0001.jsonl", b"\n".join(event_line(i) for i in range(200_000, 200_003)) + b"\n")
    storage = LocalStorage(tmp_path)
    result, peak = python_peak(lambda: load_events_day(con, storage, DAY, key=KEY))
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (4, 3, 1) and result.reconciled
    ((where, row, reason),) = quarantined(con)
    assert where == storage.describe(f"{folder}/part-0000.jsonl") and row is None
    assert (
        reason == f"{where}: file ({limits.human(len(big))}) exceeds the limit of 1 MiB (PULSO_MAX_FILE_BYTES); refused"
    )
    assert con.execute("SELECT count(*) FROM raw.events").fetchall() == [(3,)]  # the good file landed
    print(f"file past the limit: Python peak {peak / MiB:.2f} MiB")
    assert peak < 4 * MiB  # never read: at most the limit, far below the 18 MB file


def test_s3_object_past_the_size_limit_is_refused(s3_env: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PULSO_MAX_FILE_BYTES", "1M")
    new_bucket("hostile")
    storage = S3Storage("hostile", "billing")
    storage.write_bytes("focus/huge.csv", FOCUS + b"\n" * (3 * MiB))
    storage.write_bytes("focus/good.csv", FOCUS)
    con = warehouse.connect(":memory:")
    ensure_billing_tables(con)
    result = load_billing_files(con, storage)
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (FOCUS_ROWS + 1, FOCUS_ROWS, 1)
    ((where, _, reason),) = quarantined(con)
    assert where == "s3://hostile/billing/focus/huge.csv"
    assert reason.startswith("s3://hostile/billing/focus/huge.csv: file (") and "PULSO_MAX_FILE_BYTES" in reason
    with pytest.raises(InputTooLarge, match="exceeds the limit of 1 MiB"):
        storage.read_bytes("focus/huge.csv")


# --- gzip bombs ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def events_bomb() -> bytes:
    bomb = gzip_bomb(event_line(7), 256 * MiB)
    assert len(bomb) < 2 * MiB  # small on disk ...
    return bomb


def test_event_gzip_bomb_is_refused_in_bounded_chunks(
    tmp_path: Path, con, monkeypatch, events_bomb: bytes, warm
) -> None:
    monkeypatch.setenv("PULSO_MAX_EXPANDED_BYTES", "8M")
    folder = f"date={DAY.isoformat()}"
    write(tmp_path, f"{folder}/part-0000.jsonl.gz", events_bomb)  # ... expanding to 256 MiB
    write(tmp_path, f"{folder}/part-0001.jsonl.gz", gzip.compress(event_line(1) + b"\n" + event_line(2) + b"\n"))
    storage = LocalStorage(tmp_path)
    result, peak = python_peak(lambda: load_events_day(con, storage, DAY, key=KEY))
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (3, 2, 1) and result.reconciled
    ((where, _, reason),) = quarantined(con)
    assert reason == f"{where}: gzip content exceeds the limit of 8 MiB (PULSO_MAX_EXPANDED_BYTES); refused"
    assert where.endswith("part-0000.jsonl.gz")
    assert con.execute("SELECT event_id FROM raw.events ORDER BY 1").fetchall() == [("e1",), ("e2",)]
    print(f"events gzip bomb: Python peak {peak / MiB:.2f} MiB")
    assert peak < 24 * MiB  # a bounded multiple of the 8 MiB limit, never the bomb's 256 MiB


def test_billing_csv_gzip_bomb_is_refused(tmp_path: Path, con, monkeypatch, warm) -> None:
    monkeypatch.setenv("PULSO_MAX_EXPANDED_BYTES", "4M")
    write(tmp_path, "focus/bomb.csv.gz", _csv_bomb(64 * MiB))
    write(tmp_path, "focus/good.csv", FOCUS)
    storage = LocalStorage(tmp_path)
    result, peak = python_peak(lambda: load_billing_files(con, storage))
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (FOCUS_ROWS + 1, FOCUS_ROWS, 1)
    ((where, _, reason),) = quarantined(con)
    assert where == storage.describe("focus/bomb.csv.gz")
    assert reason == f"{where}: gzip content exceeds the limit of 4 MiB (PULSO_MAX_EXPANDED_BYTES); refused"
    print(f"billing gzip bomb: Python peak {peak / MiB:.2f} MiB")
    assert peak < 16 * MiB


def _csv_bomb(expanded: int) -> bytes:
    """A FOCUS header then a valid row repeated: a .csv.gz expanding to ``expanded`` bytes."""
    header, row = FOCUS.splitlines()[:2]
    return gzip.compress(header + b"\n") + gzip_bomb(row, expanded)


# --- one JSON line of many MB ----------------------------------------------------------------------------


def test_a_line_of_many_mb_is_quarantined_unparsed(tmp_path: Path, con, monkeypatch) -> None:
    monkeypatch.setenv("PULSO_MAX_LINE_BYTES", "64K")
    huge = json.loads(event_line(9))
    huge["payload"]["notes"] = "x" * (20 * MiB)
    line = json.dumps(huge).encode()
    key = f"date={DAY.isoformat()}/part-0000.jsonl"
    write(tmp_path, key, event_line(1) + b"\n" + line + b"\n" + event_line(2) + b"\n")
    storage = LocalStorage(tmp_path)
    result = load_events_day(con, storage, DAY, key=KEY)
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (3, 2, 1) and result.reconciled
    ((where, row, reason),) = quarantined(con)
    assert (where, row) == (storage.describe(key), 2)
    assert (
        reason
        == f"{where}: line 2 ({limits.human(len(line))}) exceeds the limit of 64 KiB (PULSO_MAX_LINE_BYTES); refused"
    )
    stored = con.execute('SELECT "row" FROM quarantine.rows').fetchall()[0][0]
    assert len(stored) < 100 and "xxxx" not in stored  # the quarantine does not keep the 20 MB line
    assert con.execute("SELECT event_id FROM raw.events ORDER BY 1").fetchall() == [("e1",), ("e2",)]


# --- thousands of columns ----------------------------------------------------------------------------------


def test_csv_with_thousands_of_columns_is_refused(tmp_path: Path, con) -> None:
    header, *rows = FOCUS.decode().splitlines()
    wide = (
        ",".join([header, *(f"x_{i}" for i in range(10_000))]) + "\n" + "\n".join(r + "," * 10_000 for r in rows) + "\n"
    )
    write(tmp_path, "focus/wide.csv", wide.encode())
    write(tmp_path, "focus/good.csv", FOCUS)
    storage = LocalStorage(tmp_path)
    result = load_billing_files(con, storage)
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (FOCUS_ROWS + 1, FOCUS_ROWS, 1)
    ((where, _, reason),) = quarantined(con)
    n = len(header.split(",")) + 10_000
    assert (
        reason
        == f"{where}: column count ({n:,} columns) exceeds the limit of 2,000 columns (PULSO_MAX_COLUMNS); refused"
    )
    fx = tmp_path / "fx"
    write(
        fx,
        "ars_usd.csv",
        ("date,ars_per_usd," + ",".join(f"c{i}" for i in range(5_000)) + "\n2026-11-02,1000\n").encode(),
    )
    with pytest.raises(InputTooLarge, match=r"ars_usd\.csv: column count \(5,002 columns\) exceeds the limit"):
        load_fx(con, LocalStorage(fx))


# --- Parquet with absurd row counts / row groups ------------------------------------------------------------


def metric_frame(n: int, day: date = DAY) -> pl.DataFrame:
    start = warehouse.day_bounds_utc(day)[0]
    return pl.DataFrame(
        {
            "ts": [start + timedelta(minutes=i % 1440) for i in range(n)],
            "niche": ["barber"] * n,
            "country": ["AR"] * n,
            "region": ["cordoba"] * n,
            "value": [1.0] * n,
        }
    )


def test_parquet_with_too_many_row_groups_is_refused_before_decoding(tmp_path: Path, con, monkeypatch) -> None:
    monkeypatch.setenv("PULSO_MAX_PARQUET_ROW_GROUPS", "50")
    path = write(tmp_path, f"active_sessions/date={DAY.isoformat()}/part-0.parquet", b"")
    pq.write_table(metric_frame(500).to_arrow(), path, row_group_size=2)  # 250 row groups
    good = metric_frame(3).with_columns(pl.lit("psychology").alias("niche"))
    good.write_parquet(write(tmp_path, f"probe_success/date={DAY.isoformat()}/part-0.parquet", b""))
    reader = FileMetricsReader(LocalStorage(tmp_path))
    result = load_metrics_day(con, reader, DAY)
    assert result.reconciled and result.rows_quarantined == 1 and result.rows_loaded == 3
    ((where, _, reason),) = quarantined(con)
    assert reason == (
        f"{where}: Parquet row group count (250 row groups) exceeds the limit of 50 row groups "
        "(PULSO_MAX_PARQUET_ROW_GROUPS); refused"
    )
    assert where == reader.describe("active_sessions", DAY)


def parquet_bomb(path: Path, rows: int) -> None:
    """A metric file declaring ``rows`` rows of constant values: a few KB on disk (run-length encoded),
    ``rows`` x 16+ bytes once decoded."""
    start = warehouse.day_bounds_utc(DAY)[0]
    batch = 1_000_000
    table = pa.table(
        {
            "ts": pa.array(np.full(batch, int(start.timestamp() * 1e6), dtype="int64"), pa.timestamp("us", "UTC")),
            "value": pa.array(np.ones(batch)),
        }
    )
    with pq.ParquetWriter(path, table.schema) as writer:
        for _ in range(rows // batch):
            writer.write_table(table, row_group_size=batch)


CHILD = textwrap.dedent("""
    import json, resource, sys
    from datetime import date
    from pathlib import Path
    from pipelines.lib import warehouse
    from pipelines.lib.ingest.events import load_events_day
    from pipelines.lib.ingest.metrics import FileMetricsReader, load_metrics_day
    from pipelines.lib.storage import LocalStorage

    def rss_mib():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    root = Path(sys.argv[1])
    con = warehouse.connect(":memory:")
    out = {}
    # warm-up on the good day: every code path (polars, Arrow, DuckDB) allocated once
    load_metrics_day(con, FileMetricsReader(LocalStorage(root / "good" / "metrics")), date(2026, 11, 1))
    load_events_day(con, LocalStorage(root / "good" / "events"), date(2026, 11, 1), key=b"k")
    out["baseline_mib"] = rss_mib()
    r = load_metrics_day(con, FileMetricsReader(LocalStorage(root / "bomb" / "metrics")), date(2026, 11, 2))
    out["metrics"] = [r.rows_read, r.rows_loaded, r.rows_quarantined, r.warnings]
    r = load_events_day(con, LocalStorage(root / "bomb" / "events"), date(2026, 11, 2), key=b"k")
    out["events"] = [r.rows_read, r.rows_loaded, r.rows_quarantined, r.warnings]
    out["after_mib"] = rss_mib()
    print(json.dumps(out))
""")


def test_bombs_keep_the_process_memory_bounded(tmp_path: Path, events_bomb: bytes) -> None:
    """A Parquet file declaring 60 M rows (default limit 50 M) and a gzip expanding to 256 MiB (limit
    lowered to 8 MiB) in a fresh process: both refused, and the process's peak RSS grows by far less than
    either would take once expanded (60 M rows x 16 bytes = 915 MiB; 256 MiB of text)."""
    good, bomb = tmp_path / "good", tmp_path / "bomb"
    prev = date(2026, 11, 1)
    metric_frame(1440, prev).write_parquet(write(good, f"metrics/active_sessions/date={prev}/part-0.parquet", b""))
    write(good, f"events/date={prev}/part-0000.jsonl.gz", gzip.compress(b"\n".join(event_line(i) for i in range(1000))))
    parquet_bomb(write(bomb, f"metrics/active_sessions/date={DAY}/part-0.parquet", b""), 60_000_000)
    assert (bomb / f"metrics/active_sessions/date={DAY}/part-0.parquet").stat().st_size < 4 * MiB
    write(bomb, f"events/date={DAY}/part-0000.jsonl.gz", events_bomb)
    env = {**os.environ, "PULSO_MAX_EXPANDED_BYTES": "8M", "PYTHONPATH": str(Path(__file__).parents[1])}
    env.pop("PULSO_MAX_PARQUET_ROWS", None)  # the default limit (50 M rows)
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path)], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert (
        out["metrics"][2] == 1
        and "60,000,000 rows" in out["metrics"][3][0]
        and "PULSO_MAX_PARQUET_ROWS" in out["metrics"][3][0]
    )
    assert out["metrics"][0] == out["metrics"][1] + out["metrics"][2]
    assert out["events"][:3] == [1, 0, 1] and "PULSO_MAX_EXPANDED_BYTES" in out["events"][3][0]
    grown = out["after_mib"] - out["baseline_mib"]
    print(f"peak RSS {out['baseline_mib']:.0f} MiB after warm-up, {out['after_mib']:.0f} MiB after both bombs")
    assert grown < 64, out  # MiB: well below 256 MiB (gzip) and ~915 MiB (Parquet) expanded


def test_parquet_rows_limit_names_the_file(tmp_path: Path, con, monkeypatch) -> None:
    monkeypatch.setenv("PULSO_MAX_PARQUET_ROWS", "1000")
    key = f"active_sessions/date={DAY.isoformat()}/part-0.parquet"
    metric_frame(1440).write_parquet(write(tmp_path, key, b""))
    reader = FileMetricsReader(LocalStorage(tmp_path))
    result = load_metrics_day(con, reader, DAY)
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (1, 0, 1)
    assert quarantined(con)[0][2] == (
        f"{reader.describe('active_sessions', DAY)}: Parquet row count (1,440 rows) "
        "exceeds the limit of 1,000 rows (PULSO_MAX_PARQUET_ROWS); refused"
    )


def test_parquet_limits_hold_when_pyarrow_cannot_read_the_footer(tmp_path: Path, con, monkeypatch) -> None:
    """A file whose embedded Arrow schema is damaged (pyarrow refuses the footer, polars reads the rows):
    the row limit is still checked, from polars' reading of the footer."""
    monkeypatch.setenv("PULSO_MAX_PARQUET_ROWS", "3")
    damaged = (Path(__file__).parent / "fixtures" / "sources" / "metric-damaged-arrow-schema.parquet").read_bytes()
    with pytest.raises(OSError, match="flatbuffers"):
        pq.read_metadata(pa.BufferReader(damaged))
    key = f"http_requests_total/date={DAY.isoformat()}/part-0.parquet"
    write(tmp_path, key, damaged)
    reader = FileMetricsReader(LocalStorage(tmp_path))
    result = load_metrics_day(con, reader, DAY)
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (1, 0, 1)
    assert quarantined(con)[0][2] == (
        f"{reader.describe('http_requests_total', DAY)}: Parquet row count (4 rows) "
        "exceeds the limit of 3 rows (PULSO_MAX_PARQUET_ROWS); refused"
    )
