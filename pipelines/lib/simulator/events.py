"""The app's event log: sessions, sign-ups, bookings through their lifecycle, onboarding and payments.

Events are generated per Argentina day (a booking's whole future is drawn when it is created), then routed
to the folder of their UTC *arrival* day: most arrive within seconds, ~1% arrive 1-3 days late, ~0.5% are
delivered twice (same ``event_id``). A folder is written once no later day can add to it.
"""

from __future__ import annotations

import gzip
import json
import random
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.lib.simulator.incidents import REJECTION_SURGE_SHARE, Incident
from pipelines.lib.simulator.people import Canaries, Person, canary_person, mix64, person
from pipelines.lib.simulator.world import MINUTES, WEEKDAY_FACTOR, WEEKDAY_FACTOR_SENSITIVE, World, stable_hash

# --- behaviour parameters -----------------------------------------------------------------------------
SESSIONS_PER_USER_DAY = 0.2
USER_ACTIVITY_SKEW = 1.5  # older users are more active (ordinal = P * u**skew)
REVENUE_PER_INFRA_USD = 5.2  # gross; refunds, chargebacks and failures bring it to ~5
# Typical booking price in USD per niche id (unknown niches get the default); ARS prices follow the FX.
PRICE_USD = {"barber": 14.0, "psychology": 38.0, "dentist": 45.0, "fitness": 12.0, "vet": 30.0, "beauty": 20.0}
PRICE_USD_DEFAULT = 20.0
ONBOARDED_PER_DAY = {True: 3.2, False: 2.0}  # professionals per niche and day at today's scale (sensitive?)
SIGNUP_CHANNELS = (("organic", 0.35), ("instagram", 0.25), ("google_ads", 0.15), ("referral", 0.15), ("whatsapp", 0.10))
PROVIDERS = (("mercadopago", 0.85), ("todopago", 0.08), ("bank_transfer", 0.07))
MP_METHODS = (  # (payment_method_id, payment_type_id, weight)
    ("visa", "credit_card", 0.33),
    ("master", "credit_card", 0.24),
    ("amex", "credit_card", 0.05),
    ("debvisa", "debit_card", 0.08),
    ("debmaster", "debit_card", 0.11),
    ("account_money", "account_money", 0.11),
    ("rapipago", "ticket", 0.05),
    ("pagofacil", "ticket", 0.03),
)
TODOPAGO_METHODS = (("visa", "credit_card", 0.5), ("master", "credit_card", 0.3), ("debvisa", "debit_card", 0.2))
REJECT_SHARE = 0.013
REJECT_DETAILS = (
    ("cc_rejected_insufficient_amount", 0.35),
    ("cc_rejected_bad_filled_security_code", 0.15),
    ("cc_rejected_bad_filled_date", 0.08),
    ("cc_rejected_call_for_authorize", 0.12),
    ("cc_rejected_other_reason", 0.20),
    ("cc_rejected_high_risk", 0.10),
)
IN_PROCESS_SHARE = 0.03
TICKET_EXPIRY_SHARE = 0.08
TRANSFER_EXPIRY_SHARE = 0.03
CANCEL_SHARE = 0.06  # booking cancelled by the client after paying (payment refunded)
NO_SHOW_SHARE = 0.04
CHARGEBACK_SHARE = 0.003
DUPLICATE_SHARE = 0.005
LATE_SHARE = 0.01
PART_MAX_LINES = 200_000
USER_CACHE_SIZE = 400_000
GZIP_LEVEL = 3
PAYMENT_ID_BASE = 1_310_000_000


@dataclass
class EventStats:
    events: int = 0  # distinct events written
    lines: int = 0  # lines written (duplicates included)
    duplicates: int = 0
    late: int = 0
    dropped_after_window: int = 0  # occur or arrive after the window end: not delivered yet
    by_type: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    files: list[str] = field(default_factory=list)


