"""Where source files live: a local folder or an S3 bucket, behind one small interface.

Loaders only ever call :class:`Storage` methods, so switching a source from a local folder to S3 is a
configuration change (see ``pipelines/lib/sources/s3.py`` for :class:`S3Storage`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable


class SourceError(RuntimeError):
    """A source file or server could not be read; the message names the file (or URL) and the problem."""


@runtime_checkable
class Storage(Protocol):
    def list(self, prefix: str = "") -> list[str]:
        """Keys (relative, '/'-separated) under ``prefix``, sorted."""
        ...

    def read_bytes(self, key: str) -> bytes:
        """The whole object; raises :class:`SourceError` if missing or unreadable."""
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
        try:
            return (self.root / key).read_bytes()
        except OSError as exc:
            raise SourceError(f"{self.describe(key)}: cannot read ({exc.strerror or exc})") from exc

    def exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    def describe(self, key: str) -> str:
        return str(self.root / key)

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"
