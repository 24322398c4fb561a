"""The published store: atomic, incremental publishes; readers see one complete state."""

import json
import threading
from datetime import date, timedelta

import duckdb
import pytest

from pipelines.lib.published import MANIFEST, NotPublishedError, PublishedReader, Snapshot, publish, read_manifest

D1, D2, D3 = date(2026, 11, 25), date(2026, 11, 26), date(2026, 11, 27)


def warehouse(generation: int) -> duckdb.DuckDBPyConnection:
    """A tiny warehouse whose every value equals ``generation`` (so a mixed state is detectable)."""
    con = duckdb.connect()
    con.execute("CREATE SCHEMA marts")
    con.execute(
        "CREATE TABLE marts.kpi_daily AS SELECT d::DATE AS day, k AS kpi, ?::DOUBLE AS value "
        "FROM (VALUES (DATE '2026-11-25'), (DATE '2026-11-26'), (DATE '2026-11-27')) t(d), "
        "(VALUES ('bookings'), ('revenue_usd')) u(k)",
        [generation],
    )
    return con


def test_nothing_published_is_a_clear_error(tmp_path):
    with pytest.raises(NotPublishedError, match="make build"):
        PublishedReader(tmp_path).snapshot()


def test_publish_writes_hive_layout_and_reader_sees_it(tmp_path):
    manifest = publish(
        warehouse(1), {"kpi_daily": "marts.kpi_daily"}, [D1, D2, D3], tmp_path, {"complete_through": "2026-11-27"}
    )
    assert manifest.version == 1
    assert sorted(p.relative_to(tmp_path).parts[:2] for p in tmp_path.glob("kpi_daily/*/*.parquet")) == [
        ("kpi_daily", f"day={d.isoformat()}") for d in (D1, D2, D3)
    ]
    con = PublishedReader(tmp_path).snapshot()
    assert con.execute("SELECT count(*), sum(value) FROM kpi_daily").fetchone() == (6, 6.0)
    assert read_manifest(tmp_path).data["complete_through"] == "2026-11-27"
    # Plain Hive-partitioned Parquet: any engine can read the folder as it is.
    hive = duckdb.read_parquet(f"{tmp_path}/kpi_daily/*/*.parquet", hive_partitioning=True)
    assert hive.aggregate("count(*)").fetchall() == [(6,)]


def test_republishing_a_day_replaces_only_that_day_and_removes_old_files(tmp_path):
    publish(warehouse(1), {"kpi_daily": "marts.kpi_daily"}, [D1, D2, D3], tmp_path)
    before = {p.name for p in tmp_path.glob("kpi_daily/day=2026-11-25/*.parquet")}
    publish(warehouse(5), {"kpi_daily": "marts.kpi_daily"}, [D2], tmp_path)
    con = PublishedReader(tmp_path).snapshot()
    assert con.execute("SELECT day, sum(value) FROM kpi_daily GROUP BY day ORDER BY day").fetchall() == [
        (D1, 2.0),
        (D2, 10.0),
        (D3, 2.0),
    ]
    assert {p.name for p in tmp_path.glob("kpi_daily/day=2026-11-25/*.parquet")} == before
    assert len(list(tmp_path.glob("kpi_daily/day=2026-11-26/*.parquet"))) == 1


def test_a_day_without_rows_is_dropped_and_empty_tables_keep_their_schema(tmp_path):
    con = warehouse(1)
    publish(con, {"kpi_daily": "marts.kpi_daily"}, [D1], tmp_path)
    con.execute("DELETE FROM marts.kpi_daily")
    publish(con, {"kpi_daily": "marts.kpi_daily"}, [D1], tmp_path)
    snap = PublishedReader(tmp_path).snapshot()
    assert snap.execute("SELECT count(*) FROM kpi_daily").fetchone() == (0,)
    assert [c[0] for c in snap.execute("DESCRIBE kpi_daily").fetchall()] == ["day", "kpi", "value"]


def test_leftovers_of_a_killed_publish_are_cleaned_and_never_read(tmp_path):
    publish(warehouse(1), {"kpi_daily": "marts.kpi_daily"}, [D1], tmp_path)
    orphan = tmp_path / "kpi_daily" / "day=2026-11-25" / "part-orphan.parquet"
    orphan.write_bytes(b"half a file")
    part_tmp = tmp_path / "kpi_daily" / "day=2026-11-25" / ".part-x.parquet.tmp"
    part_tmp.write_bytes(b"")
    manifest_tmp = tmp_path / "._manifest.json.0123abcd.tmp"  # killed between writing and renaming it
    manifest_tmp.write_text('{"version": 99, "tables": {}}')
    assert PublishedReader(tmp_path).snapshot().execute("SELECT count(*) FROM kpi_daily").fetchone() == (2,)
    assert read_manifest(tmp_path).version == 1
    publish(warehouse(2), {"kpi_daily": "marts.kpi_daily"}, [D2], tmp_path)
    assert not orphan.exists() and not part_tmp.exists() and not manifest_tmp.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".publish.lock", "_manifest.json", "kpi_daily"]


