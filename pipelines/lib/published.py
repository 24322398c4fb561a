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
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

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
            entry = new_tables.setdefault(table, {"files": {}})
            described = con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()
            entry["schema"] = [[row[0], row[1]] for row in described]
            for day in days:
                rel = f"{table}/day={day.isoformat()}/part-{publish_id}.parquet"
                target = root / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                n = con.execute(f"SELECT count(*) FROM {relation} WHERE day = ?", [day]).fetchone()[0]
                if n == 0:
                    entry["files"].pop(day.isoformat(), None)
                    continue
                tmp = target.with_name(f".{target.name}.tmp")
                # `day` lives in the folder name (Hive style); the file keeps it too so a reader of one
                # file alone still knows its day.
                con.execute(
                    f"COPY (SELECT * FROM {relation} WHERE day = $day ORDER BY ALL) "
                    f"TO '{_sql_path(tmp)}' (FORMAT parquet, COMPRESSION zstd)",
                    {"day": day},
                )
                os.replace(tmp, target)
                entry["files"][day.isoformat()] = rel
        manifest = {
            "format": FORMAT_VERSION,
            "version": int(current.get("version", 0)) + 1,
            "publish_id": publish_id,
            "published_at": datetime.now(UTC).isoformat(),
            "tables": new_tables,
            **{k: v for k, v in current.items() if k not in {"format", "version", "publish_id", "published_at", "tables"}},
            **(extra or {}),
        }
        crash_point("publish:files-written")  # test-only fault injection (pipelines.lib.faults)
        _write_json_atomic(root / MANIFEST, manifest)
        crash_point("publish:committed")
        _remove_unreferenced(root, manifest)
        return Manifest(root, manifest)


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


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


# --------------------------------------------------------------------------------------------------
# Reader side (exporter, app, alerts, tests)
# --------------------------------------------------------------------------------------------------


class PublishedReader:
    """Reads one consistent published state into an in-memory DuckDB connection.

    ``snapshot()`` returns a connection where every published table is a table of the same name,
    loaded from the files one manifest lists. Threads each take their own ``snapshot().cursor()``. The snapshot is cached until the manifest's version
    changes, so a reader polling every request only pays a ``stat`` of the manifest.
    """

    def __init__(self, root: Path | str | None = None, tables: Iterable[str] | None = None, retries: int = 5):
        self.root = Path(root or default_root())
        self.only = set(tables) if tables else None
        self.retries = retries
        self._key: tuple[int, int] | None = None
        self._con: duckdb.DuckDBPyConnection | None = None
        self._manifest: Manifest | None = None

    def manifest(self) -> Manifest:
        self.snapshot()
        assert self._manifest is not None
        return self._manifest

    def snapshot(self) -> duckdb.DuckDBPyConnection:
        """The current published state; raises :class:`NotPublishedError` when there is none."""
        last_error: Exception | None = None
        for attempt in range(self.retries):
            try:
                st = (self.root / MANIFEST).stat()
            except FileNotFoundError as exc:
                raise NotPublishedError(f"nothing published at {self.root} yet: run `make build`") from exc
            key = (st.st_mtime_ns, st.st_ino)
            if key == self._key and self._con is not None:
                return self._con
            try:
                manifest = read_manifest(self.root)
                con = self._load(manifest)
            except (duckdb.IOException, FileNotFoundError, json.JSONDecodeError) as exc:
                # A publish replaced the manifest and removed files between our reads: read again.
                last_error = exc
                time.sleep(0.05 * (attempt + 1))
                continue
            # The previous connection is not closed here: another thread may still be reading from it;
            # it is freed when the last cursor on it goes.
            self._con, self._manifest, self._key = con, manifest, key
            return con
        raise RuntimeError(f"could not read a consistent published state at {self.root}: {last_error}")

    def _load(self, manifest: Manifest) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(":memory:")
        for table in manifest.tables:
            if self.only is not None and table not in self.only:
                continue
            files = manifest.files(table)
            if files:
                listing = ", ".join(f"'{_sql_path(f)}'" for f in files)
                con.execute(f'CREATE TABLE "{table}" AS SELECT * FROM read_parquet([{listing}], hive_partitioning = false)')
            else:
                cols = ", ".join(f'"{name}" {typ}' for name, typ in manifest.schema(table)) or "day DATE"
                con.execute(f'CREATE TABLE "{table}" ({cols})')
        return con
