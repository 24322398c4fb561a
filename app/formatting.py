"""Locale-aware formatting of numbers, money, percentages and dates for the executive view.

Everything a person reads goes through here, so Spanish (Argentina) and English never mix and no NaN,
Inf or ``None`` ever reaches the page: a missing value is rendered as the language's "no data" text.
Money is formatted from :class:`~decimal.Decimal` so it is never rounded through a float.
"""

from __future__ import annotations

import math
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from zoneinfo import ZoneInfo

from app.i18n import t

AR_TZ = ZoneInfo("America/Argentina/Buenos_Aires")
LANGS = ("es", "en")
CURRENCIES = ("USD", "ARS")
# Separators: (thousands, decimal). es-AR writes 1.234,56; en writes 1,234.56.
_SEPARATORS = {"es": (".", ","), "en": (",", ".")}


def is_missing(value: object) -> bool:
    """True for None, NaN and +-Inf (all shown as "no data")."""
    if value is None:
        return True
    if isinstance(value, Decimal):
        return not value.is_finite()
    if isinstance(value, int | float):
        return not math.isfinite(value)
    return False


def to_decimal(value: float | int | str | Decimal) -> Decimal:
    """An exact Decimal for a published value (floats go through their shortest repr, not binary)."""
    if isinstance(value, Decimal):
        return value
    try:
        return Decimal(str(value))
    except InvalidOperation as exc:
        raise ValueError(f"not a number: {value!r}") from exc


def number(value: float | int | Decimal | None, lang: str, decimals: int = 0) -> str:
    """``1234.5`` -> ``1.234,50`` (es) / ``1,234.50`` (en); missing -> "sin datos" / "no data"."""
    if is_missing(value):
        return t("no_data", lang)
    thousands, point = _SEPARATORS[lang]
    quantum = Decimal(1).scaleb(-decimals)
    rounded = to_decimal(value).quantize(quantum, rounding=ROUND_HALF_UP)  # type: ignore[arg-type]
    if rounded == 0:
        rounded = abs(rounded)  # never show "-0"
    sign = "-" if rounded < 0 else ""
    whole, _, frac = f"{abs(rounded):f}".partition(".")
    groups = []
    while len(whole) > 3:
        groups.insert(0, whole[-3:])
        whole = whole[:-3]
    groups.insert(0, whole)
    text = thousands.join(groups)
    if decimals > 0:
        text += point + frac.ljust(decimals, "0")
    return sign + text


def percent(ratio: float | Decimal | None, lang: str, decimals: int = 2) -> str:
    """A 0-1 ratio as a percentage: ``0.9995`` -> ``99,95 %`` (es) / ``99.95%`` (en)."""
    if is_missing(ratio):
        return t("no_data", lang)
    text = number(to_decimal(ratio) * 100, lang, decimals)  # type: ignore[arg-type]
    return f"{text} %" if lang == "es" else f"{text}%"


def money(amount: float | Decimal | None, lang: str, currency: str, decimals: int = 2) -> str:
    """``US$ 1.234,56`` / ``$ 1.234,56`` (es, ARS) ; ``US$1,234.56`` / ``ARS 1,234.56`` (en)."""
    if is_missing(amount):
        return t("no_data", lang)
    text = number(amount, lang, decimals)
    negative = text.startswith("-")
    text = text.lstrip("-")
    if lang == "es":
        symbol = "US$ " if currency == "USD" else "$ "
    else:
        symbol = "US$" if currency == "USD" else "ARS "
    return ("-" if negative else "") + symbol + text


def day(value: date | None, lang: str) -> str:
    """``27/11/2026`` (es) / ``2026-11-27`` (en)."""
    if value is None:
        return t("no_data", lang)
    if isinstance(value, datetime):
        value = value.astimezone(AR_TZ).date()
    return value.strftime("%d/%m/%Y") if lang == "es" else value.isoformat()


def moment(value: datetime | None, lang: str) -> str:
    """A timestamp in Argentina time: ``27/11/2026 14:05`` (es) / ``2026-11-27 14:05`` (en)."""
    if value is None:
        return t("no_data", lang)
    local = value.astimezone(AR_TZ) if value.tzinfo else value.replace(tzinfo=ZoneInfo("UTC")).astimezone(AR_TZ)
    return f"{day(local.date(), lang)} {local:%H:%M}"


def money_compact(amount: float | Decimal | None, lang: str, currency: str) -> str:
    """Money for a KPI card: cents up to 10,000, whole units to a million, then millions with 2 decimals
    (``US$ 11,53 M`` / ``US$11.53M``). Tables keep :func:`money`'s full precision."""
    if is_missing(amount):
        return t("no_data", lang)
    size = abs(to_decimal(amount))  # type: ignore[arg-type]
    if size < 10_000:
        return money(amount, lang, currency)
    if size < 1_000_000:
        return money(amount, lang, currency, decimals=0)
    text = money(to_decimal(amount) / 1_000_000, lang, currency)  # type: ignore[arg-type]
    return f"{text} M" if lang == "es" else f"{text}M"


def kpi_value(value: float | Decimal | None, unit: str, lang: str, currency: str, compact: bool = False) -> str:
    """A KPI value in its catalog unit (money already converted into ``currency`` by the caller);
    ``compact`` shortens large money for cards."""
    if is_missing(value):
        return t("no_data", lang)
    if unit == "usd" and compact:
        return money_compact(value, lang, currency)
    if unit == "ms":
        return f"{number(value, lang, 0)} ms"
    if unit == "ratio":
        return percent(value, lang, 2)
    if unit == "minutes":
        return f"{number(value, lang, 1)} min"
    if unit in ("count", "users"):
        return number(value, lang, 0)
    if unit == "usd":
        return money(value, lang, currency)
    if unit == "usd_per_usd":
        return number(value, lang, 2)
    return number(value, lang, 2)


def kpi_delta(change: float | Decimal | None, unit: str, lang: str, currency: str, compact: bool = False) -> str | None:
    """The change against the previous period, signed; ratios in percentage points; None if unknown."""
    if is_missing(change):
        return None
    exact = to_decimal(change)  # type: ignore[arg-type]
    sign = "" if exact == 0 else ("+" if exact > 0 else "-")
    magnitude = abs(to_decimal(change))  # type: ignore[arg-type]
    if unit == "ratio":
        points = number(magnitude * 100, lang, 2)
        return f"{sign}{points} p.p." if lang == "es" else f"{sign}{points} pp"
    return sign + kpi_value(magnitude, unit, lang, currency, compact)


def relative_change(current: float | Decimal | None, previous: float | Decimal | None) -> Decimal | None:
    """(current - previous) / |previous| as a Decimal; None when either is missing or previous is 0."""
    if is_missing(current) or is_missing(previous):
        return None
    prev = to_decimal(previous)  # type: ignore[arg-type]
    if prev == 0:
        return None
    return (to_decimal(current) - prev) / abs(prev)  # type: ignore[arg-type]