def test_readers_during_publishes_always_see_one_complete_state(tmp_path):
    """Every read sees all three days from the same publish: never a mix, never an error."""
    publish(warehouse(0), {"kpi_daily": "marts.kpi_daily"}, [D1, D2, D3], tmp_path)
    errors: list[BaseException] = []
    seen: set[tuple] = set()
    stop = threading.Event()

    def read_loop():
        reader = PublishedReader(tmp_path)
        while not stop.is_set():
            try:
                cur = reader.snapshot().cursor()
                rows = cur.execute("SELECT count(*), min(value), max(value) FROM kpi_daily").fetchone()
                seen.add(rows)
            except BaseException as exc:  # noqa: BLE001 - any failure is the finding
                errors.append(exc)
                return

    readers = [threading.Thread(target=read_loop) for _ in range(2)]
    for t in readers:
        t.start()
    for generation in range(1, 16):
        publish(warehouse(generation), {"kpi_daily": "marts.kpi_daily"}, [D1, D2, D3], tmp_path)
    stop.set()
    for t in readers:
        t.join()
    assert errors == []
    assert all(count == 6 and lo == hi for count, lo, hi in seen), seen
    assert read_manifest(tmp_path).version == 16


def test_manifest_lists_days(tmp_path):
    days = [D1 + timedelta(days=i) for i in range(3)]
    publish(warehouse(1), {"kpi_daily": "marts.kpi_daily"}, days, tmp_path)
    assert read_manifest(tmp_path).days("kpi_daily") == days


def test_since_loads_only_the_window_and_read_pairs_connection_with_its_manifest(tmp_path):
    publish(warehouse(1), {"kpi_daily": "marts.kpi_daily"}, [D1, D2, D3], tmp_path)
    snapshot = PublishedReader(tmp_path, since=D2).read()
    assert isinstance(snapshot, Snapshot) and snapshot.manifest.version == 1
    assert snapshot.con.execute("SELECT min(day), count(*) FROM kpi_daily").fetchall() == [(D2, 4)]
    # a window after every published day: the table exists, empty, with the published schema
    later = PublishedReader(tmp_path, since=D3 + timedelta(days=1)).read().con
    assert later.execute("SELECT count(*) FROM kpi_daily").fetchall() == [(0,)]
    assert [c[0] for c in later.execute("DESCRIBE kpi_daily").fetchall()] == ["day", "kpi", "value"]


def test_read_returns_the_manifest_the_connection_was_loaded_from_across_publishes(tmp_path):
    """Each generation writes value = generation and the manifest version = generation: a pair taken by
    ``read()`` must agree, whatever publish lands in between."""
    publish(warehouse(1), {"kpi_daily": "marts.kpi_daily"}, [D1, D2, D3], tmp_path)
    reader = PublishedReader(tmp_path)
    stop = threading.Event()
    pairs: list[tuple[int, float]] = []
    errors: list[BaseException] = []

    def read_loop():
        while not stop.is_set():
            try:
                con, manifest = reader.read()
                pairs.append(
                    (manifest.version, con.cursor().execute("SELECT max(value) FROM kpi_daily").fetchall()[0][0])
                )
            except BaseException as exc:  # noqa: BLE001 - any failure is the finding
                errors.append(exc)
                return

    threads = [threading.Thread(target=read_loop) for _ in range(2)]
    for t in threads:
        t.start()
    for generation in range(2, 12):
        publish(warehouse(generation), {"kpi_daily": "marts.kpi_daily"}, [D1, D2, D3], tmp_path)
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    assert pairs and all(version == value for version, value in pairs), pairs
    assert reader.read().manifest.version == 11


def test_hostile_names_are_refused_before_any_sql(tmp_path):
    con = warehouse(1)
    with pytest.raises(ValueError, match="not a valid published table name"):
        publish(con, {'kpi"; DROP TABLE marts.kpi_daily; --': "marts.kpi_daily"}, [D1], tmp_path)
    with pytest.raises(ValueError, match="no table or view"):
        publish(con, {"kpi_daily": "marts.kpi_daily; DROP TABLE marts.kpi_daily"}, [D1], tmp_path)
    assert con.execute("SELECT count(*) FROM marts.kpi_daily").fetchall() == [(6,)]
    assert not (tmp_path / MANIFEST).exists()
    # a tampered manifest: a table name or a column type that is not one is a clear error, not SQL
    publish(con, {"kpi_daily": "marts.kpi_daily"}, [D1], tmp_path)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    manifest["tables"]['x" AS SELECT 1; --'] = {"files": {}, "schema": [["day", "DATE"]]}
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="not a valid published table name"):
        PublishedReader(tmp_path).read()
    del manifest["tables"]['x" AS SELECT 1; --']
    manifest["tables"]["empty"] = {"files": {}, "schema": [["day", "DATE); DROP TABLE kpi_daily; --"]]}
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="no valid type"):
        PublishedReader(tmp_path).read()
