/*---
description = """
"Players who bought this also bought": the items most often bought by the users who bought
`item`, each with how many of them bought it (`users_both`, at least `min_support`), `confidence`
(the share of the item's buyers who bought it too), `lift` (confidence over the share of all
buyers who bought it: above 1, bought together more than by chance) and `cosine` (users_both over
the geometric mean of both items' buyers). Purchases with from <= timestamp < to (UTC), bots
excluded, refunds not subtracted; a user counts once per item. Ordered by `order_by` (lift by
default: a popular item everybody buys does not crowd out what goes with this one), then by
users_both (docs/predictions.md)."""
roles = ["admin", "analyst", "marketer", "service"]
cache_ttl_secs = 3600
columns = { item_id = "String", users_both = "UInt64", item_buyers = "UInt64", anchor_buyers = "UInt64", confidence = "Float64", lift = "Float64", cosine = "Float64" }

[params.item]
type = "String"
required = true
description = "The item whose buyers are looked at (item_id)"

[params.from]
type = "DateTime"
required = true

[params.to]
type = "DateTime"
required = true

[params.min_support]
type = "UInt32"
default = 2
min = 1
description = "The fewest users who bought both for an item to be listed"

[params.order_by]
type = "String"
default = "lift"
allowed = ["lift", "cosine", "users_both"]

[params.limit]
type = "UInt32"
default = 10
min = 1
max = 1000

[[examples]]
name = "bought with game-001 in the last 90 days"
params = { item = "game-001", from = "today-90d", to = "now" }
---*/
WITH
purchases AS
(
    SELECT actor_id, toString(item_id) AS item
    FROM events
    WHERE event = 'purchase' AND is_bot = 0 AND item_id != ''
      AND timestamp >= {from:DateTime} AND timestamp < {to:DateTime}
),
anchor AS
(
    SELECT DISTINCT actor_id FROM purchases WHERE item = {item:String}
)
SELECT
    c.item AS item_id,
    c.users_both AS users_both,
    b.buyers AS item_buyers,
    assumeNotNull((SELECT count() FROM anchor)) AS anchor_buyers,
    users_both / anchor_buyers AS confidence,
    confidence / (item_buyers / assumeNotNull((SELECT uniqExact(actor_id) FROM purchases))) AS lift,
    users_both / sqrt(anchor_buyers * item_buyers) AS cosine
FROM
(
    SELECT item, uniqExact(actor_id) AS users_both
    FROM purchases
    WHERE item != {item:String} AND actor_id IN (SELECT actor_id FROM anchor)
    GROUP BY item
    HAVING users_both >= {min_support:UInt32}
) AS c
INNER JOIN
(
    SELECT item, uniqExact(actor_id) AS buyers FROM purchases GROUP BY item
) AS b ON b.item = c.item
ORDER BY {{ order_by }} DESC, users_both DESC, item_id
LIMIT {limit:UInt32}
