"""AWS Cost and Usage Report 2.0 (Data Exports, Parquet): hourly line items, one delivery per month.

Costs follow the same load as the metrics: EC2 and CloudFront grow with traffic, RDS/ElastiCache/S3
storage are mostly fixed. Part of EC2 is covered by a Compute Savings Plan (covered usage at its effective
cost + negation + hourly recurring fee). Tax and a support fee come per AR day, a promotional credit per
month, one refund (an SLA credit after the outage). One closed month is restated by a second delivery.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from hashlib import blake2b
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.lib.simulator.incidents import COST_SPIKE_FACTOR, Incident
from pipelines.lib.simulator.metrics import SERVICE_MIX, SERVICE_MIX_DEFAULT
from pipelines.lib.simulator.world import World, stable_hash

# --- behaviour parameters -----------------------------------------------------------------------------
PREFIX = "cur"
EXPORT = "barberpro-cur2"
ACCOUNT = "210987654321"
AWS_REGION = "sa-east-1"
USAGE_PREFIX = "SAE1"
EC2_ON_DEMAND_RATE = 0.154  # USD per m6i.large hour
SP_COVERED_SHARE = 0.55  # share of EC2 usage covered by the Savings Plan
SP_EFFECTIVE_RATE = 0.72  # effective cost / on-demand cost under the plan
TAX_RATE = 0.06
MONTHLY_CREDIT_USD = 45.0
REFUND_USD = 120.0
RESTATEMENT_FACTOR = 1.012  # CloudFront usage corrected upwards in the restated delivery
# (product, usage type, operation, share of daily cost, fixed share, tagging, unit rate USD)
# tagging: "niche_service" per niche and service, "niche" per niche on one service, "shared", "untagged".
COMPONENTS = (
    (
        "AmazonEC2",
        f"{USAGE_PREFIX}-BoxUsage:m6i.large",
        "RunInstances",
        0.40,
        0.30,
        "niche_service",
        EC2_ON_DEMAND_RATE,
    ),
    ("AmazonRDS", f"{USAGE_PREFIX}-InstanceUsage:db.r6g.xlarge", "CreateDBInstance:0014", 0.20, 0.90, "niche", 0.58),
    (
        "AmazonElastiCache",
        f"{USAGE_PREFIX}-NodeUsage:cache.r6g.large",
        "CreateCacheCluster:0002",
        0.07,
        1.00,
        "shared",
        0.27,
    ),
    ("AmazonCloudFront", "SA-DataTransfer-Out-Bytes", "GET", 0.10, 0.00, "niche", 0.11),
    ("AmazonS3", f"{USAGE_PREFIX}-TimedStorage-ByteHrs", "StandardStorage", 0.03, 1.00, "shared", 0.0405),
    ("AmazonS3", f"{USAGE_PREFIX}-Requests-Tier1", "PutObject", 0.02, 0.00, "untagged", 0.000007),
    ("AWSDataTransfer", f"{USAGE_PREFIX}-DataTransfer-Out-Bytes", "", 0.06, 0.10, "untagged", 0.138),
    ("AmazonCloudWatch", f"{USAGE_PREFIX}-CW:MetricMonitorUsage", "MetricStorage", 0.03, 0.80, "untagged", 0.3),
)
# Which catalog service carries the per-niche cost of a component tagged "niche" (first service if absent).
COMPONENT_SERVICE = {"AmazonRDS": "api", "AmazonCloudFront": "web", "AmazonElastiCache": "web", "AmazonS3": "web"}
SUPPORT_FEE_SHARE = 0.03
ENVIRONMENT = "production"

SCHEMA = pa.schema(
    [
        ("identity_line_item_id", pa.string()),
        ("identity_time_interval", pa.string()),
        ("bill_billing_period_start_date", pa.timestamp("ms", tz="UTC")),
        ("bill_billing_period_end_date", pa.timestamp("ms", tz="UTC")),
        ("bill_payer_account_id", pa.string()),
        ("line_item_usage_account_id", pa.string()),
        ("line_item_usage_start_date", pa.timestamp("ms", tz="UTC")),
        ("line_item_usage_end_date", pa.timestamp("ms", tz="UTC")),
        ("line_item_line_item_type", pa.string()),
        ("line_item_product_code", pa.string()),
        ("line_item_usage_type", pa.string()),
        ("line_item_operation", pa.string()),
        ("line_item_resource_id", pa.string()),
        ("line_item_line_item_description", pa.string()),
        ("line_item_usage_amount", pa.float64()),
        ("line_item_currency_code", pa.string()),
        ("line_item_unblended_cost", pa.decimal128(18, 6)),
        ("pricing_public_on_demand_cost", pa.decimal128(18, 6)),
        ("savings_plan_savings_plan_effective_cost", pa.decimal128(18, 6)),
        ("reservation_effective_cost", pa.decimal128(18, 6)),
        ("savings_plan_savings_plan_a_r_n", pa.string()),
        ("savings_plan_total_commitment_to_date", pa.decimal128(18, 6)),
        ("savings_plan_used_commitment", pa.decimal128(18, 6)),
        ("pricing_term", pa.string()),
        ("product_region_code", pa.string()),
        ("resource_tags", pa.map_(pa.string(), pa.string())),
    ]
)
MICRO = Decimal("0.000001")
SP_LINE_ITEMS = ("SavingsPlanCoveredUsage", "SavingsPlanNegation", "SavingsPlanRecurringFee")


@dataclass
class Delivery:
    """One CUR delivery of a billing period (what its manifest lists)."""

    period: str
    execution_id: str
    data_files: list[str]
    rows: int
    unblended_total: Decimal
    amortized_total: Decimal


@dataclass
class BillingStats:
    deliveries: list[Delivery] = field(default_factory=list)
    restated_period: str | None = None
    superseded: Delivery | None = None
    daily_amortized: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))


def _money(x: float) -> Decimal:
    return Decimal(repr(float(x))).quantize(MICRO)


def amortized(row: dict[str, Any]) -> Decimal:
    """Contract section 1.2: the amortized cost of one line item."""
    kind = row["line_item_line_item_type"]
    if kind == "SavingsPlanCoveredUsage":
        return row["savings_plan_savings_plan_effective_cost"]
    if kind == "DiscountedUsage":
        return row["reservation_effective_cost"]
    if kind == "SavingsPlanRecurringFee":  # its unused part: total commitment to date - used commitment
        return (row.get("savings_plan_total_commitment_to_date") or Decimal(0)) - (
            row.get("savings_plan_used_commitment") or Decimal(0)
        )
    if kind in ("SavingsPlanNegation", "RIFee"):
        return Decimal(0)
    return row["line_item_unblended_cost"]


class BillingModel:
    """Accumulates line items per billing period and writes each period's delivery when it closes."""

    def __init__(self, world: World, incidents: list[Incident], out: Path, restate: bool = True):
        self.world = world
        self.out = out
        self.restate = restate
        cat = world.catalog
        self.tags = cat.section("cost_allocation")["tags"]
        self.shared_value = cat.section("cost_allocation")["shared_niche_values"][0]
        self.cost_ref = world.profile.infra_cost_reference_usd(cat)
        self.spikes = [i for i in incidents if i.type == "cost_spike"]
        self.outages = [i for i in incidents if i.type == "outage"]
        self.rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.stats = BillingStats()
        self.restated_period = _period(world.window_start_utc)
        self.stats.restated_period = self.restated_period if restate else None
        mix = np.array([SERVICE_MIX.get(s.id, SERVICE_MIX_DEFAULT)[0] for s in world.services])
        self.service_share = mix / mix.sum()
        self.service_ids = [s.id for s in world.services]
        self.credited: set[str] = set()
        self.refunded = False
        self.reference_load = world.reference_mean_sessions

    def _tags(self, niche: str | None, service: str | None) -> dict[str, str] | None:
        if niche is None:
            return None
        tags = {self.tags["niche"]: niche, self.tags["environment"]: ENVIRONMENT}
        if service is not None:
            tags[self.tags["service"]] = service
        return tags

    def _row(
        self,
        start: datetime,
        end: datetime,
        kind: str,
        product: str,
        usage_type: str,
        operation: str,
        resource: str | None,
        amount: float,
        unblended: Decimal,
        tags: dict[str, str] | None,
        *,
        sp_effective: Decimal = Decimal(0),
        on_demand: Decimal | None = None,
        description: str = "",
    ) -> None:
        period = _period(start)
        key = f"{kind}|{product}|{usage_type}|{resource}|{sorted((tags or {}).items())}|{start.isoformat()}"
        row_id = blake2b(key.encode(), digest_size=20).hexdigest()
        self.rows[period].append(
            {
                "identity_line_item_id": row_id,
                "identity_time_interval": f"{_iso(start)}/{_iso(end)}",
                "line_item_usage_start_date": start,
                "line_item_usage_end_date": end,
                "line_item_line_item_type": kind,
                "line_item_product_code": product,
                "line_item_usage_type": usage_type,
                "line_item_operation": operation,
                "line_item_resource_id": resource,
                "line_item_line_item_description": description or f"{product} {usage_type}",
                "line_item_usage_amount": float(amount),
                "line_item_unblended_cost": unblended,
                "pricing_public_on_demand_cost": on_demand
                if on_demand is not None
                else (unblended if kind in ("Usage", "SavingsPlanCoveredUsage") else Decimal(0)),
                "savings_plan_savings_plan_effective_cost": sp_effective,
                "reservation_effective_cost": Decimal(0),
                # the plan is fully used: its hourly fee is all used commitment (no unused part)
                "savings_plan_savings_plan_a_r_n": _sp_arn(self.world.seed) if kind in SP_LINE_ITEMS else None,
                "savings_plan_total_commitment_to_date": unblended if kind == "SavingsPlanRecurringFee" else None,
                "savings_plan_used_commitment": unblended if kind == "SavingsPlanRecurringFee" else None,
                "pricing_term": "OnDemand" if kind in ("Usage", "SavingsPlanCoveredUsage") else None,
                "resource_tags": tags,
            }
        )

    def day(self, day: date, sessions: np.ndarray) -> None:
        """Line items of the AR day (24 UTC hours from its local midnight), from that day's load."""
        w = self.world
        t0 = w.day_start_utc(day)
        hours = [t0 + timedelta(hours=h) for h in range(24)]
        hourly = sessions.reshape(len(w.segments), 24, 60).mean(axis=2)
        niche_load = {n: hourly[[s.index for s in w.segments if s.niche == n]].sum(axis=0) for n in w.niches}
        total_load = hourly.sum(axis=0)
        per_hour = self.cost_ref / 24
        usage_by_product: dict[str, Decimal] = defaultdict(Decimal)
        day_amortized = Decimal(0)
        g = w.growth(day)
        for product, usage_type, operation, share, fixed, tagging, unit in COMPONENTS:
            if tagging == "niche_service":
                targets = [(n, s) for n in w.niches for s in range(len(self.service_ids))]
            elif tagging == "niche":
                targets = [(n, None) for n in w.niches]
            else:
                targets = [(None, None)]
            for niche, svc in targets:
                if niche is None:
                    load, weight = total_load, 1.0
                else:
                    load = niche_load[niche]
                    weight = float(niche_load[niche].sum() / max(total_load.sum(), 1e-9))
                if svc is not None:
                    weight *= float(self.service_share[svc])
                    service = self.service_ids[svc]
                elif niche is not None:
                    service = COMPONENT_SERVICE.get(product, self.service_ids[0])
                    service = service if service in self.service_ids else self.service_ids[0]
                else:
                    service = None
                if tagging == "shared":
                    tags = self._tags(self.shared_value, service)
                elif tagging == "untagged":
                    tags = None
                else:
                    tags = self._tags(niche, service)
                resource = _resource(product, niche, service, w.seed)
                for h, start in enumerate(hours):
                    rel = float(load[h] / max(total_load[h], 1e-9)) if niche is not None else 1.0
                    variable = float(total_load[h]) / self.reference_load * (rel if niche is not None else 1.0)
                    if niche is not None and svc is not None:
                        variable *= float(self.service_share[svc])
                    fixed_part = weight if niche is not None else 1.0
                    cost = per_hour * share * (fixed * fixed_part + (1 - fixed) * variable)
                    if product == "AmazonEC2" and any(
                        sp.niche == niche and sp.service == service and sp.start <= start < sp.end for sp in self.spikes
                    ):
                        cost *= COST_SPIKE_FACTOR
                    end = start + timedelta(hours=1)
                    amount = cost / unit
                    if product == "AmazonEC2":
                        od = _money(cost)
                        covered = _money(cost * SP_COVERED_SHARE)
                        effective = _money(cost * SP_COVERED_SHARE * SP_EFFECTIVE_RATE)
                        self._row(
                            start,
                            end,
                            "SavingsPlanCoveredUsage",
                            product,
                            usage_type,
                            operation,
                            resource,
                            amount * SP_COVERED_SHARE,
                            covered,
                            tags,
                            sp_effective=effective,
                        )
                        self._row(
                            start,
                            end,
                            "SavingsPlanNegation",
                            product,
                            usage_type,
                            operation,
                            resource,
                            0.0,
                            -covered,
                            tags,
                            on_demand=Decimal(0),
                            description="Savings Plan negation",
                        )
                        self._row(
                            start,
                            end,
                            "Usage",
                            product,
                            usage_type,
                            operation,
                            resource,
                            amount * (1 - SP_COVERED_SHARE),
                            od - covered,
                            tags,
                        )
                        self._row(
                            start,
                            end,
                            "SavingsPlanRecurringFee",
                            "ComputeSavingsPlans",
                            "ComputeSP:1yrNoUpfront",
                            "",
                            _sp_arn(w.seed),
                            1.0,
                            effective,
                            None,
                            on_demand=Decimal(0),
                            description="1 year No Upfront Compute Savings Plan",
                        )
                        usage_by_product[product] += od - covered + effective
                        day_amortized += od - covered + effective
                    else:
                        money = _money(cost)
                        self._row(start, end, "Usage", product, usage_type, operation, resource, amount, money, tags)
                        usage_by_product[product] += money
                        day_amortized += money
        # Per-day lines over the AR day's 24 hours: tax per product, support fee, monthly credit, one refund.
        d_start, d_end = hours[0], hours[0] + timedelta(days=1)
        for product in sorted(usage_by_product):
            tax = _money(float(usage_by_product[product]) * TAX_RATE)
            self._row(d_start, d_end, "Tax", product, "Tax", "", None, 0.0, tax, None, description="IVA")
            day_amortized += tax
        fee = _money(self.cost_ref * SUPPORT_FEE_SHARE * (0.5 + 0.5 * g))
        self._row(
            d_start,
            d_end,
            "Fee",
            "AWSSupportBusiness",
            "Dollar",
            "",
            None,
            0.0,
            fee,
            None,
            description="AWS Support (Business)",
        )
        day_amortized += fee
        period = _period(d_start)
        if period not in self.credited:
            self.credited.add(period)
            credit = -_money(MONTHLY_CREDIT_USD * self.world.capacity_factor)
            self._row(
                d_start,
                d_end,
                "Credit",
                "AmazonEC2",
                "Credit",
                "",
                None,
                0.0,
                credit,
                None,
                description="AWS Activate promotional credit",
            )
            day_amortized += credit
        if not self.refunded and any(o.end <= d_start for o in self.outages):
            self.refunded = True
            refund = -_money(REFUND_USD * self.world.capacity_factor)
            self._row(
                d_start,
                d_end,
                "Refund",
                "AmazonEC2",
                "Refund",
                "",
                None,
                0.0,
                refund,
                None,
                description="SLA credit for a service event",
            )
            day_amortized += refund
        self.stats.daily_amortized[day.isoformat()] = day_amortized

    def close_through(self, before: datetime | None) -> None:
        """Write the delivery of every period that ends at or before ``before`` (all when None)."""
        for period in sorted(self.rows):
            p_start = datetime.strptime(period, "%Y-%m").replace(tzinfo=UTC)
            p_end = _next_month(p_start)
            if before is not None and p_end > before:
                continue
            rows = self.rows.pop(period)
            first = self._write(period, rows, 1, restated=False)
            if period == self.restated_period and self.restate:
                restated_rows = [_restate(r) for r in rows]
                second = self._write(period, restated_rows, 2, restated=True)
                self.stats.superseded = first
                self.stats.deliveries.append(second)
            else:
                self.stats.deliveries.append(first)

    def _write(self, period: str, rows: list[dict[str, Any]], delivery: int, restated: bool) -> Delivery:
        p_start = datetime.strptime(period, "%Y-%m").replace(tzinfo=UTC)
        p_end = _next_month(p_start)
        execution_id = str(_uuid("cur-execution", self.world.seed, period, delivery))
        base = f"{PREFIX}/{EXPORT}"
        folder = f"{base}/data/BILLING_PERIOD={period}" + (f"/{execution_id}" if restated else "")
        key = f"{folder}/{EXPORT}-00001.snappy.parquet"
        rows = sorted(rows, key=lambda r: (r["line_item_usage_start_date"], r["identity_line_item_id"]))
        columns: dict[str, list[Any]] = {f.name: [] for f in SCHEMA}
        for r in rows:
            for name in columns:
                if name == "bill_billing_period_start_date":
                    columns[name].append(p_start)
                elif name == "bill_billing_period_end_date":
                    columns[name].append(p_end)
                elif name in ("bill_payer_account_id", "line_item_usage_account_id"):
                    columns[name].append(ACCOUNT)
                elif name == "line_item_currency_code":
                    columns[name].append("USD")
                elif name == "product_region_code":
                    columns[name].append(
                        None if r["line_item_line_item_type"] in ("Tax", "Credit", "Refund", "Fee") else AWS_REGION
                    )
                elif name == "resource_tags":
                    columns[name].append(list((r["resource_tags"] or {}).items()))
                else:
                    columns[name].append(r[name])
        table = pa.table(columns, schema=SCHEMA)
        path = self.out / "billing" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, compression="snappy")
        manifest = {
            "version": "1.0",
            "executionId": execution_id,
            "exportName": EXPORT,
            "exportArn": f"arn:aws:bcm-data-exports:us-east-1:{ACCOUNT}:export/{EXPORT}-{stable_hash(EXPORT):08x}",
            "billingPeriod": {"start": _iso(p_start), "end": _iso(p_end)},
            "dataFiles": [key],
            "totalRecords": len(rows),
        }
        mpath = self.out / "billing" / base / "metadata" / f"BILLING_PERIOD={period}" / f"{EXPORT}-Manifest.json"
        mpath.parent.mkdir(parents=True, exist_ok=True)
        mpath.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        return Delivery(
            period,
            execution_id,
            [key],
            len(rows),
            sum((r["line_item_unblended_cost"] for r in rows), Decimal(0)),
            sum((amortized(r) for r in rows), Decimal(0)),
        )


