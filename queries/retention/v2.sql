/*---
description = """
Cohort retention. A user's cohort is the period (UTC day, ISO week from Monday, or month) of their
first event ever, or, with start_event, of their first start_event ever; cohorts are the whole
periods from the one containing `from` to the one containing `to` (v1 cut the first and last at
`from` and `to`, and took the first start_event from `from` on). retained at period_offset k counts
cohort users with an event (or, with return_event, a return_event) in the k-th period after the
cohort's; offset 0 is the cohort's own period. Offsets run 0..periods, up to the current period (which
is still filling). Bots excluded.

As ClickHouse's retention(cond_0, cond_k) and PostHog's first-time retention: a return in period k
counts whatever the user did in the periods between (retention is not a funnel), and a user is
counted once per period; offset 0 without return_event is the whole cohort (retention()'s first
element). Where chgate differs on purpose: with return_event, offset 0 counts the cohort users with
a return_event in the cohort's own period, before or after their start_event, so it need not be the
whole cohort. Weeks start on Monday (PostHog's default is Sunday). A user is an actor_id (user_id, else anonymous_id): identities are
not merged, so events before and after a user is identified are two users."""
roles = ["admin", "analyst", "marketer", "service"]
cache_ttl_secs = 600
max_execution_secs = 60
columns = { cohort = "Date", cohort_size = "UInt64", period_offset = "UInt8", retained = "UInt64", retention_pct = "Float64" }

[params.from]
type = "Date"
required = true

[params.to]
type = "Date"
required = true

[params.period]
type = "String"
default = "week"
allowed = ["day", "week", "month"]

[params.periods]
type = "UInt8"
default = 8
min = 1
max = 12

[params.start_event]
type = "String"
description = "Cohort by the first time ever users did this (default: their first event)"

[params.return_event]
type = "String"
description = "Count returns by this event (default: any event)"

[params.segment]
type = "UUID"
description = "Only members of this segment (its latest refresh), to compare a segment with everyone"

[[examples]]
name = "weekly cohorts, last 8 weeks"
params = { from = "today-56d", to = "today", period = "week", periods = 8 }

[[examples]]
name = "buyers coming back to buy again, monthly"
params = { from = "2026-06-01", to = "2026-11-30", period = "month", periods = 6, start_event = "purchase", return_event = "purchase" }
---*/
{% set unit = period %}
{% set members %}actor_id IN (SELECT actor_id FROM segment_members WHERE segment_id = {segment:UUID} AND computed_at = (SELECT max(computed_at) FROM segment_members WHERE segment_id = {segment:UUID})){% endset %}
{% set bucket = {"day": "toDate", "week": "toMonday", "month": "toStartOfMonth"}[period] %}
{% set add = {"day": "addDays", "week": "addWeeks", "month": "addMonths"}[period] %}
WITH
cohorts AS
(
{% if start_event %}
    SELECT actor_id, {{ bucket }}(toDate(min(timestamp))) AS cohort
    FROM events
    WHERE event = {start_event:String} AND is_bot = 0
{% if segment is not none %}      AND {{ members }}
{% endif %}    GROUP BY actor_id
    HAVING cohort BETWEEN {{ bucket }}({from:Date}) AND {{ bucket }}({to:Date})
{% else %}
    SELECT actor_id, {{ bucket }}(first_day) AS cohort
    FROM
    (
        SELECT actor_id, toDate(min(first_seen)) AS first_day
        FROM user_first_seen
{% if segment is not none %}        WHERE {{ members }}
{% endif %}        GROUP BY actor_id
    )
    WHERE cohort BETWEEN {{ bucket }}({from:Date}) AND {{ bucket }}({to:Date})
{% endif %}
),
activity AS
(
    SELECT DISTINCT actor_id, {{ bucket }}(toDate(timestamp)) AS active
    FROM events
    WHERE is_bot = 0
      AND timestamp >= {{ bucket }}({from:Date})
      AND actor_id IN (SELECT actor_id FROM cohorts)
{% if return_event %}      AND event = {return_event:String}
{% endif %}
),
sizes AS
(
    SELECT cohort, count() AS cohort_size FROM cohorts GROUP BY cohort
),
returns AS
(
    SELECT c.cohort AS cohort, toUInt8(dateDiff('{{ unit }}', c.cohort, a.active)) AS period_offset, uniqExact(a.actor_id) AS retained
    FROM cohorts AS c
    INNER JOIN activity AS a ON a.actor_id = c.actor_id
    WHERE a.active >= c.cohort AND dateDiff('{{ unit }}', c.cohort, a.active) <= {periods:UInt8}
    GROUP BY cohort, period_offset
)
SELECT
    s.cohort AS cohort,
    s.cohort_size AS cohort_size,
    o.period_offset AS period_offset,
    r.retained AS retained,
    round(100 * r.retained / s.cohort_size, 2) AS retention_pct
FROM sizes AS s
CROSS JOIN
(
    SELECT toUInt8(number) AS period_offset FROM numbers(toUInt64({periods:UInt8}) + 1)
) AS o
LEFT JOIN returns AS r ON r.cohort = s.cohort AND r.period_offset = o.period_offset
WHERE {{ add }}(s.cohort, o.period_offset) <= {{ bucket }}(today())
ORDER BY cohort, period_offset