def _iso_ms(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def _pick(r: random.Random, table: tuple[tuple[Any, ...], ...]) -> tuple[Any, ...]:
    x = r.random() * sum(t[-1] for t in table)
    for t in table:
        x -= t[-1]
        if x < 0:
            return t
    return table[-1]


class EventsModel:
    """Generates and writes the event log of one :class:`World`."""

    def __init__(
        self,
        world: World,
        incidents: list[Incident],
        rates: dict[date, float],
        out: Path,
        canaries: Canaries | None = None,
        infra_cost_usd: float = 0.0,
    ):
        self.world = world
        self.out = out
        self.rates = rates
        self.canaries = canaries or Canaries()
        self.surges = [i for i in incidents if i.type == "payment_rejection_surge"]
        self.stats = EventStats()
        self.buffer: dict[date, list[tuple[int, int, str]]] = defaultdict(list)
        self.cutoff_ms = int(world.window_end_utc.timestamp() * 1000)
        self.seq = 0
        self.payment_seq = 0
        self.local_currency = world.catalog.section("currency")["local"]
        self.reporting_currency = world.catalog.section("currency")["reporting"]
        mau = world.profile.monthly_active_users_at_now_scale * world.capacity_factor
        self.population_end = {s.index: mau * s.weight for s in world.segments}
        self.main_country = world.countries[0]
        # Bookings sized so revenue is REVENUE_PER_INFRA_USD times the infra cost at the window's end.
        revenue = REVENUE_PER_INFRA_USD * infra_cost_usd
        self.bookings_end = {}
        for s in world.segments:
            week = WEEKDAY_FACTOR_SENSITIVE if s.niche_sensitive else WEEKDAY_FACTOR
            mean_week = sum(week) / 7
            self.bookings_end[s.index] = revenue * s.weight / mean_week / PRICE_USD.get(s.niche, PRICE_USD_DEFAULT)
        self.niche_weight: dict[str, float] = defaultdict(float)
        for s in world.segments:
            self.niche_weight[s.niche] += s.weight
        self.professionals: dict[int, int] = defaultdict(int)
        self._users: dict[tuple[int, int], tuple[str, Person]] = {}
        self._user_json: dict[str, str] = {}

    # --- identities -------------------------------------------------------------------------------------
    def _user(self, seg_index: int, ordinal: int) -> tuple[str, Person]:
        key = (seg_index, ordinal)
        hit = self._users.get(key)
        if hit is not None:
            return hit
        seg = self.world.segments[seg_index]
        h = mix64((self.world.seed << 40) ^ (seg_index << 32) ^ ordinal)
        p = person(h, seg.country, seg.region)
        if seg_index == 0 and ordinal == 0 and self.canaries.any():
            p = canary_person(p, self.canaries)
        if len(self._users) > USER_CACHE_SIZE:  # bounded memory on the year-long profile
            self._users.clear()
        self._users[key] = (f"u_{h:016x}", p)
        return self._users[key]

    def population(self, seg_index: int, day: date) -> int:
        return max(1, int(self.population_end[seg_index] * self.world.growth(day)))

    # --- emitting ---------------------------------------------------------------------------------------
    def _emit(
        self, r: random.Random, kind: str, at_ms: int, seg, user_id: str, who: Person, payload: dict[str, Any]
    ) -> None:
        if at_ms >= self.cutoff_ms:
            self.stats.dropped_after_window += 1
            return
        # The envelope is assembled as text: the user fragment is serialized once per person (speed).
        user_json = self._user_json.get(user_id)
        if user_json is None:
            if len(self._user_json) > USER_CACHE_SIZE:
                self._user_json.clear()
            user_json = json.dumps(
                {"id": user_id, "name": who.name, "email": who.email, "phone": who.phone, "dni": who.dni},
                ensure_ascii=False,
                separators=(",", ":"),
            )
            self._user_json[user_id] = user_json
        line = (
            f'{{"event_id":"{uuid.UUID(int=r.getrandbits(128), version=4)}","type":"{kind}",'
            f'"occurred_at":"{_iso_ms(at_ms)}","niche":"{seg.niche}","country":"{seg.country}",'
            f'"region":"{seg.region}","user":{user_json},'
            f'"payload":{json.dumps(payload, ensure_ascii=False, separators=(",", ":"))}}}'
        )
        if r.random() < LATE_SHARE:
            arrival = at_ms + int((1 + 2 * r.random()) * 86_400_000)
            late = True
        else:
            arrival = at_ms + int(r.expovariate(1 / 3000))
            late = False
        if arrival >= self.cutoff_ms:
            self.stats.dropped_after_window += 1
            return
        self._arrive(arrival, line)
        self.stats.events += 1
        self.stats.late += late
        self.stats.by_type[kind] += 1
        if r.random() < DUPLICATE_SHARE:
            again = arrival + int(r.uniform(60_000, 12 * 3_600_000))
            if again < self.cutoff_ms:
                self._arrive(again, line)
                self.stats.duplicates += 1

    def _arrive(self, arrival_ms: int, line: str) -> None:
        day = _utc_date(arrival_ms)
        self.seq += 1
        self.buffer[day].append((arrival_ms, self.seq, line))

    # --- one day ----------------------------------------------------------------------------------------
    def day(self, day: date, sessions: np.ndarray) -> None:
        """Generate the events that start on AR day ``day``; ``sessions`` is (segment, minute) from metrics."""
        w = self.world
        t0_ms = int(w.day_start_utc(day).timestamp() * 1000)
        rate = self.rates[day]
        for seg in w.segments:
            r = random.Random(stable_hash("events", w.seed, seg.index, day.isoformat()))
            nrng = w.rng("events", seg.index, day.isoformat())
            curve = sessions[seg.index]
            p = curve / curve.sum()
            pop = self.population(seg.index, day)
            prev_pop = self.population(seg.index, day - timedelta(days=1))
            factor = w.day_factor(seg, day)
            # Sign-ups: the population's growth since yesterday (not on the first day: those existed).
            new_users = range(prev_pop, pop) if day != w.start else range(0)
            n_sessions = int(nrng.poisson(pop * SESSIONS_PER_USER_DAY * factor))
            minutes = nrng.choice(MINUTES, size=n_sessions + len(new_users), p=p)
            offsets = (minutes * 60_000 + nrng.integers(0, 60_000, minutes.size)).tolist()
            ordinals = (pop * nrng.random(n_sessions) ** USER_ACTIVITY_SKEW).astype(int).tolist()
            ordinals += list(new_users)
            if seg.index == 0 and day == w.start and self.canaries.any():
                ordinals[0] = 0  # the canary user is active on the first day
            session_list = []
            for i, (off, ordinal) in enumerate(zip(offsets, ordinals, strict=True)):
                uid, who = self._user(seg.index, ordinal)
                at = t0_ms + off
                if i >= n_sessions:
                    self._emit(r, "user.signed_up", at - 1000, seg, uid, who, {"channel": _pick(r, SIGNUP_CHANNELS)[0]})
                self._emit(r, "session.started", at, seg, uid, who, {"session_id": f"s_{r.getrandbits(64):016x}"})
                session_list.append((at, ordinal, uid, who))
            self._onboarding(r, seg, day, t0_ms, p, nrng)
            n_bookings = int(nrng.poisson(self.bookings_end[seg.index] * w.growth(day) * factor))
            if not session_list:
                continue
            for b in range(n_bookings):
                at, ordinal, uid, who = (
                    session_list[0]
                    if (b == 0 and seg.index == 0 and day == w.start)
                    else session_list[r.randrange(len(session_list))]
                )
                self._booking(r, seg, at + r.randint(30_000, 600_000), uid, who, rate)

    def _onboarding(
        self, r: random.Random, seg, day: date, t0_ms: int, p: np.ndarray, nrng: np.random.Generator
    ) -> None:
        w = self.world
        share = seg.weight / self.niche_weight[seg.niche]
        mean = ONBOARDED_PER_DAY[seg.niche_sensitive] * share * w.capacity_factor * w.growth(day)
        n = int(nrng.poisson(mean))
        if seg.index == 0 and day == w.start and self.canaries.any():
            n = max(n, 1)
        for k in range(n):
            self.professionals[seg.index] += 1
            pid = f"pr_{mix64(stable_hash('pro', w.seed, seg.index, self.professionals[seg.index])):016x}"
            h = mix64(stable_hash("pro-person", w.seed, pid))
            who = person(h, seg.country, seg.region)
            license_number = f"MN {h % 90_000 + 10_000}" if seg.niche_sensitive else None
            if k == 0 and seg.index == 0 and day == w.start and self.canaries.any():
                who = canary_person(who, self.canaries)
                if self.canaries.license_number:
                    license_number = self.canaries.license_number
            at = t0_ms + int(9 * 3_600_000 + r.random() * 10 * 3_600_000)
            self._emit(
                r,
                "professional.onboarded",
                at,
                seg,
                pid,
                who,
                {
                    "professional_id": pid,
                    "license_number": license_number,
                    "license_verified": seg.niche_sensitive,
                },
            )

    # --- bookings and payments --------------------------------------------------------------------------
    def _booking(self, r: random.Random, seg, at: int, uid: str, who: Person, rate: float) -> None:
        n_pro = max(self.professionals[seg.index], 20)
        pro = f"pr_{mix64(stable_hash('pro', self.world.seed, seg.index, r.randrange(1, n_pro + 1))):016x}"
        booking_id = f"bk_{r.getrandbits(64):016x}"
        # Appointment 1-10 days ahead at a local business hour (AR offset; good enough for scheduling).
        day_ms = (at // 86_400_000 + r.randint(1, 10)) * 86_400_000
        scheduled = day_ms + (9 + 3 + r.randint(0, 11)) * 3_600_000 + r.choice((0, 30)) * 60_000
        price_usd = PRICE_USD.get(seg.niche, PRICE_USD_DEFAULT) * r.uniform(0.75, 1.3)
        if seg.country == self.main_country:
            currency, amount = self.local_currency, float(max(500, round(price_usd * rate / 500) * 500))
        else:
            currency, amount = self.reporting_currency, round(price_usd, 2)
        base = {
            "booking_id": booking_id,
            "professional_id": pro,
            "scheduled_for": _iso_ms(scheduled)[:-5] + "Z",
            "price_ars": amount if currency == self.local_currency else None,
        }
        if currency != self.local_currency:
            base["price_usd"] = amount  # outside Argentina bookings are priced in USD
        self._emit(r, "booking.created", at, seg, uid, who, base)
        paid_at = self._payment(
            r, seg, at + r.randint(5_000, 120_000), uid, who, booking_id, amount, currency, scheduled
        )
        if paid_at is None:
            self._emit(r, "booking.cancelled", at + 3_600_000 * 24, seg, uid, who, base)
            return
        self._emit(r, "booking.confirmed", paid_at + r.randint(10_000, 600_000), seg, uid, who, base)
        x = r.random()
        if x < CANCEL_SHARE:
            self._emit(
                r,
                "booking.cancelled",
                min(scheduled - 3_600_000, paid_at + r.randint(3_600_000, 2 * 86_400_000)),
                seg,
                uid,
                who,
                base,
            )
        elif x < CANCEL_SHARE + NO_SHOW_SHARE:
            self._emit(r, "booking.no_show", scheduled + 15 * 60_000, seg, uid, who, base)
        else:
            self._emit(r, "booking.completed", scheduled + r.randint(40, 60) * 60_000, seg, uid, who, base)

    def _surging(self, seg, at: int) -> bool:
        return any(
            i.touches(seg.niche, seg.country, seg.region)
            and i.start.timestamp() * 1000 <= at < i.end.timestamp() * 1000
            for i in self.surges
        )

    def _payment(
        self,
        r: random.Random,
        seg,
        at: int,
        uid: str,
        who: Person,
        booking_id: str,
        amount: float,
        currency: str,
        scheduled: int,
    ) -> int | None:
        """Emit a payment's status changes; returns when it was approved, or None if it never was."""
        provider = _pick(r, PROVIDERS)[0]
        if provider == "mercadopago":
            method, ptype, _ = _pick(r, MP_METHODS)
        elif provider == "todopago":
            method, ptype, _ = _pick(r, TODOPAGO_METHODS)
        else:
            method, ptype = "cbu", "bank_transfer"
        self.payment_seq += 1
        pay = {
            "id": PAYMENT_ID_BASE + self.payment_seq,
            "status": "pending",
            "status_detail": "pending_waiting_payment",
            "transaction_amount": amount,
            "transaction_amount_refunded": 0.0,
            "currency_id": currency,
            "payment_method_id": method,
            "payment_type_id": ptype,
            "date_created": _iso_ms(at),
            "date_approved": None,
            "date_last_updated": _iso_ms(at),
            "external_reference": booking_id,
            "payer": {
                "email": who.email,
                "first_name": who.first_name,
                "last_name": who.last_name,
                "identification": {"type": who.id_type, "number": who.dni},
            },
        }

        def update(ts: int, status: str, detail: str, **extra: Any) -> None:
            pay.update(status=status, status_detail=detail, date_last_updated=_iso_ms(ts), **extra)
            self._emit(r, "payment.updated", ts, seg, uid, who, {"provider": provider, "payment": dict(pay)})

        approved_at: int | None = None
        if ptype in ("ticket", "bank_transfer"):
            detail = "pending_waiting_payment" if ptype == "ticket" else "pending_waiting_transfer"
            update(at, "pending", detail)
            expiry = TICKET_EXPIRY_SHARE if ptype == "ticket" else TRANSFER_EXPIRY_SHARE
            if r.random() < expiry:
                update(at + 3 * 86_400_000, "cancelled", "expired")
                return None
            approved_at = at + r.randint(10 * 60_000, 30 * 3_600_000)
            update(approved_at, "approved", "accredited", date_approved=_iso_ms(approved_at))
        else:
            if provider == "mercadopago" and self._surging(seg, at) and r.random() < REJECTION_SURGE_SHARE:
                update(at, "rejected", "cc_rejected_high_risk")
                return None
            x = r.random()
            if x < REJECT_SHARE:
                update(at, "rejected", _pick(r, REJECT_DETAILS)[0])
                return None
            if x < REJECT_SHARE + IN_PROCESS_SHARE:
                update(at, "in_process", "pending_contingency")
                later = at + r.randint(2 * 60_000, 60 * 60_000)
                if r.random() < 0.1:
                    update(later, "rejected", "cc_rejected_other_reason")
                    return None
                approved_at = later
            else:
                approved_at = at
            update(approved_at, "approved", "accredited", date_approved=_iso_ms(approved_at))
        x = r.random()
        if x < CANCEL_SHARE:  # the booking will be cancelled: money back
            refund_at = min(scheduled - 3_600_000, approved_at + r.randint(3_600_000, 2 * 86_400_000)) + 60_000
            update(max(refund_at, approved_at + 60_000), "refunded", "refunded", transaction_amount_refunded=amount)
        elif x < CANCEL_SHARE + CHARGEBACK_SHARE and ptype == "credit_card":
            disputed = approved_at + r.randint(10, 25) * 86_400_000
            update(disputed, "in_mediation", "in_process")
            update(disputed + r.randint(10, 20) * 86_400_000, "charged_back", "settled")
        return approved_at

    # --- files ------------------------------------------------------------------------------------------
    def flush(self, through: date | None) -> None:
        """Write every arrival-day folder up to ``through`` (all when None); no later event can reach them."""
        for d in sorted(self.buffer):
            if through is not None and d > through:
                continue
            rows = sorted(self.buffer.pop(d))
            folder = self.out / "events" / f"date={d.isoformat()}"
            folder.mkdir(parents=True, exist_ok=True)
            for part, i in enumerate(range(0, len(rows), PART_MAX_LINES)):
                path = folder / f"part-{part:04d}.jsonl.gz"
                data = ("\n".join(line for _, _, line in rows[i : i + PART_MAX_LINES]) + "\n").encode()
                with (
                    open(path, "wb") as fh,
                    gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0, compresslevel=GZIP_LEVEL) as gz,
                ):
                    gz.write(data)
                self.stats.files.append(path.relative_to(self.out).as_posix())
            self.stats.lines += len(rows)


def _utc_date(ms: int) -> date:
    return date(*time.gmtime(ms // 1000)[:3])
