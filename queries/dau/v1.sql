/*---
description = """
Daily active users: distinct users (user_id, else anonymous_id) with at least one event on each
UTC day from `from` to `to` inclusive, bots excluded. Days without activity are listed with 0.
Served from the dau_daily rollup (closed days finalized in dau_final, used while no row has been
added to them since); with `segment`, counted over the segment's members in `events`."""
roles = ["admin", "analyst", "marketer", "support", "service"]
cache_ttl_secs = 300
max_execution_secs = 10
columns = { day = "Date", users = "UInt64" }

[params.from]
type = "Date"
required = true
description = "First day (inclusive, UTC)"

[params.to]
type = "Date"
required = true
description = "Last day (inclusive, UTC)"

[params.platform]
type = "String"
description = "Only this platform"
allowed = ["web", "ios", "android", "desktop", "server", "other"]

[params.country]
type = "String"
description = "Only this country (ISO 3166-1 alpha-2)"

[params.segment]
type = "UUID"
description = "Only members of this segment (its latest refresh), to compare a segment with everyone"

[[examples]]
name = "last 30 days"
params = { from = "today-30d", to = "today" }

[[examples]]
name = "iOS users in Russia in November 2026"
params = { from = "2026-11-01", to = "2026-11-30", platform = "ios", country = "RU" }
---*/
{% set members %}actor_id IN (SELECT actor_id FROM segment_members WHERE segment_id = {segment:UUID} AND computed_at = (SELECT max(computed_at) FROM segment_members WHERE segment_id = {segment:UUID})){% endset %}
{% set filters %}{% if platform %} AND platform = {platform:String}{% endif %}{% if country %} AND country = {country:String}{% endif %}{% endset %}
{% if segment is not none %}
SELECT toDate(timestamp) AS day, uniq(actor_id) AS users
FROM events
WHERE timestamp >= toDateTime({from:Date}) AND timestamp < toDateTime({to:Date} + 1) AND is_bot = 0
  AND {{ members }}{{ filters }}
GROUP BY day
{% else %}
{% set bucket = "toDate" %}
{% set granularity_sql = "'day'" %}
SELECT period AS day, users
FROM
(
{% include "dau/_users.sql" %}
)
{% endif %}
ORDER BY day WITH FILL FROM {from:Date} TO {to:Date} + 1
