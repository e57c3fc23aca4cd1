/*---
description = """
Revenue per period (UTC days, ISO weeks, months) from `from` to `to` inclusive: purchases minus
refunds (amounts in their own currency; pass `currency` to avoid adding different currencies),
orders (purchase events), payers (distinct purchasing users), ARPU (revenue per active user of the
period, from dau_daily) and ARPPU (revenue per payer). Served from the revenue_daily rollup."""
roles = ["admin", "analyst", "marketer", "service"]
cache_ttl_secs = 300
columns = { period = "Date", currency = "String", revenue = "Float64", orders = "UInt64", payers = "UInt64", arpu = "Float64", arppu = "Float64" }

[params.from]
type = "Date"
required = true

[params.to]
type = "Date"
required = true

[params.granularity]
type = "String"
default = "day"
allowed = ["day", "week", "month"]

[params.currency]
type = "String"
description = "Only this ISO 4217 currency"

[params.segment]
type = "UUID"
description = "Only members of this segment (its latest refresh), to compare a segment with everyone"

[[examples]]
name = "monthly USD revenue this year"
params = { from = "2026-01-01", to = "2026-12-31", granularity = "month", currency = "USD" }

[[examples]]
name = "daily revenue, last 30 days"
params = { from = "today-30d", to = "today" }
---*/
{% set bucket = {"day": "toDate", "week": "toMonday", "month": "toStartOfMonth"}[granularity] %}
{% set only_currency %}{% if currency %} AND currency = {currency:String}{% endif %}{% endset %}
{% set members %}actor_id IN (SELECT actor_id FROM segment_members WHERE segment_id = {segment:UUID} AND computed_at = (SELECT max(computed_at) FROM segment_members WHERE segment_id = {segment:UUID})){% endset %}
SELECT
    r.period AS period,
    r.currency AS currency,
    toFloat64(r.revenue) AS revenue,
    r.orders AS orders,
    r.payers AS payers,
    if(a.users = 0, 0, toFloat64(r.revenue) / a.users) AS arpu,
    if(r.payers = 0, 0, toFloat64(r.revenue) / r.payers) AS arppu
FROM
(
{% if segment is not none %}
    SELECT {{ bucket }}(toDate(timestamp)) AS period, toString(currency) AS currency,
           sumIf(toDecimal128(revenue, 4), event = 'purchase') - sumIf(toDecimal128(revenue, 4), event = 'refund') AS revenue,
           countIf(event = 'purchase') AS orders, uniqIf(actor_id, event = 'purchase') AS payers
    FROM events
    WHERE event IN ('purchase', 'refund') AND is_bot = 0
      AND timestamp >= toDateTime({from:Date}) AND timestamp < toDateTime({to:Date} + 1)
      AND {{ members }}
{% if currency %}      AND currency = {currency:String}
{% endif %}    GROUP BY period, currency
{% else %}
    {#- Closed periods come from revenue_final where its fingerprint (orders and refunds counted)
        still equals the rollup's over the same days (src/rollups); the others merge states. -#}
    WITH
    checked AS
    (
        SELECT l.period AS period, l.currency AS currency, f.revenue AS revenue, f.orders AS orders, f.payers AS payers,
               f.present = 1 AND f.fingerprint = l.fingerprint AS fresh
        FROM
        (
            SELECT {{ bucket }}(day) AS period, toString(currency) AS currency, sum(orders) + sum(refunds) AS fingerprint
            FROM revenue_daily
            WHERE day BETWEEN {from:Date} AND {to:Date}{{ only_currency }}
            GROUP BY period, currency
        ) AS l
        LEFT JOIN
        (
            SELECT period, toString(currency) AS currency, argMax(revenue, finalized_at) AS revenue,
                   argMax(orders, finalized_at) AS orders, argMax(payers, finalized_at) AS payers,
                   argMax(fingerprint, finalized_at) AS fingerprint, toUInt8(1) AS present
            FROM revenue_final
            WHERE granularity = {granularity:String}
              AND period BETWEEN {{ bucket }}({from:Date}) AND {to:Date}{{ only_currency }}
            GROUP BY period, currency
        ) AS f ON f.period = l.period AND f.currency = l.currency
    )
    SELECT period, currency, revenue, orders, payers FROM checked WHERE fresh
    UNION ALL
    SELECT {{ bucket }}(day) AS period, toString(currency) AS currency,
           sum(gross) - sum(refunded) AS revenue, sum(orders) AS orders, uniqMerge(payers) AS payers
    FROM revenue_daily
    WHERE day BETWEEN {from:Date} AND {to:Date}{{ only_currency }}
      AND ({{ bucket }}(day), toString(currency)) IN (SELECT period, currency FROM checked WHERE NOT fresh)
    GROUP BY period, currency
{% endif %}
) AS r
LEFT JOIN
(
{% if segment is not none %}
    SELECT {{ bucket }}(toDate(timestamp)) AS period, uniq(actor_id) AS users
    FROM events
    WHERE is_bot = 0 AND timestamp >= toDateTime({from:Date}) AND timestamp < toDateTime({to:Date} + 1)
      AND {{ members }}
    GROUP BY period
{% else %}
{% set granularity_sql = "{granularity:String}" %}
{% include "dau/_users.sql" %}
{% endif %}
) AS a ON a.period = r.period
ORDER BY period, currency
