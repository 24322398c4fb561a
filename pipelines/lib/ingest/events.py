"""App event log (``events/date=YYYY-MM-DD/part-NNNN.jsonl.gz``, one folder per UTC arrival day) → warehouse.

What happens to each line:

- parsed (amounts as exact decimals); a line that is not a valid event is quarantined with its row
  number, the reason and its non-personal fields only (:func:`quarantine_text`); a truncated gzip keeps every complete line before the damage and quarantines
  the rest, naming the file;
- people are pseudonymized: ``user_key = HMAC-SHA256(key, user.id)``, ``professional_id`` is stored as
  ``HMAC-SHA256(key, "professional:" + id)``, and every personal field (user,
  payer, names, e-mails, phones, DNI, license numbers) is dropped here, before anything is stored;
- deduplicated by ``event_id`` (events arrive twice, and late in a later day's folder); the AR day of
  ``occurred_at`` is its day;
- rows of sensitive niches (catalog ``sensitive``; psychology) go to the ``psychology`` schema, the
  rest to ``raw``. ``payment.updated`` events also land in ``<schema>.payment_updates``.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import polars as pl
import pyarrow as pa

from pipelines.lib import limits
from pipelines.lib.catalog import load_catalog
from pipelines.lib.storage import SourceError, Storage, gunzip_limited, too_large
from pipelines.lib.warehouse import LoadResult, QuarantinedRow, quarantine, record_load, table_exists

log = logging.getLogger(__name__)

EVENT_TYPES = (
    "session.started",
    "user.signed_up",
    "booking.created",
    "booking.confirmed",
    "booking.cancelled",
    "booking.completed",
    "booking.no_show",
    "professional.onboarded",
    "payment.updated",
)
KEY_ENV = "PULSO_PSEUDONYM_KEY"

EVENT_COLUMNS: dict[str, pa.DataType] = {
    "event_id": pa.string(),
    "type": pa.string(),
    "occurred_at": pa.timestamp("us", tz="UTC"),
    "day": pa.date32(),
    "arrival_day": pa.date32(),
    "niche": pa.string(),
    "country": pa.string(),
    "region": pa.string(),
    "user_key": pa.string(),
    "session_id": pa.string(),
    "channel": pa.string(),
    "booking_id": pa.string(),
    "professional_id": pa.string(),
    "scheduled_for": pa.timestamp("us", tz="UTC"),
    "price_ars": pa.decimal128(18, 2),
    "license_verified": pa.bool_(),
    "_source_file": pa.string(),
    "_row_number": pa.int64(),
}
PAYMENT_COLUMNS: dict[str, pa.DataType] = {
    "event_id": pa.string(),
    "occurred_at": pa.timestamp("us", tz="UTC"),
    "arrival_day": pa.date32(),
    "niche": pa.string(),
    "country": pa.string(),
    "region": pa.string(),
    "provider": pa.string(),
    "payment_id": pa.string(),
    "status": pa.string(),
    "status_detail": pa.string(),
    "transaction_amount": pa.decimal128(18, 2),
    "transaction_amount_refunded": pa.decimal128(18, 2),
    "currency_id": pa.string(),
    "payment_method_id": pa.string(),
    "payment_type_id": pa.string(),
    "date_created": pa.timestamp("us", tz="UTC"),
    "date_approved": pa.timestamp("us", tz="UTC"),
    "date_last_updated": pa.timestamp("us", tz="UTC"),
    "external_reference": pa.string(),
    "_source_file": pa.string(),
    "_row_number": pa.int64(),
}
_SQL_TYPES = {
    pa.string(): "VARCHAR",
    pa.timestamp("us", tz="UTC"): "TIMESTAMPTZ",
    pa.date32(): "DATE",
    pa.decimal128(18, 2): "DECIMAL(18,2)",
    pa.bool_(): "BOOLEAN",
    pa.int64(): "BIGINT",
}


class EventError(ValueError):
    """A line is not a valid event; the message is the quarantine reason."""


# --- pseudonymization ---------------------------------------------------------------------------------


def pseudonym_key(secrets_dir: Path | None = None) -> bytes:
    """The HMAC key: ``$PULSO_PSEUDONYM_KEY``, else a random key generated once into
    ``<secrets_dir>/pseudonym.key`` (``$PULSO_SECRETS_DIR`` or ``data/.secrets``). Never logged."""
    env = os.environ.get(KEY_ENV)
    if env:
        return env.encode("utf-8")
    folder = secrets_dir or Path(os.environ.get("PULSO_SECRETS_DIR", "data/.secrets"))
    path = folder / "pseudonym.key"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        # O_EXCL: two processes racing both end up with the first one's key.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
        log.info("generated a new pseudonymization key file (set %s to use your own)", KEY_ENV)
    return path.read_text(encoding="utf-8").strip().encode("utf-8")


def user_key(key: bytes, user_id: str) -> str:
    """``HMAC-SHA256(key, user_id)`` as hex: stable per person, not reversible without the key."""
    return hmac.new(key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()


def professional_key(key: bytes, professional_id: str) -> str:
    """The pseudonym stored as ``professional_id``: ``HMAC-SHA256(key, "professional:" + id)`` as hex.
    Professionals are people too (a psychologist's app id is as identifying as a client's); the prefix keeps
    their pseudonyms apart from users' even where the app reuses an id across both."""
    return user_key(key, "professional:" + professional_id)


