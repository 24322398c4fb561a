"""Every label of the executive view in Spanish (Argentina, the default) and English.

Names of KPIs, niches, countries, regions and services are not here: they come from the catalog
(``name: {es, en}``) through :func:`catalog_name`.
"""

from __future__ import annotations

from typing import Any

DEFAULT_LANG = "es"

TEXTS: dict[str, dict[str, str]] = {
    # chrome
    "app_title": {"es": "Pulso · Vista ejecutiva", "en": "Pulso · Executive view"},
    "tagline": {
        "es": "BarberPro — metas, confiabilidad y economía de la plataforma",
        "en": "BarberPro — targets, reliability and platform economics",
    },
    "language": {"es": "Idioma", "en": "Language"},
    "currency": {"es": "Moneda", "en": "Currency"},
    "date_range": {"es": "Período", "en": "Date range"},
    "niche": {"es": "Vertical", "en": "Niche"},
    "country": {"es": "País", "en": "Country"},
    "region": {"es": "Ciudad / región", "en": "City / region"},
    "service": {"es": "Servicio", "en": "Service"},
    "all": {"es": "Todos", "en": "All"},
    "signed_in_as": {"es": "Sesión: {user}", "en": "Signed in: {user}"},
    "sign_out": {"es": "Cerrar sesión", "en": "Sign out"},
    "freshness": {
        "es": "Publicado {published} (hora Argentina) · datos hasta {through} · cerrados hasta {complete}",
        "en": "Published {published} (Argentina time) · data through {through} · complete through {complete}",
    },
    "period_caption": {
        "es": "Período {start} – {end} · comparado con {pstart} – {pend}",
        "en": "Period {start} – {end} · compared with {pstart} – {pend}",
    },
    "download_csv": {"es": "Descargar CSV", "en": "Download CSV"},
    "no_data": {"es": "sin datos", "en": "no data"},
    "no_rows": {"es": "Sin datos para este período y filtros.", "en": "No data for this period and filters."},
    "fx_missing": {
        "es": "No hay cotizaciones ARS/USD publicadas (tabla `fx_daily`): los montos se muestran en USD.",
        "en": "No ARS/USD rates are published (table `fx_daily`): amounts are shown in USD.",
    },
    "fx_gap": {
        "es": "Faltan cotizaciones para algunos días: esos montos figuran como sin datos.",
        "en": "Rates are missing for some days: those amounts show as no data.",
    },
    "no_store": {
        "es": "Todavía no hay datos publicados. Generalos con `make build` (o `make run`) y recargá la página.",
        "en": "No published data yet. Build it with `make build` (or `make run`) and reload the page.",
    },
    "store_error": {
        "es": "No se pudieron leer los datos publicados ({kind}). Volvé a publicar con `make build`.",
        "en": "The published data could not be read ({kind}). Publish again with `make build`.",
    },
    "restricted": {
        "es": "El detalle de {niches} está restringido al rol clínico.",
        "en": "{niches} detail is restricted to the clinical role.",
    },
    "restricted_row": {"es": "🔒 Restringido", "en": "🔒 Restricted"},
    "not_split": {"es": "total (sin apertura)", "en": "total (not split)"},
    # sign-in
    "sign_in": {"es": "Iniciar sesión", "en": "Sign in"},
    "sign_in_intro": {"es": "Ingresá para ver los datos de Pulso.", "en": "Sign in to see Pulso's data."},
    "user": {"es": "Usuario", "en": "User"},
    "password": {"es": "Contraseña", "en": "Password"},
    "sign_in_sso": {"es": "Ingresar con SSO", "en": "Sign in with SSO"},
    "bad_credentials": {"es": "Usuario o contraseña incorrectos.", "en": "Wrong user or password."},
    "auth_not_configured": {
        "es": "El acceso no está configurado: definí `PULSO_APP_PASSWORD` o `[pulso]` en los secretos de Streamlit.",
        "en": "Access is not configured: set `PULSO_APP_PASSWORD` or `[pulso]` in Streamlit secrets.",
    },
    # pages
    "page_overview": {"es": "Resumen", "en": "Overview"},
    "page_reliability": {"es": "Confiabilidad", "en": "Reliability"},
    "page_economics": {"es": "Economía unitaria", "en": "Unit economics"},
    "page_growth": {"es": "Crecimiento", "en": "Growth"},
    "page_payments": {"es": "Pagos", "en": "Payments"},
    "page_geography": {"es": "Geografía", "en": "Geography"},
    "page_alerts": {"es": "Alertas", "en": "Alerts"},
    # overview
    "targets_table": {"es": "Metas de la estrategia", "en": "Strategy targets"},
    "targets_caption": {
        "es": "Valor real al {day}; meta vigente, mes 3 y mes 6 según el catálogo.",
        "en": "Actual on {day}; target in force, month 3 and month 6 from the catalog.",
    },
    "kpi": {"es": "Indicador", "en": "KPI"},
    "actual": {"es": "Real", "en": "Actual"},
    "target_now": {"es": "Meta vigente", "en": "Current target"},
    "target_m3": {"es": "Meta mes 3", "en": "Month-3 target"},
    "target_m6": {"es": "Meta mes 6", "en": "Month-6 target"},
    "status": {"es": "Estado", "en": "Status"},
    "grain": {"es": "Apertura", "en": "Grain"},
    "status_ok": {"es": "En camino", "en": "On track"},
    "status_warn": {"es": "En riesgo", "en": "At risk"},
    "status_breach": {"es": "Fuera de meta", "en": "Off track"},
    "status_no_data": {"es": "Sin datos", "en": "No data"},
    "headline": {"es": "Indicadores del período", "en": "KPIs for the period"},
    "rule_sum": {"es": "Suma del período.", "en": "Sum over the period."},
    "rule_last": {"es": "Último dato del período.", "en": "Latest value in the period."},
    "rule_max": {"es": "Máximo diario del período.", "en": "Highest daily value in the period."},
    "rule_buckets": {
        "es": "Percentil de los buckets del histograma sumados en el período.",
        "en": "Percentile of the histogram buckets summed over the period.",
    },
    "rule_payments": {
        "es": "Aprobados / pagos con estado final, contados en el período.",
        "en": "Approved / payments with a final status, counted over the period.",
    },
    "rule_ratio_of_sums": {"es": "Cociente de las sumas del período.", "en": "Ratio of the period's sums."},
    "rule_cache": {
        "es": "Aciertos / consultas a la caché, sumados en el período.",
        "en": "Cache hits / cache requests, summed over the period.",
    },
    "vs_previous": {"es": "vs. período anterior", "en": "vs. previous period"},
    # reliability
    "availability_by": {
        "es": "Disponibilidad y presupuesto de error por vertical y país",
        "en": "Availability and error budget by niche and country",
    },
    "availability": {"es": "Disponibilidad (30 días)", "en": "Availability (30 days)"},
    "error_budget": {"es": "Presupuesto de error restante", "en": "Error budget left"},
    "incidents": {"es": "Incidentes", "en": "Incidents"},
    "incidents_none": {"es": "Sin incidentes en el período.", "en": "No incidents in the period."},
    "started": {"es": "Inicio", "en": "Started"},
    "ended": {"es": "Fin", "en": "Ended"},
    "open": {"es": "abierto", "en": "open"},
    "recovery": {"es": "Recuperación", "en": "Recovery"},
    "recovery_target": {"es": "Meta de recuperación", "en": "Recovery target"},
    "incident_count": {"es": "Incidentes", "en": "Incidents"},
    "worst_recovery": {"es": "Peor recuperación", "en": "Worst recovery"},
    "latency_by_region": {"es": "Latencia contra el SLA por región", "en": "Latency against the SLA by region"},
    "p95": {"es": "p95", "en": "p95"},
    "sla": {"es": "SLA", "en": "SLA"},
    "within_sla": {"es": "Pedidos dentro del SLA", "en": "Requests within SLA"},
    "requests": {"es": "Pedidos", "en": "Requests"},
    # economics
    "cost_vs_budget": {
        "es": "Costo de infraestructura diario vs. presupuesto",
        "en": "Daily infrastructure cost vs budget",
    },
    "budget": {"es": "Presupuesto", "en": "Budget"},
    "cost": {"es": "Costo", "en": "Cost"},
    "day": {"es": "Día", "en": "Day"},
    "per_niche": {"es": "Por vertical", "en": "By niche"},
    "revenue": {"es": "Ingresos", "en": "Revenue"},
    "cost_by_service": {"es": "Costo por servicio", "en": "Cost by service"},
    "shared_split": {"es": "Costo compartido y cómo se repartió", "en": "Shared cost and how it was split"},
    "shared_rule": {
        "es": "El costo sin etiqueta de vertical o marcado como compartido se reparte entre las "
        "verticales activas según su proporción de pedidos HTTP del día.",
        "en": "Cost without a niche tag or tagged shared is split across the live niches by "
        "their share of that day's HTTP requests.",
    },
    "shared_service": {"es": "Compartido / sin etiqueta", "en": "Shared / untagged"},
    "share": {"es": "Proporción", "en": "Share"},
    "tagged": {"es": "Etiquetado", "en": "Tagged"},
    "shared": {"es": "Compartido repartido", "en": "Shared, split"},
    "total": {"es": "Total", "en": "Total"},
    "charge_category": {"es": "Categoría", "en": "Category"},
    # growth
    "mom_growth": {"es": "Crecimiento mensual de usuarios activos", "en": "MoM active-user growth"},
    "mom_help": {
        "es": "Usuarios activos diarios sumados en los 30 días al {day} contra los 30 días anteriores.",
        "en": "Daily active users summed over the 30 days to {day} against the 30 days before.",
    },
    "goal": {"es": "Meta", "en": "Goal"},
    "month6_goals": {"es": "Avance hacia las metas del mes 6", "en": "Progress to the month-6 goals"},
    "progress": {"es": "Avance", "en": "Progress"},
    "daily": {"es": "Diario", "en": "Daily"},
    # payments
    "mp_success_over_time": {"es": "Éxito de pagos MercadoPago por día", "en": "MercadoPago success rate by day"},
    "by_method": {"es": "Por medio de pago", "en": "By payment method"},
    "by_reason": {"es": "Rechazos por motivo", "en": "Rejections by reason"},
    "method": {"es": "Medio de pago", "en": "Payment method"},
    "reason": {"es": "Motivo", "en": "Reason"},
    "payments": {"es": "Pagos", "en": "Payments"},
    "final_payments": {"es": "Pagos con estado final", "en": "Payments with a final status"},
    "successful": {"es": "Exitosos", "en": "Successful"},
    "success_rate": {"es": "Tasa de éxito", "en": "Success rate"},
    "approved_amount": {"es": "Monto aprobado", "en": "Approved amount"},
    "no_rejections": {"es": "Sin rechazos en el período.", "en": "No rejections in the period."},
    # geography
    "by_region": {"es": "Indicadores por ciudad / región", "en": "KPIs by city / region"},
    # alerts
    "alerts_title": {"es": "Alertas de anomalías recientes", "en": "Recent anomaly alerts"},
    "no_alerts": {"es": "Sin alertas en el período.", "en": "No alerts in the period."},
    "severity": {"es": "Severidad", "en": "Severity"},
    "state": {"es": "Estado", "en": "State"},
    "firing": {"es": "activa", "en": "firing"},
    "resolved": {"es": "resuelta", "en": "resolved"},
    "expected": {"es": "Esperado", "en": "Expected"},
    "range": {"es": "Rango esperado", "en": "Expected range"},
    "drivers": {"es": "Principales causas", "en": "Top contributors"},
    "explanation": {"es": "Explicación", "en": "Explanation"},
    "alert_text": {
        "es": "{kpi} en {actual}, se esperaba {expected} ({lower} – {upper}) desde {since}.",
        "en": "{kpi} at {actual}, expected {expected} ({lower} – {upper}) since {since}.",
    },
}


def t(key: str, lang: str = DEFAULT_LANG, **params: Any) -> str:
    """The text for ``key`` in ``lang``, with ``{placeholders}`` filled from ``params``."""
    try:
        text = TEXTS[key][lang]
    except KeyError as exc:
        raise KeyError(f"no text {key!r} in language {lang!r}") from exc
    return text.format(**params) if params else text


def catalog_name(entry: Any, lang: str) -> str:
    """The ``es``/``en`` name of a catalog entry (KPI, niche, country, region, service, SLO)."""
    return entry.name[lang]
