/*---
description = """
Purchases of at least `min_amount` with from <= timestamp < to (UTC), per currency: how many, the
largest, the total and the latest one's time. Made for alerts ("a purchase over $1000 in the last
15 minutes"): alert on `max_amount`."""
roles = ["admin", "analyst", "marketer", "service", "support"]
cache_ttl_secs = 0
columns = { currency = "String", orders = "UInt64", max_amount = "Float64", total = "Float64", last_at = "DateTime64(3, 'UTC')" }

[params.from]
type = "DateTime"
default = "now-1h"

[params.to]
type = "DateTime"
default = "now"

[params.min_amount]
type = "Float64"
default = 0
min = 0

[params.currency]
type = "String"
description = "Only this ISO 4217 currency"

[[examples]]
name = "purchases of $1000 or more in the last 15 minutes"
params = { from = "now-15m", min_amount = 1000, currency = "USD" }
---*/
SELECT
    currency,
    count() AS orders,
    max(revenue) AS max_amount,
    sum(revenue) AS total,
    max(timestamp) AS last_at
FROM events
WHERE event = 'purchase'
  AND timestamp >= {from:DateTime} AND timestamp < {to:DateTime}
  AND revenue >= {min_amount:Float64}
{% if currency is not none %}
  AND currency = {currency:String}
{% endif %}
GROUP BY currency
ORDER BY max_amount DESC
