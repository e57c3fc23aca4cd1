/*---
description = """
Conversion through 2-10 ordered steps for events with from <= timestamp < to (UTC, at most 30
years), bots excluded. A step is an event name, optionally narrowed by property filters (filter_*).
A user is an actor_id (user_id, else anonymous_id): identities are not merged, so steps before and
after a visitor is identified belong to two users (PostHog merges them into one person).

An attempt starts at a step-1 event. Each next step of an attempt is the earliest event after the
attempt's previous step that matches it (order=ordered: other events may come in between;
order=strict: it must be the user's very next event in the range), and counts only if it happens
at most window_seconds after the attempt's step-1 event (inclusive). An attempt reaches the steps
it completes this way, in order.

attempt=best (default): a user reaches the furthest step any of their attempts reaches, as
ClickHouse's windowFunnel(window) and PostHog count; of the attempts that reach it, the earliest
is the user's attempt for the breakdown and the times. attempt=first: only the user's first
step-1 event in the range starts an attempt (funnel v1).

Exclusions (exclude_events with exclude_from_steps, exclude_to_steps): an attempt is dropped when
the excluded event happens strictly after its step-from event and strictly before its step-to
event, or, when it never reaches step to, strictly after its step-from event and within its
window. A dropped attempt counts for no step; the user's other attempts still count, and a user
whose attempts are all dropped is not in the funnel (with attempt=first: the user whose first
attempt is dropped).

Edge cases: events are taken in time order, whatever order they arrived in; events with the same
timestamp are taken in step order (an event matching several steps by its lowest step), so steps
1 and 2 in the same millisecond convert; one event never counts for two steps of an attempt, also
when a step repeats (steps = view, cart, view needs two views), unlike windowFunnel, which lets one
event match a repeated step twice. Attempts may overlap: a later step-1 event starts its own attempt
even while an earlier one is open, and both may use the same later events. Only events before `to`
are read, so a window that crosses `to` is cut there: attempts that start less than window_seconds
before `to` have less time to convert; end the range window_seconds after the last entries you
compare. Events before `from` are not read: an attempt cannot start before it.

breakdown is the value of the chosen column on the step-1 event of the user's attempt.
conversion_from_previous and conversion_from_start are fractions (0-1);
median_seconds_from_previous is the median time between the previous step and this one in the
users' attempts, over the users who reached this step."""
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
description = "How long after an attempt's step-1 event its later steps may happen (inclusive)"

[params.order]
type = "String"
default = "ordered"
allowed = ["ordered", "strict"]

[params.attempt]
type = "String"
default = "best"
allowed = ["best", "first"]
description = "best: the furthest step any attempt reaches (windowFunnel); first: only the first step-1 event starts an attempt"

[params.breakdown]
type = "String"
allowed = ["platform", "country", "browser", "os", "device_type", "channel", "utm_source"]

[params.segment]
type = "UUID"
description = "Only members of this segment (its latest refresh), to compare a segment with everyone"

[params.filter_steps]
type = "Array(UInt8)"
default = []
max_items = 20
description = "Property filters, one per item of the four filter_* lists: the step (1-based) the filter narrows"

[params.filter_properties]
type = "Array(String)"
default = []
max_items = 20
description = "The property each filter reads: an event column (platform, country, item_id, revenue, …) by its name, any other name from the event's properties"

[params.filter_ops]
type = "Array(String)"
default = []
max_items = 20
allowed = ["=", "!=", ">", ">=", "<", "<=", "contains"]
description = "=, != and contains compare text (a number as written in the event; a missing property is empty text); >, >=, <, <= compare numbers (a missing or non-numeric property, or a non-numeric value, matches nothing)"

[params.filter_values]
type = "Array(String)"
default = []
max_items = 20
description = "The value each filter compares with"

[params.exclude_events]
type = "Array(String)"
default = []
max_items = 5
description = "Exclusions, one per item of the three exclude_* lists: the excluded event name"

[params.exclude_from_steps]
type = "Array(UInt8)"
default = []
max_items = 5
description = "The step after which the excluded event drops an attempt"

[params.exclude_to_steps]
type = "Array(UInt8)"
default = []
max_items = 5
description = "The step before which the excluded event drops an attempt (later than the from step)"

[[examples]]
name = "store purchase funnel, last 30 days"
params = { steps = ["game_view", "add_to_cart", "checkout_started", "purchase"], from = "today-30d", to = "now" }

[[examples]]
name = "signup to first purchase within a week, by platform"
params = { steps = ["signup", "purchase"], from = "today-30d", to = "now", window_seconds = 604800, breakdown = "platform" }

[[examples]]
name = "strict cart to checkout, first attempts only"
params = { steps = ["add_to_cart", "checkout_started"], from = "today-7d", to = "now", order = "strict", attempt = "first" }

[[examples]]
name = "views to paid purchases of more than 10, without a refund in between"
params = { steps = ["game_view", "purchase"], from = "today-30d", to = "now", filter_steps = [2], filter_properties = ["revenue"], filter_ops = [">"], filter_values = ["10"], exclude_events = ["refund"], exclude_from_steps = [1], exclude_to_steps = [2] }
---*/
WITH attempts AS
(
{% include "funnel/_attempts.sql" %}
)
SELECT
    toUInt8(i) AS step,
    {steps:Array(String)}[i] AS event,
    breakdown,
    reached[i] AS users,
    if(i = 1, toFloat64(users > 0), if(reached[i - 1] = 0, 0, users / reached[i - 1])) AS conversion_from_previous,
    if(reached[1] = 0, 0, users / reached[1]) AS conversion_from_start,
    medians[i] AS median_seconds_from_previous
FROM
(
    SELECT
        breakdown,
        [countIf(level >= 1){% for k in range(2, steps | length + 1) %}, countIf(level >= {{ k }}){% endfor %}] AS reached,
        [CAST(NULL AS Nullable(Float64)){% for k in range(2, steps | length + 1) %}, if(countIf(level >= {{ k }}) = 0, NULL, quantileExactInclusiveIf(0.5)((t{{ k }} - t{{ k - 1 }}) / 1000, level >= {{ k }})){% endfor %}] AS medians
    FROM attempts
    GROUP BY breakdown
)
ARRAY JOIN arrayEnumerate(reached) AS i
ORDER BY breakdown, step
