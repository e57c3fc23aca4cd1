/*---
description = """
One user's profile from all their events (bots included, as a support view): first and last seen,
events by type, sessions, net revenue by currency, their five most frequent items, platforms and
countries. No row when the user has no events."""
roles = ["admin", "analyst", "support", "service"]
cache_ttl_secs = 30
max_execution_secs = 10
max_rows = 1
columns = { user_id = "String", first_seen = "DateTime64(3, 'UTC')", last_seen = "DateTime64(3, 'UTC')", events = "UInt64", events_by_type = "Map(String, UInt64)", sessions = "UInt64", revenue = "Map(String, Float64)", top_items = "Array(String)", platforms = "Array(String)", countries = "Array(String)" }
# Roles without `pii` in config/access.toml see the user id pseudonymized.
pii_columns = ["user_id"]

[params.user_id]
type = "String"
required = true

[[examples]]
name = "a customer"
params = { user_id = "user-000042" }
---*/
SELECT
    {user_id:String} AS user_id,
    min(timestamp) AS first_seen,
    max(timestamp) AS last_seen,
    count() AS events,
    CAST(sumMap(map(toString(event), toUInt64(1))) AS Map(String, UInt64)) AS events_by_type,
    uniqExactIf(session_id, session_id != '') AS sessions,
    CAST(sumMapIf(map(toString(currency), if(event = 'refund', -revenue, revenue)), event IN ('purchase', 'refund')) AS Map(String, Float64)) AS revenue,
    topKIf(5)(item_id, item_id != '') AS top_items,
    arraySort(groupUniqArray(toString(platform))) AS platforms,
    arraySort(groupUniqArrayIf(toString(country), country != '')) AS countries
FROM events AS e
-- Qualified: the output column user_id would otherwise shadow the table's in WHERE.
WHERE e.user_id = {user_id:String}
HAVING count() > 0