def _professional(key: bytes, value: Any) -> str | None:
    text = _str(value)
    return professional_key(key, text) if text else None


# What quarantine keeps of a rejected line: the fields the parser reads (none of them personal), the user
# as its pseudonym; everything else (names, e-mails, phones, DNI, payer, licence numbers, unknown fields)
# is withheld, only its field name kept. The source file and row number still locate the whole line.
_QUARANTINE_FIELDS = frozenset({"event_id", "type", "occurred_at", "niche", "country", "region"})
_QUARANTINE_PAYLOAD = frozenset(
    {
        "session_id",
        "channel",
        "booking_id",
        "professional_id",
        "scheduled_for",
        "price_ars",
        "price_usd",
        "license_verified",
        "provider",
    }
)
_QUARANTINE_PAYMENT = frozenset(
    {
        "id",
        "status",
        "status_detail",
        "transaction_amount",
        "transaction_amount_refunded",
        "currency_id",
        "payment_method_id",
        "payment_type_id",
        "date_created",
        "date_approved",
        "date_last_updated",
        "external_reference",
    }
)


def quarantine_text(line: bytes, key: bytes) -> str:
    """The text quarantine stores for a rejected event line, personal data withheld (see above). A line that
    is not a JSON object is withheld whole: nothing in it can be told apart from personal data."""
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return f"[withheld: {len(line)} bytes that are not a valid JSON line; see the source file and row]"
    if not isinstance(obj, dict):
        return f"[withheld: a JSON {type(obj).__name__}, not an object; see the source file and row]"
    withheld: list[str] = []

    def keep(d: dict, allowed: frozenset[str], prefix: str) -> dict[str, Any]:
        out = {}
        for k, v in d.items():
            if k in allowed and (v is None or isinstance(v, str | int | float | bool)):
                out[k] = v
            elif not (prefix == "" and k in ("user", "payload")) and not (prefix == "payload." and k == "payment"):
                withheld.append(prefix + k if len(k) <= 40 else prefix + "(a long field name)")
        return out

    kept = keep(obj, _QUARANTINE_FIELDS, "")
    user = obj.get("user")
    if isinstance(user, dict):
        if user.get("id") not in (None, ""):
            kept["user_key"] = user_key(key, str(user["id"]))
        withheld += [f"user.{k}" if len(k) <= 40 else "user.(a long field name)" for k in user if k != "id"]
    elif user is not None:
        withheld.append("user")
    payload = obj.get("payload")
    if isinstance(payload, dict):
        kept["payload"] = keep(payload, _QUARANTINE_PAYLOAD, "payload.")
        if "professional_id" in kept["payload"]:  # kept as its pseudonym, like the user
            kept["payload"]["professional_id"] = _professional(key, kept["payload"]["professional_id"])
        payment = payload.get("payment")
        if isinstance(payment, dict):
            kept["payload"]["payment"] = keep(payment, _QUARANTINE_PAYMENT, "payload.payment.")
        elif payment is not None:
            withheld.append("payload.payment")
    elif payload is not None:
        withheld.append("payload")
    if withheld:
        kept["_withheld"] = sorted(withheld)
    text = json.dumps(kept, ensure_ascii=False, separators=(",", ":"), default=str)
    return text.encode("utf-8", "replace").decode("utf-8")  # a lone surrogate from a \ud800 escape


