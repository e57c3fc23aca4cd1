/*---
description = """
Per-variant sufficient statistics of one metric of an A/B experiment, aggregated in one pass (no
per-user row leaves ClickHouse); the statistics over them are in docs/experiments.md.

Exposure: events `exposure_event` with `experiment_property` = `experiment` and
`variant_property` one of `variants`, start <= timestamp < end (UTC), bots excluded. A user's first
exposure decides the variant and the exposure time; users exposed to more than one variant are
excluded: one row with `excluded` = 1, an empty `variant` and their count in `users` (metric
columns 0), present only when there are such users.

Per user, after exposure < t <= exposure + window_days days: a conversion metric is 1 when the user
did `event` at least once (else 0); a mean metric is the total of `property` (a numeric event
property, or `revenue` for the revenue column) over the user's `event`s, 0 without any; a funnel
metric is 1 when the user did `steps` in order within that time (ClickHouse's windowFunnel; a step
counts only after exposure). A retention metric is 1 when the user did `event` (`*`: any event) on
day `retention_day` after exposure: exposure + retention_day days <= t < exposure + retention_day +
1 days. With `cuped`, the same value over the same length of time before exposure (exposure -
window_days days <= t < exposure; retention: exposure - (retention_day + 1) days <= t < exposure -
retention_day days) is `x`. Rows per variant with users, control first: users, converters (users with
at least one `event` in the window), Σy, Σy², Σx, Σx², Σxy."""
roles = ["admin", "analyst", "marketer", "service"]
cache_ttl_secs = 300
max_execution_secs = 60
columns = { variant = "String", excluded = "UInt8", users = "UInt64", converters = "UInt64", value_sum = "Float64", value_sum_squares = "Float64", pre_sum = "Float64", pre_sum_squares = "Float64", cross_sum = "Float64" }

[freshness]
# Metric events up to 91 days before the first exposure (CUPED) and after the last one.
from = "start"
to = "end"
days_before = 91
through = "today"

[params.experiment]
type = "String"
required = true
description = "The experiment's key: the value of the experiment property of exposures"

[params.variants]
type = "Array(String)"
required = true
min_items = 2
max_items = 10
description = "Variant keys, control first; exposures to other variants are ignored"

[params.start]
type = "DateTime"
required = true
description = "First exposure time that counts (inclusive)"

[params.end]
type = "DateTime"
default = "now"
description = "Exposures before this time count"

[params.kind]
type = "String"
default = "conversion"
allowed = ["conversion", "mean", "retention", "funnel"]

[params.event]
type = "String"
default = ""
description = "The metric's event (retention: * for any event); none for a funnel"

[params.steps]
type = "Array(String)"
default = []
max_items = 10
description = "Funnel metrics: the events, in order"

[params.retention_day]
type = "UInt8"
default = 7
min = 1
max = 90
description = "Retention metrics: the day after exposure the user must be active on"

[params.property]
type = "String"
description = "Mean metrics: a numeric event property, or revenue (the revenue column)"

[params.window_days]
type = "UInt8"
default = 14
min = 1
max = 90
description = "Days after exposure that count (not for retention)"

[params.cuped]
type = "Bool"
default = false
description = "Also the pre-exposure value of the metric (pre_sum, pre_sum_squares, cross_sum)"

[params.exposure_event]
type = "String"
default = "$experiment_exposure"

[params.experiment_property]
type = "String"
default = "experiment"

[params.variant_property]
type = "String"
default = "variant"

[[examples]]
name = "conversion to purchase within 14 days"
params = { experiment = "checkout-button", variants = ["control", "green"], start = "2026-03-01 00:00:00", event = "purchase" }

[[examples]]
name = "revenue per user with CUPED"
params = { experiment = "checkout-button", variants = ["control", "green"], start = "2026-03-01 00:00:00", end = "2026-03-15 00:00:00", kind = "mean", event = "purchase", property = "revenue", window_days = 7, cuped = true }
---*/
{%- if kind == "mean" and not property -%}{{ invalid("property", "is required for a mean metric: a numeric event property, or revenue") }}{%- endif -%}
{%- if kind != "mean" and property -%}{{ invalid("property", "only a mean metric reads a property") }}{%- endif -%}
{%- if kind == "funnel" and (steps | length < 2 or event) -%}{{ invalid("steps", "a funnel metric has 2 to 10 steps and no event") }}{%- endif -%}
{%- if kind != "funnel" and steps | length > 0 -%}{{ invalid("steps", "only a funnel metric has steps") }}{%- endif -%}
{%- if kind != "funnel" and not event -%}{{ invalid("event", "is required for a " ~ kind ~ " metric") }}{%- endif -%}
{%- if kind != "retention" and event == "*" -%}{{ invalid("event", "* (any event) is for retention metrics") }}{%- endif -%}
{% set horizon %}{% if kind == "retention" %}({retention_day:UInt8} + 1){% else %}{window_days:UInt8}{% endif %}{% endset %}
{#- The times after and before exposure that count, for a metric event at m.timestamp. -#}
{% if kind == "retention" %}
{% set after %}m.timestamp >= x.exposed_at + toIntervalDay({retention_day:UInt8}) AND m.timestamp < x.exposed_at + toIntervalDay({retention_day:UInt8} + 1){% endset %}
{% set before %}m.timestamp >= x.exposed_at - toIntervalDay({retention_day:UInt8} + 1) AND m.timestamp < x.exposed_at - toIntervalDay({retention_day:UInt8}){% endset %}
{% else %}
{% set after %}m.timestamp > x.exposed_at AND m.timestamp <= x.exposed_at + toIntervalDay({window_days:UInt8}){% endset %}
{% set before %}m.timestamp < x.exposed_at AND m.timestamp >= x.exposed_at - toIntervalDay({window_days:UInt8}){% endset %}
{% endif %}
{% set n = steps | length %}
WITH
exposures AS
(
    SELECT
        cityHash64(actor_id) AS user_key,
        min(timestamp) AS exposed_at,
        argMin(JSONExtractString(properties, {variant_property:String}), timestamp) AS first_variant,
        uniqExact(JSONExtractString(properties, {variant_property:String})) > 1 AS several
    FROM events
    WHERE event = {exposure_event:String}
      AND is_bot = 0
      AND timestamp >= {start:DateTime} AND timestamp < {end:DateTime}
      AND JSONExtractString(properties, {experiment_property:String}) = {experiment:String}
      AND has({variants:Array(String)}, JSONExtractString(properties, {variant_property:String}))
    GROUP BY user_key
),
{#- Metric events of exposed users, aggregated per user: the events stream past a hash table of
    the exposed users (small), never the other way round. Users are told apart by a 64-bit hash of
    actor_id (cheaper to hash and join than the text; two of a million users share one with a
    probability of about 3e-8). -#}
measured AS
(
    SELECT
        m.user_key AS user_key,
{% if kind == "funnel" %}
        toUInt64(windowFunnel(toUInt64({window_days:UInt8}) * 86400000)(toUInt64(toUnixTimestamp64Milli(m.timestamp)){% for k in range(n) %}, {{ after }} AND m.event = {steps:Array(String)}[{{ k + 1 }}]{% endfor %}) = {{ n }}) AS after_events,
        toFloat64(after_events) AS after_total,
        toUInt64(windowFunnel(toUInt64({window_days:UInt8}) * 86400000)(toUInt64(toUnixTimestamp64Milli(m.timestamp)){% for k in range(n) %}, {{ before }} AND m.event = {steps:Array(String)}[{{ k + 1 }}]{% endfor %}) = {{ n }}) AS before_events,
        toFloat64(before_events) AS before_total
{% else %}
        countIf({{ after }}) AS after_events,
        sumIf(m.amount, {{ after }}) AS after_total,
        countIf({{ before }}) AS before_events,
        sumIf(m.amount, {{ before }}) AS before_total
{% endif %}
    FROM
    (
        SELECT cityHash64(actor_id) AS user_key, timestamp{% if kind == "funnel" %}, event{% endif %},
               {% if kind != "mean" %}1.0{% elif property == "revenue" %}revenue{% else %}JSONExtractFloat(properties, {property:String}){% endif %} AS amount
        FROM events
        WHERE {% if kind == "funnel" %}event IN {steps:Array(String)}{% elif event == "*" %}1{% else %}event = {event:String}{% endif %}
          AND is_bot = 0
          AND timestamp >= {start:DateTime}{% if cuped %} - toIntervalDay({{ horizon }}){% elif kind == "retention" %} + toIntervalDay({retention_day:UInt8}){% endif %}
          AND timestamp <= {end:DateTime} + toIntervalDay({{ horizon }})
    ) AS m
    INNER JOIN exposures AS x ON x.user_key = m.user_key
    WHERE ({{ after }}){% if cuped %} OR ({{ before }}){% endif %}
    GROUP BY m.user_key
),
valued AS
(
    SELECT
        if(x.several, '', x.first_variant) AS variant,
        x.several AS excluded_flag,
        if(x.several, 0, a.after_events) AS converting,
        if(x.several, 0.0, {% if kind != "mean" %}toFloat64(a.after_events > 0){% else %}a.after_total{% endif %}) AS y,
        if(x.several, 0.0, {% if not cuped %}0.0{% elif kind != "mean" %}toFloat64(a.before_events > 0){% else %}a.before_total{% endif %}) AS pre
    FROM exposures AS x
    LEFT JOIN measured AS a ON a.user_key = x.user_key
)
SELECT
    variant,
    toUInt8(excluded_flag) AS excluded,
    count() AS users,
    countIf(converting > 0) AS converters,
    sum(y) AS value_sum,
    sum(y * y) AS value_sum_squares,
    sum(pre) AS pre_sum,
    sum(pre * pre) AS pre_sum_squares,
    sum(pre * y) AS cross_sum
FROM valued
GROUP BY variant, excluded_flag
ORDER BY excluded_flag, indexOf({variants:Array(String)}, variant)
