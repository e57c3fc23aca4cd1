/*---
description = """
Conversion through 2-10 ordered steps (event names) for events with from <= timestamp < to (UTC),
bots excluded. A user enters at their first occurrence of step 1 in the range; each next step is
the first occurrence of that event after the previous step (order=ordered: other events may come in
between; order=strict: it must be the user's very next event) within window_seconds of entering.
Events with the same timestamp are taken in step order, so a user who did steps 1 and 2 in the
same millisecond converts; one event never satisfies two steps. The breakdown is the value of the
chosen column on the user's step-1 event (first touch). conversion_from_previous and
conversion_from_start are fractions (0-1); median_seconds_from_previous is the median time between
the previous step and this one over the users who reached this step."""
roles = ["admin", "analyst", "marketer", "service"]
cache_ttl_secs = 300
max_execution_secs = 60
columns = { step = "UInt8", event = "String", breakdown = "String", users = "UInt64", conversion_from_previous = "Float64", conversion_from_start = "Float64", median_seconds_from_previous = "Nullable(Float64)" }

[params.steps]
type = "Array(String)"
required = true
min_items = 2
max_items = 10
description = "Event names, in order"

[params.from]
type = "DateTime"
required = true

[params.to]
type = "DateTime"
required = true

[params.window_seconds]
type = "UInt32"
default = 86400
min = 1
max = 7776000
description = "How long after entering the funnel the later steps may happen"

[params.order]
type = "String"
default = "ordered"
allowed = ["ordered", "strict"]

[params.breakdown]
type = "String"
allowed = ["platform", "country", "browser", "os", "device_type", "channel", "utm_source"]

[params.segment]
type = "UUID"
description = "Only members of this segment (its latest refresh), to compare a segment with everyone"

[deprecated]
sunset = "2027-06-30"
successor = "v2"
note = "v2 counts the furthest step of any attempt (attempt=best, as windowFunnel and PostHog do); attempt=first answers as v1"

[[examples]]
name = "store purchase funnel, last 30 days"
params = { steps = ["game_view", "add_to_cart", "checkout_started", "purchase"], from = "today-30d", to = "now" }

[[examples]]
name = "signup to first purchase within a week, by platform"
params = { steps = ["signup", "purchase"], from = "today-30d", to = "now", window_seconds = 604800, breakdown = "platform" }

[[examples]]
name = "strict cart to checkout"
params = { steps = ["add_to_cart", "checkout_started"], from = "today-7d", to = "now", order = "strict" }
---*/
{% set n = steps | length %}
WITH
per_user AS
(
    SELECT
        actor_id,
        arraySort(
            x -> (tupleElement(x, 1), indexOf({steps:Array(String)}, tupleElement(x, 2))),
            groupArray((toUnixTimestamp64Milli(timestamp), toString(event), {% if breakdown %}toString({{ breakdown }}){% else %}''{% endif %}))
        ) AS evs
    FROM events
    WHERE timestamp >= {from:DateTime} AND timestamp < {to:DateTime} AND is_bot = 0
{% if segment is not none %}      AND actor_id IN (SELECT actor_id FROM segment_members WHERE segment_id = {segment:UUID} AND computed_at = (SELECT max(computed_at) FROM segment_members WHERE segment_id = {segment:UUID}))
{% endif %}{% if order == "ordered" %}      AND event IN {steps:Array(String)}
{% endif %}    GROUP BY actor_id
),
chains AS
(
    SELECT
        arrayFirstIndex(x -> tupleElement(x, 2) = {steps:Array(String)}[1], evs) AS i1,
        if(i1 = 0, 0, tupleElement(evs[i1], 1)) AS t1,
        if(i1 = 0, '', tupleElement(evs[i1], 3)) AS breakdown
{% for k in range(2, n + 1) %}
{% if order == "strict" %}
        , if(i{{ k - 1 }} = 0 OR i{{ k - 1 }} >= length(evs), 0,
             if(tupleElement(evs[i{{ k - 1 }} + 1], 2) = {steps:Array(String)}[{{ k }}]
                AND tupleElement(evs[i{{ k - 1 }} + 1], 1) <= t1 + {window_seconds:UInt32} * 1000, i{{ k - 1 }} + 1, 0)) AS i{{ k }}
{% else %}
        , if(i{{ k - 1 }} = 0, 0,
             arrayFirstIndex((x, j) -> j > i{{ k - 1 }} AND tupleElement(x, 2) = {steps:Array(String)}[{{ k }}]
                                        AND tupleElement(x, 1) <= t1 + {window_seconds:UInt32} * 1000, evs, arrayEnumerate(evs))) AS i{{ k }}
{% endif %}
        , if(i{{ k }} = 0, 0, tupleElement(evs[i{{ k }}], 1)) AS t{{ k }}
{% endfor %}
    FROM per_user
)
SELECT step, event, breakdown, users, conversion_from_previous, conversion_from_start, median_seconds_from_previous
FROM
(
{% for k in range(1, n + 1) %}
    SELECT
        toUInt8({{ k }}) AS step,
        {steps:Array(String)}[{{ k }}] AS event,
        breakdown,
        countIf(i{{ k }} > 0) AS users,
{% if k == 1 %}
        toFloat64(if(users = 0, 0, 1)) AS conversion_from_previous,
{% else %}
        if(countIf(i{{ k - 1 }} > 0) = 0, 0, users / countIf(i{{ k - 1 }} > 0)) AS conversion_from_previous,
{% endif %}
        if(count() = 0, 0, users / count()) AS conversion_from_start,
{% if k == 1 %}
        CAST(NULL AS Nullable(Float64)) AS median_seconds_from_previous
{% else %}
        if(users = 0, NULL, quantileExactInclusiveIf(0.5)((t{{ k }} - t{{ k - 1 }}) / 1000, i{{ k }} > 0)) AS median_seconds_from_previous
{% endif %}
    FROM chains
    WHERE i1 > 0
    GROUP BY breakdown
{% if not loop.last %}    UNION ALL
{% endif %}
{% endfor %}
)
ORDER BY breakdown, step
