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

[[examples]]
name = "monthly USD revenue this year"
params = { from = "2026-01-01", to = "2026-12-31", granularity = "month", currency = "USD" }

[[examples]]
name = "daily revenue, last 30 days"
params = { from = "today-30d", to = "today" }
---*/
{% set bucket = {"day": "toDate", "week": "toMonday", "month": "toStartOfMonth"}[granularity] %}
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
    SELECT {{ bucket }}(day) AS period, toString(currency) AS currency,
           sum(gross) - sum(refunded) AS revenue, sum(orders) AS orders, uniqMerge(payers) AS payers
    FROM revenue_daily
    WHERE day BETWEEN {from:Date} AND {to:Date}
{% if currency %}      AND currency = {currency:String}
{% endif %}    GROUP BY period, currency
) AS r
LEFT JOIN
(
    SELECT {{ bucket }}(day) AS period, uniqMerge(users) AS users
    FROM dau_daily
    WHERE day BETWEEN {from:Date} AND {to:Date}
    GROUP BY period
) AS a ON a.period = r.period
ORDER BY period, currency
