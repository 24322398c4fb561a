"""Where source files live: a local folder or an S3 bucket, behind one small interface.

Loaders only ever call :class:`Storage` methods, so switching a source from a local folder to S3 is a
configuration change (see ``pipelines/lib/sources/s3.py`` for :class:`S3Storage`).
"""

from __future__ import annotations

import io
import zlib
from pathlib import Path
from typing import Protocol, runtime_checkable

from pipelines.lib import limits


class SourceError(RuntimeError):
    """A source file or server could not be read; the message names the file (or URL) and the problem."""


class InputTooLarge(SourceError):
    """A source file is past a configured size limit (``pipelines.lib.limits``); the message names the file,
    the limit and the variable that sets it. Loaders quarantine the file and go on with the others."""


_CHUNK = 1024 * 1024


def too_large(
    where: str, what: str, limit: int, name: str, size: int | None = None, unit: str = "bytes"
) -> InputTooLarge:
    """The error for ``where`` past the limit ``name`` (a :class:`~pipelines.lib.limits.Limits` field)."""
    fmt = limits.human if unit == "bytes" else (lambda n: f"{n:,} {unit}")
    got = f" ({fmt(size)})" if size is not None else ""
    return InputTooLarge(f"{where}: {what}{got} exceeds the limit of {fmt(limit)} ({limits.ENV[name]}); refused")


def read_limited(stream: io.BufferedIOBase | object, where: str, size: int | None = None) -> bytes:
    """Read a file-like object, refusing it once it is past ``max_file_bytes`` (never more is read)."""
    limit = limits.current().max_file_bytes
    if size is not None and size > limit:
        raise too_large(where, "file", limit, "max_file_bytes", size)
    # Read in steps: read(n) allocates n bytes up front, so one read(limit + 1) would reserve the limit.
    parts, total = [], 0
    while True:
        piece = stream.read(min(_CHUNK * 8, limit + 1 - total))  # type: ignore[attr-defined]
        if not piece:
            break
        parts.append(piece)
        total += len(piece)
        if total > limit:
            raise too_large(where, "file", limit, "max_file_bytes")
    return parts[0] if len(parts) == 1 else b"".join(parts)


def gunzip_limited(data: bytes, where: str) -> tuple[bytes, str | None]:
    """Decompress a (possibly multi-member) gzip in bounded chunks.

    Returns the bytes and ``None``, or on damage the bytes before it and the problem ("corrupt gzip
    (...)" / "truncated gzip ..."). Raises :class:`InputTooLarge` as soon as the output passes
    ``max_expanded_bytes`` (a gzip bomb is never expanded past the limit).
    """
    limit = limits.current().max_expanded_bytes
    out: list[bytes] = []
    total = 0
    rest = data
    while rest:
        d = zlib.decompressobj(wbits=31)
        pending = rest
        while True:
            try:
                piece = d.decompress(pending, _CHUNK)
            except zlib.error as exc:
                return b"".join(out), f"corrupt gzip ({exc})"
            total += len(piece)
            if total > limit:
                raise too_large(where, "gzip content", limit, "max_expanded_bytes")
            out.append(piece)
            if d.eof:
                break
            pending = d.unconsumed_tail
            if not piece and not pending:
                return b"".join(out), "truncated gzip (unexpected end of file)"
        rest = d.unused_data
    return b"".join(out), None


def check_columns(count: int, where: str) -> None:
    """Refuse a table (CSV header, Parquet schema) with more than ``max_columns`` columns."""
    limit = limits.current().max_columns
    if count > limit:
        raise too_large(where, "column count", limit, "max_columns", count, unit="columns")


def check_parquet(data: bytes, where: str) -> None:
    """Refuse a Parquet file whose footer declares more rows, row groups or columns than the limits,
    before any row is decoded. A footer that cannot be read is left to the reader (which names the damage)."""
    import polars as pl
    import pyarrow as pa
    import pyarrow.parquet as pq

    groups: int | None
    try:
        meta = pq.read_metadata(io.BytesIO(data))
        rows, groups, columns = meta.num_rows, meta.num_row_groups, meta.num_columns
    except (pa.ArrowException, OSError, ValueError):
        # pyarrow refuses some footers polars reads (a damaged embedded Arrow schema): count with polars,
        # from the footer too, so such a file cannot slip past the limits into the polars reader.
        try:
            rows = pl.scan_parquet(io.BytesIO(data)).select(pl.len()).collect().item()
            columns, groups = len(pl.read_parquet_schema(io.BytesIO(data))), None
        except Exception:  # noqa: BLE001 - unreadable by both: the reader names the damage
            return
    lim = limits.current()
    if rows > lim.max_parquet_rows:
        raise too_large(where, "Parquet row count", lim.max_parquet_rows, "max_parquet_rows", rows, unit="rows")
    if groups is not None and groups > lim.max_parquet_row_groups:
        raise too_large(
            where,
            "Parquet row group count",
            lim.max_parquet_row_groups,
            "max_parquet_row_groups",
            groups,
            unit="row groups",
        )
    check_columns(columns, where)


@runtime_checkable
class Storage(Protocol):
    def list(self, prefix: str = "") -> list[str]:
        """Keys (relative, '/'-separated) under ``prefix``, sorted."""
        ...

    def read_bytes(self, key: str) -> bytes:
        """The whole object; raises :class:`SourceError` if missing or unreadable, :class:`InputTooLarge`
        past ``max_file_bytes`` (without reading more than the limit)."""
        ...

    def exists(self, key: str) -> bool: ...

    def describe(self, key: str) -> str:
        """A human-readable location for messages (a path or ``s3://bucket/key``)."""
        ...


class LocalStorage:
    """Source files in a local folder (the default; what ``make run`` uses)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def list(self, prefix: str = "") -> list[str]:
        base = self.root / prefix
        if base.is_file():
            return [prefix]
        if not base.exists():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())

    def read_bytes(self, key: str) -> bytes:
        path = self.root / key
        try:
            with path.open("rb") as fh:
                return read_limited(fh, self.describe(key), path.stat().st_size)
        except OSError as exc:
            raise SourceError(f"{self.describe(key)}: cannot read ({exc.strerror or exc})") from exc

    def exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    def describe(self, key: str) -> str:
        return str(self.root / key)

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"
