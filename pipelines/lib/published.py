"""Published data: what consumers (exporter, dashboards, app, alerts) read, and only that.

Dagster is the only writer of the warehouse (DuckDB). After a run's marts are complete it *publishes*
them here as Hive-partitioned Parquet::

    <root>/<table>/day=YYYY-MM-DD/part-<publish_id>.parquet
    <root>/_manifest.json

The manifest is the commit point. A publish writes new immutable files under fresh names, then replaces
``_manifest.json`` atomically (write, fsync, ``os.replace``), then removes the files no manifest refers
to any more. A reader reads the manifest once and only the files it lists, so it sees one complete
published state: never half a run, never a lock on the warehouse. Files removed under a slow reader
are caught and the read is retried against the newer manifest.

The layout is plain Hive-partitioned Parquet, so Athena/Trino/Spark can read ``<root>/<table>/`` as is
(see docs/scaling.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, NamedTuple

import duckdb

from pipelines.lib.faults import crash_point

MANIFEST = "_manifest.json"
FORMAT_VERSION = 1


def default_root() -> Path:
    """``$PULSO_PUBLISHED`` or ``data/published`` beside the default warehouse."""
    return Path(os.environ.get("PULSO_PUBLISHED", "data/published"))


class NotPublishedError(RuntimeError):
    """Nothing has been published yet at this root."""


@dataclass(frozen=True)
class Manifest:
    root: Path
    data: dict[str, Any]

    @property
    def version(self) -> int:
        return int(self.data["version"])

    @property
    def published_at(self) -> datetime:
        return datetime.fromisoformat(self.data["published_at"])

    @property
    def tables(self) -> dict[str, dict[str, Any]]:
        return self.data["tables"]

    def files(self, table: str) -> list[Path]:
        entry = self.tables.get(table)
        if not entry:
            return []
        return [self.root / rel for _, rel in sorted(entry["files"].items())]

    def days(self, table: str) -> list[date]:
        entry = self.tables.get(table) or {"files": {}}
        return [date.fromisoformat(d) for d in sorted(entry["files"])]

    def schema(self, table: str) -> list[list[str]]:
        return (self.tables.get(table) or {}).get("schema", [])


# --------------------------------------------------------------------------------------------------
# Writer side (Dagster only)
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _publish_lock(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".publish.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_manifest(root: Path | None = None) -> Manifest:
    """The current manifest; raises :class:`NotPublishedError` if nothing was published."""
    root = Path(root or default_root())
    try:
        data = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise NotPublishedError(f"nothing published at {root} yet: run `make build`") from exc
    return Manifest(root, data)


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def publish(
    con: duckdb.DuckDBPyConnection,
    tables: dict[str, str],
    days: Iterable[date],
    root: Path | None = None,
    extra: dict[str, Any] | None = None,
) -> Manifest:
    """Publish ``days`` of each table atomically.

    ``tables`` maps a published table name to a warehouse relation (e.g. ``marts.kpi_daily``) that has
    a ``day DATE`` column. For every day, that day's rows replace the published ones; days not named
    keep their files. A day with no rows is dropped from the table. ``extra`` is stored in the
    manifest (e.g. ``complete_through``, run id).
    """
    root = Path(root or default_root())
    days = sorted(set(days))
    publish_id = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    with _publish_lock(root):
        try:
            current = read_manifest(root).data
        except NotPublishedError:
            current = {"version": 0, "tables": {}}
        new_tables: dict[str, Any] = json.loads(json.dumps(current.get("tables", {})))
        for table, relation in tables.items():
            source = _relation(con, table, relation)
            entry = new_tables.setdefault(table, {"files": {}})
            entry["schema"] = [[name, str(typ)] for name, typ in zip(source.columns, source.types, strict=True)]
            if "day" not in source.columns:
                raise ValueError(f"cannot publish {relation} as {table}: it has no `day` column")
            ordered = source.sort(*(duckdb.ColumnExpression(c) for c in source.columns))
            for day in days:
                rel = f"{table}/day={day.isoformat()}/part-{publish_id}.parquet"
                target = root / rel
                of_day = ordered.filter(duckdb.ColumnExpression("day") == duckdb.ConstantExpression(day))
                if not of_day.limit(1).fetchall():
                    entry["files"].pop(day.isoformat(), None)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.tmp")
                # `day` lives in the folder name (Hive style); the file keeps it too so a reader of one
                # file alone still knows its day.
                of_day.write_parquet(str(tmp), compression="zstd")
                os.replace(tmp, target)
                entry["files"][day.isoformat()] = rel
        manifest = {
            "format": FORMAT_VERSION,
            "version": int(current.get("version", 0)) + 1,
            "publish_id": publish_id,
            "published_at": datetime.now(UTC).isoformat(),
            "tables": new_tables,
            **{
                k: v
                for k, v in current.items()
                if k not in {"format", "version", "publish_id", "published_at", "tables"}
            },
            **(extra or {}),
        }
        crash_point("publish:files-written")  # test-only fault injection (pipelines.lib.faults)
        _write_json_atomic(root / MANIFEST, manifest)
        crash_point("publish:committed")
        _remove_unreferenced(root, manifest)
        return Manifest(root, manifest)


_TABLE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def check_table_name(table: str) -> str:
    """``table`` if it is a valid published table name (lower-case identifier: it is a folder name and
    a SQL identifier of every reader); a clear ``ValueError`` otherwise."""
    if not isinstance(table, str) or not _TABLE_NAME.match(table):
        raise ValueError(f"not a valid published table name: {table!r} (lower-case letters, digits and _)")
    return table


def quote_identifier(name: str) -> str:
    """A SQL identifier in double quotes (embedded quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


def _relation(con: duckdb.DuckDBPyConnection, table: str, relation: str) -> duckdb.DuckDBPyRelation:
    """The warehouse relation ``schema.name`` to publish as ``table``, checked to exist in ``con``.

    Names are checked against the connection's catalog (``duckdb_tables()`` / ``duckdb_views()``, bound
    parameters) and then opened through the relational API, so no name is ever pasted into SQL text.
    """
    check_table_name(table)
    schema, _, name = relation.rpartition(".")
    known = con.execute(
        "SELECT count(*) FROM (SELECT schema_name, table_name FROM duckdb_tables() "
        "UNION ALL SELECT schema_name, view_name FROM duckdb_views()) WHERE schema_name = ? AND table_name = ?",
        [schema or "main", name],
    ).fetchall()[0][0]
    if not known:
        raise ValueError(f"cannot publish {table}: no table or view {relation!r} in the warehouse")
    return con.table(f"{quote_identifier(schema or 'main')}.{quote_identifier(name)}")


def _remove_unreferenced(root: Path, manifest: dict[str, Any]) -> None:
    """Delete files of earlier publishes (and temp files a killed publish left behind)."""
    keep = {rel for entry in manifest["tables"].values() for rel in entry["files"].values()}
    for path in root.glob("*/day=*/*.parquet*"):
        rel = path.relative_to(root).as_posix()
        if rel not in keep:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    for folder in root.glob("*/day=*"):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only succeeds when empty
    # A manifest temp file of a publish killed before its rename (publishes hold the lock: none is live).
    for path in root.glob(f".{MANIFEST}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


# --------------------------------------------------------------------------------------------------
# Reader side (exporter, app, alerts, tests)
# --------------------------------------------------------------------------------------------------


class Snapshot(NamedTuple):
    """One published state: an in-memory connection holding its tables and the manifest it came from."""

    con: duckdb.DuckDBPyConnection
    manifest: Manifest


class PublishedReader:
    """Reads one consistent published state into an in-memory DuckDB connection.

    :meth:`read` returns a :class:`Snapshot`: a connection where every published table (or those named
    in ``tables``) is a table of the same name, loaded from the files of one manifest, together with
    that manifest. ``since`` loads only the days from that day on (a consumer that draws a month need
    not load a year). Threads each take their own ``read().con.cursor()``. The snapshot is cached
    until the manifest file changes, so a reader polling every request only pays a ``stat``.
    """

    def __init__(
        self,
        root: Path | str | None = None,
        tables: Iterable[str] | None = None,
        retries: int = 5,
        since: date | None = None,
    ):
        self.root = Path(root or default_root())
        self.only = {check_table_name(t) for t in tables} if tables else None
        self.since = since
        self.retries = retries
        self._lock = threading.Lock()
        self._key: tuple[int, int] | None = None
        self._snapshot: Snapshot | None = None

    def read(self) -> Snapshot:
        """The current published state and its manifest, from one load (never a mix of two publishes).

        Raises :class:`NotPublishedError` when nothing is published, ``RuntimeError`` when publishes kept
        removing the files being read for ``retries`` attempts.
        """
        with self._lock:
            last_error: Exception | None = None
            for attempt in range(self.retries):
                try:
                    st = (self.root / MANIFEST).stat()
                except FileNotFoundError as exc:
                    raise NotPublishedError(f"nothing published at {self.root} yet: run `make build`") from exc
                key = (st.st_mtime_ns, st.st_ino)
                if key == self._key and self._snapshot is not None:
                    return self._snapshot
                try:
                    manifest = read_manifest(self.root)
                    snapshot = Snapshot(self._load(manifest), manifest)
                except (duckdb.IOException, FileNotFoundError, json.JSONDecodeError) as exc:
                    # A publish replaced the manifest and removed files between our reads: read again.
                    last_error = exc
                    time.sleep(0.05 * (attempt + 1))
                    continue
                # The previous connection is not closed here: another thread may still be reading from
                # it; it is freed when the last cursor on it goes.
                self._snapshot, self._key = snapshot, key
                return snapshot
        raise RuntimeError(f"could not read a consistent published state at {self.root}: {last_error}")

    def snapshot(self) -> duckdb.DuckDBPyConnection:
        """The connection of :meth:`read` (use :meth:`read` when the manifest is needed too)."""
        return self.read().con

    def manifest(self) -> Manifest:
        """The manifest of :meth:`read`."""
        return self.read().manifest

    def files(self, manifest: Manifest, table: str) -> list[Path]:
        """The files of ``table`` this reader loads: every listed day, or those from ``since`` on."""
        entry = manifest.tables.get(table) or {"files": {}}
        return [
            manifest.root / rel
            for day, rel in sorted(entry["files"].items())
            if self.since is None or date.fromisoformat(day) >= self.since
        ]

    def _load(self, manifest: Manifest) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(":memory:")
        for table in manifest.tables:
            if self.only is not None and table not in self.only:
                continue
            check_table_name(table)  # the name comes from the manifest file: checked before it names a table
            files = self.files(manifest, table)
            if files:
                con.read_parquet([str(f) for f in files], hive_partitioning=False).create(quote_identifier(table))
            else:
                con.execute(f"CREATE TABLE {quote_identifier(table)} ({_column_list(manifest.schema(table))})")
        return con


def _column_list(schema: list[list[str]]) -> str:
    """Column definitions of an empty table from a manifest's schema: each name quoted, each type parsed
    by DuckDB and written back in its canonical form (text that is not a type is a clear error)."""
    columns = []
    for name, typ in schema or [["day", "DATE"]]:
        try:
            parsed = str(duckdb.sqltype(typ))
        except duckdb.Error as exc:
            raise ValueError(f"manifest schema: column {name!r} has no valid type ({typ!r})") from exc
        columns.append(f"{quote_identifier(name)} {parsed}")
    return ", ".join(columns)
