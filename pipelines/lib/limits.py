"""Input size limits: how big a source file may be before Pulso refuses it (instead of exhausting memory).

One place for every limit; each can be overridden by an environment variable (read at each load, so a
changed value applies to the next run). Sizes accept a plain number of bytes or a ``K``/``M``/``G``
suffix (binary: ``64M`` = 64 MiB).

| limit | variable | default | checked where |
|---|---|---|---|
| file size as stored | ``PULSO_MAX_FILE_BYTES`` | 1 GiB | every read from a local folder or S3 |
| size after gunzip | ``PULSO_MAX_EXPANDED_BYTES`` | 2 GiB | events ``.jsonl.gz``, billing ``.csv.gz`` (decompressed in bounded chunks) |
| one JSON line | ``PULSO_MAX_LINE_BYTES`` | 1 MiB | event lines (an event is ~1 KB) |
| columns | ``PULSO_MAX_COLUMNS`` | 2,000 | CSV headers (legacy CUR, FOCUS, FX), Parquet schemas |
| Parquet rows | ``PULSO_MAX_PARQUET_ROWS`` | 50,000,000 | Parquet footers, before any row is decoded |
| Parquet row groups | ``PULSO_MAX_PARQUET_ROW_GROUPS`` | 10,000 | Parquet footers |

The defaults are far above real files (month-6 scale: a day's histogram file ~1 M rows, an event line
~1 KB, a legacy CUR ~200 columns) and far below what would exhaust a pipeline host. What happens to a
refused file: it is quarantined as one row naming the file and the limit, and the rest of the load lands
(``docs/sources.md``, "Limits").
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int = 1024**3
    max_expanded_bytes: int = 2 * 1024**3
    max_line_bytes: int = 1024**2
    max_columns: int = 2_000
    max_parquet_rows: int = 50_000_000
    max_parquet_row_groups: int = 10_000


#: Environment variable of each limit.
ENV = {f.name: "PULSO_" + f.name.upper() for f in fields(Limits)}


def parse_size(text: str, variable: str) -> int:
    """``"1048576"``, ``"64M"``, ``"2G"``, ``"512KiB"`` → bytes; anything else is a ``ValueError`` naming
    the variable."""
    raw = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = raw[-1:] if raw[-1:] in ("K", "M", "G") else ""
    number = raw[: len(raw) - len(unit)].strip().replace("_", "")
    if not number.isdigit() or int(number) <= 0:
        raise ValueError(f"{variable}={text!r}: expected a positive whole number, optionally with K, M or G")
    return int(number) * _UNITS[unit]


def current() -> Limits:
    """The limits in force: the defaults, overridden by any ``PULSO_MAX_*`` variable that is set."""
    overrides = {name: parse_size(os.environ[var], var) for name, var in ENV.items() if os.environ.get(var, "").strip()}
    return Limits(**overrides)


def human(size: int) -> str:
    """Bytes for messages: ``1 GiB``, ``64 MiB``, ``1.5 KiB``, ``900 bytes``."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor:
            return f"{size / factor:.3g} {unit}"
    return f"{size} bytes"