def _restate(row: dict[str, Any]) -> dict[str, Any]:
    if row["line_item_product_code"] == "AmazonCloudFront" and row["line_item_line_item_type"] == "Usage":
        row = dict(row)
        row["line_item_unblended_cost"] = (
            row["line_item_unblended_cost"] * Decimal(repr(RESTATEMENT_FACTOR))
        ).quantize(MICRO)
        row["pricing_public_on_demand_cost"] = row["line_item_unblended_cost"]
        row["line_item_usage_amount"] = row["line_item_usage_amount"] * RESTATEMENT_FACTOR
    return row


def _period(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m")


def _next_month(ts: datetime) -> datetime:
    return (ts.replace(day=28) + timedelta(days=4)).replace(day=1)


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _resource(product: str, niche: str | None, service: str | None, seed: int) -> str | None:
    h = stable_hash(product, niche, service, seed)
    if product == "AmazonEC2":
        return f"arn:aws:autoscaling:{AWS_REGION}:{ACCOUNT}:autoScalingGroup:{h:08x}:autoScalingGroupName/{niche}-{service}"
    if product == "AmazonRDS":
        return f"arn:aws:rds:{AWS_REGION}:{ACCOUNT}:db:{niche}-db"
    if product == "AmazonElastiCache":
        return f"arn:aws:elasticache:{AWS_REGION}:{ACCOUNT}:cluster:shared-cache"
    if product == "AmazonCloudFront":
        return f"arn:aws:cloudfront::{ACCOUNT}:distribution/E{h:08X}"
    if product == "AmazonS3":
        return f"barberpro-assets-{AWS_REGION}"
    return None


def _sp_arn(seed: int) -> str:
    return f"arn:aws:savingsplans::{ACCOUNT}:savingsplan/{_uuid('savings-plan', seed)}"


def _uuid(*parts: object) -> uuid.UUID:
    """A deterministic random-looking UUID (version 4 layout) from the parts."""
    digest = blake2b("|".join(str(p) for p in parts).encode(), digest_size=16).digest()
    return uuid.UUID(bytes=digest, version=4)