# --- parsing ------------------------------------------------------------------------------------------


def _ts(value: Any, what: str) -> datetime:
    if not isinstance(value, str) or not value:
        raise EventError(f"{what} missing or not a string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise EventError(f"{what} is not an ISO timestamp: {value!r}") from exc
    if parsed.tzinfo is None:
        raise EventError(f"{what} has no time zone: {value!r}")
    try:  # at the calendar's edges the UTC (or local day) conversion overflows
        utc = parsed.astimezone(UTC)
        _ = (utc - timedelta(days=2), utc + timedelta(days=2))
    except OverflowError:
        raise EventError(f"{what} is out of range: {value!r}") from None
    return utc


def _opt_ts(value: Any, what: str) -> datetime | None:
    return None if value in (None, "") else _ts(value, what)


_MAX_AMOUNT = Decimal("1e16")  # DECIMAL(18,2) holds 16 integer digits


def _money(value: Any, what: str) -> Decimal | None:
    if value is None:
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation as exc:
        raise EventError(f"{what} is not a number: {value!r}") from exc
    if not amount.is_finite():
        raise EventError(f"{what} is not finite")
    if abs(amount) >= _MAX_AMOUNT:
        raise EventError(f"{what} {value!r:.40} does not fit DECIMAL(18,2)")
    return amount.quantize(Decimal("0.01"))


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass
class ParsedEvent:
    event: dict[str, Any]
    payment: dict[str, Any] | None
    sensitive: bool


def parse_event(line: bytes | str, key: bytes, tz: ZoneInfo, sensitive_niches: frozenset[str]) -> ParsedEvent:
    """One JSON line → the stored event row (personal data dropped) and its payment row, if any."""
    try:
        obj = json.loads(line, parse_float=Decimal)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EventError(f"not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc})") from exc
    if not isinstance(obj, dict):
        raise EventError("not a JSON object")
    event_id, kind = obj.get("event_id"), obj.get("type")
    if not isinstance(event_id, str) or not event_id:
        raise EventError("missing event_id")
    if kind not in EVENT_TYPES:
        raise EventError(f"unknown event type {kind!r}")
    occurred = _ts(obj.get("occurred_at"), "occurred_at")
    niche = obj.get("niche")
    if not isinstance(niche, str) or not niche:
        raise EventError("missing niche")
    user = obj.get("user") or {}
    uid = user.get("id") if isinstance(user, dict) else None
    payload = obj.get("payload") or {}
    if not isinstance(payload, dict):
        raise EventError("payload is not an object")
    event = {
        "event_id": event_id,
        "type": kind,
        "occurred_at": occurred,
        "day": occurred.astimezone(tz).date(),
        "niche": niche,
        "country": _str(obj.get("country")),
        "region": _str(obj.get("region")),
        "user_key": user_key(key, str(uid)) if uid not in (None, "") else None,
        "session_id": _str(payload.get("session_id")),
        "channel": _str(payload.get("channel")),
        "booking_id": _str(payload.get("booking_id")),
        "professional_id": _professional(key, payload.get("professional_id")),
        "scheduled_for": _opt_ts(payload.get("scheduled_for"), "payload.scheduled_for"),
        "price_ars": _money(payload.get("price_ars"), "payload.price_ars"),
        "license_verified": bool(payload["license_verified"]) if "license_verified" in payload else None,
    }
    payment = None
    if kind == "payment.updated":
        p = payload.get("payment")
        if not isinstance(p, dict) or p.get("id") in (None, "") or not p.get("status"):
            raise EventError("payment.updated without payment id or status")
        payment = {
            "event_id": event_id,
            "occurred_at": occurred,
            "niche": niche,
            "country": event["country"],
            "region": event["region"],
            "provider": _str(payload.get("provider")),
            "payment_id": str(p["id"]),
            "status": str(p["status"]),
            "status_detail": _str(p.get("status_detail")),
            "transaction_amount": _money(p.get("transaction_amount"), "payment.transaction_amount"),
            "transaction_amount_refunded": _money(
                p.get("transaction_amount_refunded") or 0, "payment.transaction_amount_refunded"
            ),
            "currency_id": _str(p.get("currency_id")),
            "payment_method_id": _str(p.get("payment_method_id")),
            "payment_type_id": _str(p.get("payment_type_id")),
            "date_created": _ts(p.get("date_created"), "payment.date_created"),
            "date_approved": _opt_ts(p.get("date_approved"), "payment.date_approved"),
            "date_last_updated": _ts(p.get("date_last_updated"), "payment.date_last_updated"),
            "external_reference": _str(p.get("external_reference")),
        }
    return ParsedEvent(event, payment, niche in sensitive_niches)


_TS_FORMAT = "%Y-%m-%dT%H:%M:%S%.fZ"
_PAYMENT_STRUCT = pl.Struct(
    {
        "id": pl.String,
        "status": pl.String,
        "status_detail": pl.String,
        "transaction_amount": pl.Float64,
        "transaction_amount_refunded": pl.Float64,
        "currency_id": pl.String,
        "payment_method_id": pl.String,
        "payment_type_id": pl.String,
        "date_created": pl.String,
        "date_approved": pl.String,
        "date_last_updated": pl.String,
        "external_reference": pl.String,
    }
)
# Only these fields are read; names, e-mails, phones, DNI, payer and license numbers are never parsed.
_ND_SCHEMA = {
    "event_id": pl.String,
    "type": pl.String,
    "occurred_at": pl.String,
    "niche": pl.String,
    "country": pl.String,
    "region": pl.String,
    "user": pl.Struct({"id": pl.String}),
    "payload": pl.Struct(
        {
            "session_id": pl.String,
            "channel": pl.String,
            "booking_id": pl.String,
            "professional_id": pl.String,
            "scheduled_for": pl.String,
            "price_ars": pl.Float64,
            "license_verified": pl.Boolean,
            "provider": pl.String,
            "payment": _PAYMENT_STRUCT,
        }
    ),
}


def _decimal_cents(values: list[int | None]) -> pa.Array:
    """Integer cents → DECIMAL(18,2) values, exactly."""
    return pa.array([None if v is None else Decimal(v).scaleb(-2) for v in values], pa.decimal128(18, 2))


#: The vectorized path vouches for amounts below this (their float cents are exact); larger ones, and
#: non-finite ones, go to the exact line-by-line path (which quarantines what does not fit).
_FAST_MAX_AMOUNT = 1e12


def _to_cents(expr: pl.Expr) -> pl.Expr:
    # JSON numbers arrive as floats; amounts have at most 2 decimals, so x * 100 rounds to the exact cents.
    # NULL when out of range (the row is then left to the line-by-line path, see _fast_amount_ok).
    return pl.when(expr.abs() < _FAST_MAX_AMOUNT).then((expr * 100).round(0)).cast(pl.Int64)


def _fast_amount_ok(raw: pl.Expr, cents: str) -> pl.Expr:
    """An amount the vectorized path can vouch for: absent, or converted to cents."""
    return raw.is_null() | pl.col(cents).is_not_null()


def parse_lines_fast(
    numbered: list[tuple[int, bytes]], key: bytes, tz: ZoneInfo, sensitive_niches: frozenset[str], meta: dict[str, Any]
) -> tuple[pa.Table | None, pa.Table | None, set[int]]:
    """Vectorized :func:`parse_event` for a file's lines (polars NDJSON reader).

    Returns the events and payment rows it can vouch for as Arrow tables in the stored columns (plus a
    ``_sensitive`` flag; ``meta`` gives ``arrival_day`` and ``_source_file``), and the line numbers it
    could not: bad JSON anywhere in the file, unusual timestamps, missing fields. The caller parses those
    one by one with :func:`parse_event`, which gives the same row or the quarantine reason (a test checks
    both paths agree).
    """
    everything = {n for n, _ in numbered}
    if not numbered:
        return None, None, everything
    try:
        raw = pl.read_ndjson(io.BytesIO(b"\n".join(line for _, line in numbered)), schema=_ND_SCHEMA)
    except Exception:  # noqa: BLE001 - any damage: the line-by-line path finds and names it
        return None, None, everything
    if raw.height != len(numbered):
        return None, None, everything
    pay = pl.col("payload").struct.field("payment")

    def ts(expr: pl.Expr) -> pl.Expr:
        return expr.str.to_datetime(format=_TS_FORMAT, time_zone="UTC", strict=False)

    frame = raw.select(
        pl.Series("_row_number", [n for n, _ in numbered], pl.Int64),
        "event_id",
        "type",
        "niche",
        "country",
        "region",
        ts(pl.col("occurred_at")).alias("occurred_at"),
        pl.col("user").struct.field("id").alias("user_id"),
        *(
            pl.col("payload").struct.field(f).alias(f)
            for f in ("session_id", "channel", "booking_id", "professional_id", "license_verified", "provider")
        ),
        _to_cents(pl.col("payload").struct.field("price_ars")).alias("price_cents"),
        pl.col("payload").struct.field("price_ars").alias("price_raw"),
        pay.struct.field("transaction_amount").alias("p_amount_raw"),
        pay.struct.field("transaction_amount_refunded").alias("p_refunded_raw"),
        pl.col("payload").struct.field("scheduled_for").alias("scheduled_raw"),
        ts(pl.col("payload").struct.field("scheduled_for")).alias("scheduled_for"),
        *(
            pay.struct.field(f).alias(f"p_{f}")
            for f in (
                "id",
                "status",
                "status_detail",
                "currency_id",
                "payment_method_id",
                "payment_type_id",
                "external_reference",
                "date_approved",
            )
        ),
        _to_cents(pay.struct.field("transaction_amount")).alias("p_amount_cents"),
        _to_cents(pay.struct.field("transaction_amount_refunded").fill_null(0.0)).alias("p_refunded_cents"),
        *(ts(pay.struct.field(f)).alias(f"p_{f}_ts") for f in ("date_created", "date_approved", "date_last_updated")),
    )
    is_payment = pl.col("type") == "payment.updated"
    ok = (
        (pl.col("event_id").str.len_chars() > 0)
        & pl.col("type").is_in(EVENT_TYPES)
        & pl.col("occurred_at").is_not_null()
        & (pl.col("niche").str.len_chars() > 0)
        & (pl.col("scheduled_raw").is_null() | pl.col("scheduled_for").is_not_null())
        & _fast_amount_ok(pl.col("price_raw"), "price_cents")
        & (
            ~is_payment
            | (
                _fast_amount_ok(pl.col("p_amount_raw"), "p_amount_cents")
                & _fast_amount_ok(pl.col("p_refunded_raw"), "p_refunded_cents")
            )
        )
        & (
            ~is_payment
            | (
                (pl.col("p_id").str.len_chars() > 0)
                & (pl.col("p_status").str.len_chars() > 0)
                & pl.col("p_date_created_ts").is_not_null()
                & pl.col("p_date_last_updated_ts").is_not_null()
                & (
                    (pl.col("p_date_approved").is_null() | (pl.col("p_date_approved") == ""))
                    | pl.col("p_date_approved_ts").is_not_null()
                )
            )
        )
    ).fill_null(False)
    good = frame.filter(ok)
    slow = everything - set(good["_row_number"].to_list())
    ids = [u for u in good["user_id"].drop_nulls().unique().to_list() if u != ""]
    keys = pl.DataFrame(
        {"user_id": ids, "user_key": [user_key(key, u) for u in ids]},
        schema={"user_id": pl.String, "user_key": pl.String},
    )
    pros = [p for p in good["professional_id"].drop_nulls().unique().to_list() if p != ""]
    pro_keys = dict(zip(pros, (professional_key(key, p) for p in pros), strict=True))
    good = good.with_columns(pl.col("professional_id").replace_strict(pro_keys, default=None, return_dtype=pl.String))
    good = good.join(keys, on="user_id", how="left", maintain_order="left").with_columns(
        pl.col("occurred_at").dt.convert_time_zone(tz.key).dt.date().alias("day"),
        pl.col("niche").is_in(list(sensitive_niches)).alias("_sensitive"),
        pl.lit(meta["arrival_day"], pl.Date).alias("arrival_day"),
        pl.lit(meta["_source_file"]).alias("_source_file"),
    )
    events = good.select([c for c in EVENT_COLUMNS if c != "price_ars"] + ["_sensitive"]).to_arrow()
    events = events.append_column("price_ars", _decimal_cents(good["price_cents"].to_list()))
    events = events.select([*EVENT_COLUMNS, "_sensitive"]).cast(
        pa.schema([pa.field(c, t) for c, t in EVENT_COLUMNS.items()] + [pa.field("_sensitive", pa.bool_())])
    )
    pays = good.filter(pl.col("type") == "payment.updated")
    payments = pa.table(
        {
            "event_id": pays["event_id"].to_arrow(),
            "occurred_at": pays["occurred_at"].to_arrow(),
            "arrival_day": pays["arrival_day"].to_arrow(),
            "niche": pays["niche"].to_arrow(),
            "country": pays["country"].to_arrow(),
            "region": pays["region"].to_arrow(),
            "provider": pays["provider"].to_arrow(),
            "payment_id": pays["p_id"].to_arrow(),
            "status": pays["p_status"].to_arrow(),
            "status_detail": pays["p_status_detail"].to_arrow(),
            "transaction_amount": _decimal_cents(pays["p_amount_cents"].to_list()),
            "transaction_amount_refunded": _decimal_cents(pays["p_refunded_cents"].to_list()),
            "currency_id": pays["p_currency_id"].to_arrow(),
            "payment_method_id": pays["p_payment_method_id"].to_arrow(),
            "payment_type_id": pays["p_payment_type_id"].to_arrow(),
            "date_created": pays["p_date_created_ts"].to_arrow(),
            "date_approved": pays["p_date_approved_ts"].to_arrow(),
            "date_last_updated": pays["p_date_last_updated_ts"].to_arrow(),
            "external_reference": pays["p_external_reference"].to_arrow(),
            "_source_file": pays["_source_file"].to_arrow(),
            "_row_number": pays["_row_number"].to_arrow(),
            "_sensitive": pays["_sensitive"].to_arrow(),
        }
    ).cast(pa.schema([pa.field(c, t) for c, t in PAYMENT_COLUMNS.items()] + [pa.field("_sensitive", pa.bool_())]))
    return events, payments, slow


def gunzip_lines(data: bytes, where: str = "gzip") -> tuple[list[bytes], str | None]:
    """Complete lines of a (possibly multi-member) gzip; on damage, the lines before it and the error.

    Decompressed in bounded chunks: past ``max_expanded_bytes`` it raises
    :class:`~pipelines.lib.storage.InputTooLarge` naming ``where`` (a gzip bomb is never expanded).
    """
    text, error = gunzip_limited(data, where)
    lines = text.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # a last line without newline in an intact file is still a line
    return lines, error


# --- loading ------------------------------------------------------------------------------------------


def _schema(sensitive: bool) -> str:
    return "psychology" if sensitive else "raw"


def ensure_event_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create ``{raw,psychology}.events`` and ``.payment_updates`` if missing."""
    for schema in ("raw", "psychology"):
        for table, columns in (("events", EVENT_COLUMNS), ("payment_updates", PAYMENT_COLUMNS)):
            cols = ", ".join(f'"{c}" {_SQL_TYPES[t]}' for c, t in columns.items())
            con.execute(f"CREATE TABLE IF NOT EXISTS {schema}.{table} ({cols}, _loaded_at TIMESTAMPTZ)")


def event_relation(table: str = "events") -> str:
    """SQL for all rows of ``table`` across the raw and psychology schemas (for aggregates only)."""
    return f"(SELECT * FROM raw.{table} UNION ALL SELECT * FROM psychology.{table})"  # noqa: S608


def _table(rows: list[dict[str, Any]], columns: dict[str, pa.DataType]) -> pa.Table:
    cols = {c: pa.array([r.get(c) for r in rows], type=t) for c, t in columns.items()}
    cols["_sensitive"] = pa.array([bool(r.get("_sensitive")) for r in rows], pa.bool_())
    return pa.table(cols)


def load_events_day(
    con: duckdb.DuckDBPyConnection, storage: Storage, arrival_day: date, key: bytes | None = None
) -> LoadResult:
    """Load every file of one arrival day's folder, replacing that folder's earlier load.

    An event already loaded from another folder (same ``event_id``) is a duplicate: counted, not stored
    twice. ``touched_days`` are the AR days of events this load added.
    """
    catalog = load_catalog()
    tz = ZoneInfo(catalog.timezone)
    sensitive = frozenset(catalog.sensitive_niches)
    key = key if key is not None else pseudonym_key()
    ensure_event_tables(con)
    result = LoadResult("events", arrival_day.isoformat())
    folder = f"date={arrival_day.isoformat()}/"
    files = [k for k in storage.list(folder) if k.endswith((".jsonl.gz", ".jsonl"))]
    ev_tables: list[pa.Table] = []
    pay_tables: list[pa.Table] = []
    slow_events: list[dict[str, Any]] = []
    slow_pays: list[dict[str, Any]] = []
    bad: list[QuarantinedRow] = []
    for file_index, file_key in enumerate(files):
        where = storage.describe(file_key)
        try:
            data = storage.read_bytes(file_key)
            lines, error = gunzip_lines(data, where) if file_key.endswith(".gz") else (data.split(b"\n"), None)
        except SourceError as exc:  # unreadable or past a size limit: the file is quarantined, the others load
            result.rows_read += 1
            bad.append(QuarantinedRow(where, None, "", str(exc)))
            result.warnings.append(str(exc))
            continue
        result.files += 1
        size = len(data)
        del data
        if not file_key.endswith(".gz") and lines and lines[-1] == b"":
            lines.pop()
        if error is None and not any(line.strip() for line in lines):
            # Not an error (0 rows read, 0 loaded), but said: an empty delivery is usually a writer's failure.
            result.warnings.append(
                f"{where}: empty file ({'0 bytes' if size == 0 else 'no event lines'}), no events loaded"
            )
        max_line = limits.current().max_line_bytes
        numbered = []
        for n, line in enumerate(lines, start=1):
            if len(line) > max_line:  # never parsed: quarantined with its first bytes
                result.rows_read += 1
                reason = str(too_large(where, f"line {n}", max_line, "max_line_bytes", len(line)))
                bad.append(QuarantinedRow(where, n, f"[withheld: {len(line)} bytes, not parsed]", reason))
            elif line.strip():
                numbered.append((n, line))
        line_count = len(lines)
        del lines
        result.rows_read += len(numbered)
        meta = {"arrival_day": arrival_day, "_source_file": where}
        events, payments, slow = parse_lines_fast(numbered, key, tz, sensitive, meta)
        if events is not None:
            ev_tables.append(events.append_column("_file", pa.array([file_index] * events.num_rows, pa.int64())))
            pay_tables.append(payments)
        for n, line in numbered:
            if n not in slow:
                continue
            try:  # not vouched for by the fast path: parse alone, or quarantine with the reason
                parsed = parse_event(line, key, tz, sensitive)
            except EventError as exc:
                bad.append(QuarantinedRow(where, n, quarantine_text(line, key), str(exc)))
                continue
            extra = {**meta, "_row_number": n, "_sensitive": parsed.sensitive, "_file": file_index}
            slow_events.append({**parsed.event, **extra})
            if parsed.payment:
                slow_pays.append({**parsed.payment, **extra})
        if error:
            result.rows_read += 1
            bad.append(QuarantinedRow(where, None, "", f"{error}: lines after {line_count} could not be read"))
            result.warnings.append(f"{where}: {error}")
    result.rows_quarantined = quarantine(con, "events", bad)
    slow_table = _table(slow_events, EVENT_COLUMNS)
    ev_tables.append(slow_table.append_column("_file", pa.array([r["_file"] for r in slow_events], pa.int64())))
    pay_tables.append(_table(slow_pays, PAYMENT_COLUMNS))
    all_events = pl.from_arrow(pa.concat_tables(ev_tables)).sort(["_file", "_row_number"])
    all_pays = pl.from_arrow(pa.concat_tables(pay_tables))
    # The same event twice in this folder: the first one is kept, the others counted as duplicates.
    first = all_events["event_id"].is_first_distinct()
    kept = all_events.filter(first).drop("_file")
    result.duplicates += all_events.height - kept.height
    result.rows_loaded += all_events.height
    kept_pays = all_pays.join(
        kept.select("event_id", "_source_file", "_row_number"),
        on=["event_id", "_source_file", "_row_number"],
        how="semi",
    )
    now = datetime.now(UTC)
    # What this folder held before: reloading unchanged events must not re-open their days.
    before = {
        r[0]
        for r in con.execute(
            f"SELECT event_id FROM {event_relation('events')} WHERE arrival_day = ?",  # noqa: S608
            [arrival_day],
        ).fetchall()
    }
    # Re-loading a folder replaces it: delete its rows, then insert what is not already stored elsewhere.
    for schema in ("raw", "psychology"):
        for table in ("events", "payment_updates"):
            con.execute(f"DELETE FROM {schema}.{table} WHERE arrival_day = ?", [arrival_day])  # noqa: S608
    stored = 0
    for is_sensitive in (False, True):
        ev = kept.filter(pl.col("_sensitive") == is_sensitive).drop("_sensitive")
        pays = kept_pays.filter(pl.col("_sensitive") == is_sensitive).drop("_sensitive")
        stored += _insert_new(con, _schema(is_sensitive), ev.to_arrow(), pays.to_arrow(), arrival_day, now)
    result.duplicates += kept.height - stored
    # Days whose events changed: new events (not in this folder before and not stored from another one).
    stored_ids = pl.DataFrame(
        {
            "event_id": [
                r[0]
                for r in con.execute(
                    f"SELECT event_id FROM {event_relation('events')} WHERE arrival_day = ?",  # noqa: S608
                    [arrival_day],
                ).fetchall()
            ]
        },
        schema={"event_id": pl.String},
    )
    new = kept.join(stored_ids, on="event_id", how="semi").filter(~pl.col("event_id").is_in(list(before)))
    result.touched_days = set(new["day"].unique().to_list())
    record_load(con, result)
    return result


def _insert_new(
    con: duckdb.DuckDBPyConnection, schema: str, events: pa.Table, payments: pa.Table, arrival_day: date, now: datetime
) -> int:
    """Insert events whose ``event_id`` is not stored yet in either schema, and the payment rows of exactly
    those events; returns the events inserted."""
    if events.num_rows == 0:
        return 0
    con.register("_incoming", events.select(list(EVENT_COLUMNS)))
    try:
        before = con.execute(f"SELECT count(*) FROM {schema}.events").fetchall()[0][0]  # noqa: S608
        con.execute(
            f"INSERT INTO {schema}.events SELECT i.*, ? FROM _incoming i "  # noqa: S608
            # A duplicate has the same occurred_at, so only stored rows of the incoming days can match:
            # the lookup stays the size of a few days, not of the whole history.
            f"WHERE i.event_id NOT IN (SELECT event_id FROM {event_relation('events')} "
            f"WHERE day IN (SELECT DISTINCT day FROM _incoming))",
            [now],
        )
        inserted = con.execute(f"SELECT count(*) FROM {schema}.events").fetchall()[0][0] - before  # noqa: S608
    finally:
        con.unregister("_incoming")
    if payments.num_rows:
        con.register("_incoming_pay", payments.select(list(PAYMENT_COLUMNS)))
        try:
            con.execute(
                f"INSERT INTO {schema}.payment_updates SELECT p.*, ? FROM _incoming_pay p "  # noqa: S608
                f"WHERE p.event_id IN (SELECT event_id FROM {schema}.events WHERE arrival_day = ?)",
                [now, arrival_day],
            )
        finally:
            con.unregister("_incoming_pay")
    return inserted


def arrival_folders(days: list[date]) -> list[date]:
    """UTC arrival-day folders holding the events of AR ``days``: each day's own folder and, because an AR
    day ends at 03:00 UTC of the next day, the folder after the last day."""
    from datetime import timedelta

    return sorted({*days, max(days) + timedelta(days=1)})


def event_arrival_days(storage: Storage) -> list[date]:
    """Arrival days that have a folder in the event source."""
    days = set()
    for k in storage.list(""):
        part = k.split("/", 1)[0]
        if part.startswith("date="):
            try:
                days.add(date.fromisoformat(part[5:]))
            except ValueError:
                continue
    return sorted(days)


def staged_event_tables_exist(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the event tables were created (any events load ran)."""
    return table_exists(con, "raw.events")
