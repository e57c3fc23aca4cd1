/*---
description = """
How long users took to convert between two steps of a funnel: a histogram of the time from step
from_step to step to_step (default: the last) in each user's attempt, over the users whose
attempt reached step to_step. Steps, attempts, windows, filters and exclusions are those of funnel
v2 (same parameters, same semantics, same chosen attempt: with attempt=best, the earliest of the
attempts that reach the user's furthest step). The range from the shortest to the longest time of
all breakdown values is cut into `bins` bins of equal width; bin k holds times t with
from_seconds <= t < to_seconds, the last bin also its to_seconds. Every bin is listed, empty ones
with 0 users; share is the fraction of the breakdown value's converted users in the bin. No rows
when no attempt reached step to_step."""
roles = ["admin", "analyst", "marketer", "service"]
cache_ttl_secs = 300
max_execution_secs = 60
columns = { breakdown = "String", bin = "UInt8", from_seconds = "Float64", to_seconds = "Float64", users = "UInt64", share = "Float64" }
params_from = "funnel/v2"

[params.from_step]
type = "UInt8"
default = 1
min = 1
max = 9
description = "The step the time is measured from"

[params.to_step]
type = "UInt8"
min = 2
max = 10
description = "The step the time is measured to (default: the last step)"

[params.bins]
type = "UInt8"
default = 20
min = 1
max = 100

[[examples]]
name = "time from first view to purchase, last 30 days"
params = { steps = ["game_view", "add_to_cart", "purchase"], from = "today-30d", to = "now" }

[[examples]]
name = "cart to purchase within a week, by platform, 10 bins"
params = { steps = ["game_view", "add_to_cart", "purchase"], from = "today-30d", to = "now", window_seconds = 604800, from_step = 2, to_step = 3, bins = 10, breakdown = "platform" }
---*/
{% set n = steps | length %}
{%- if to_step is not none and (to_step > n or to_step <= from_step) or from_step >= n -%}{{ invalid("to_step", "must be a later step than from_step, at most the number of steps") }}{%- endif -%}
WITH attempts AS
(
{% include "funnel/_attempts.sql" %}
)
SELECT
    breakdown,
    toUInt8(bin) AS bin,
    lo + (bin - 1) * width AS from_seconds,
    if(bin = {bins:UInt8}, hi, lo + bin * width) AS to_seconds,
    counts[bin] AS users,
    users / length(seconds) AS share
FROM
(
    SELECT
        breakdown,
        seconds,
        lo,
        hi,
        (hi - lo) / {bins:UInt8} AS width,
        arrayMap(s -> if(width = 0, 1, least(toUInt16(floor((s - lo) / width)) + 1, {bins:UInt8})), seconds) AS bin_of,
        arrayMap(b -> countEqual(bin_of, b), range(1, {bins:UInt8} + 1)) AS counts
    FROM
    (
        SELECT
            breakdown,
            seconds,
            min(arrayMin(seconds)) OVER () AS lo,
            max(arrayMax(seconds)) OVER () AS hi
        FROM
        (
            SELECT
                breakdown,
                groupArray(({% for k in range(1, n + 1) %}{% if k == to_step or (to_step is none and k == n) %}t{{ k }}{% endif %}{% endfor %} - {% for k in range(1, n + 1) %}{% if k == from_step %}t{{ k }}{% endif %}{% endfor %}) / 1000) AS seconds
            FROM attempts
            WHERE level >= {% if to_step is none %}{{ n }}{% else %}{to_step:UInt8}{% endif %}

            GROUP BY breakdown
        )
    )
)
ARRAY JOIN arrayEnumerate(counts) AS bin
ORDER BY breakdown, bin
