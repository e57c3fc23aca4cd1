{#- One row per user who entered the funnel: the attempt chosen by `attempt` (see funnel/v2),
    its furthest step `level`, the times t1..tN of its steps (ms after `from`, plus 1; 0 for steps
    it did not reach) and the breakdown value of its step-1 event.

    A user's events in the range become one sorted array of UInt64 keys:
        bits 24..63  ms since `from`            (time order)
        bits 20..23  the lowest step the event satisfies, 0 for none (same-ms events in step order)
        bits  0..19  which steps (bit k-1 for step k) and which exclusions (bit N+j) it satisfies
    Everything after the sort is a fixed number of linear passes over that array, so the cost per
    user grows with their events, never with events times attempts:

    - c{K}_{J}: for each position i, the time of step K in the attempt whose step J is the first
      candidate for step J at or after i (ordered; strict: exactly at i), built from step K back to
      step J by arrayReverseFill; 0 when that attempt never reaches step K. Shifted by one (s{K}),
      it gives, at each step-1 event, the time its attempt reaches step K: an attempt takes at each
      step the earliest matching event after its previous step.
    - reach: at each step-1 event, 1 + the steps 2..N its attempt reaches within the window.
    - x{J}: for exclusion J, the time of the first exclusion event strictly after each position's
      time (INF when none), carried to the attempt's step `from` the same way; an attempt is
      dropped (reach 0) when that time is before its step `to`, or, when it never reaches step
      `to`, within its window. -#}
{% set n = steps | length %}
{% set nx = exclude_events | length %}
{% set nf = filter_steps | length %}
{% set ordered = order == "ordered" %}
{%- if filter_properties | length != nf -%}{{ invalid("filter_properties", "must have as many items as filter_steps") }}{%- endif -%}
{%- if filter_ops | length != nf -%}{{ invalid("filter_ops", "must have as many items as filter_steps") }}{%- endif -%}
{%- if filter_values | length != nf -%}{{ invalid("filter_values", "must have as many items as filter_steps") }}{%- endif -%}
{%- for bad in range(nf) if filter_steps[bad] < 1 or filter_steps[bad] > n -%}{{ invalid("filter_steps", "each item is a step number, from 1 to the number of steps") }}{%- endfor -%}
{%- if exclude_from_steps | length != nx -%}{{ invalid("exclude_from_steps", "must have as many items as exclude_events") }}{%- endif -%}
{%- if exclude_to_steps | length != nx -%}{{ invalid("exclude_to_steps", "must have as many items as exclude_events") }}{%- endif -%}
{%- for bad in range(nx) if exclude_from_steps[bad] < 1 or exclude_from_steps[bad] >= exclude_to_steps[bad] or exclude_to_steps[bad] > n -%}{{ invalid("exclude_to_steps", "each exclusion runs from a step to a later step, within the number of steps") }}{%- endfor -%}
{% set lifted = ["platform", "country", "region", "city", "locale", "browser", "os", "device_type", "app_version", "item_id", "developer_id", "currency", "channel", "utm_source", "utm_medium", "utm_campaign", "referrer_host", "page_path", "revenue", "duration_ms"] %}
{% set shift_left %}arrayPushBack(arrayPopFront({% endset %}
{% set window %}toUInt64({window_seconds:UInt32}) * 1000{% endset %}
SELECT
    level,
{% if breakdown %}
    breakdown_values[p] AS breakdown,
{% else %}
    '' AS breakdown,
{% endif %}
    t[p] AS t1
{% for k in range(2, n + 1) %}
    , if(level >= {{ k }}, s{{ k }}[p], 0) AS t{{ k }}
{% endfor %}
FROM
(
    SELECT
{% if breakdown %}
        arraySort(groupArray((event_key, breakdown_value))) AS sorted,
        arrayMap(e -> tupleElement(e, 1), sorted) AS event_keys,
        arrayMap(e -> tupleElement(e, 2), sorted) AS breakdown_values,
{% else %}
        arraySort(groupArray(event_key)) AS event_keys,
{% endif %}
        arrayMap(e -> bitShiftRight(e, 24) + 1, event_keys) AS t,
        arrayMap(e -> bitAnd(e, 1048575), event_keys) AS m
{% for k in range(2, n + 1) %}
{% for j in range(k, 1, -1) %}
        , {% if ordered %}arrayReverseFill(v -> v > 0, {% endif %}arrayMap((b, v) -> if(bitTest(b, {{ j - 1 }}), v, 0), m, {% if j == k %}t{% else %}{{ shift_left }}c{{ k }}_{{ j + 1 }}), 0){% endif %}){% if ordered %}){% endif %} AS c{{ k }}_{{ j }}
{% endfor %}
        , {{ shift_left }}c{{ k }}_2), 0) AS s{{ k }}
{% endfor %}
        , arrayMap((b, t1{% for k in range(2, n + 1) %}, x{{ k }}{% endfor %}) -> if(bitTest(b, 0), 1{% for k in range(2, n + 1) %} + (x{{ k }} > 0 AND x{{ k }} <= t1 + {{ window }}){% endfor %}, 0), m, t{% for k in range(2, n + 1) %}, s{{ k }}{% endfor %}) AS reach
{% for j in range(nx) %}
        , {{ shift_left }}arrayReverseFill(v -> v > 0, arrayMap((b, v) -> if(bitTest(b, {{ n + j }}), v, 0), m, t))), 0) AS next_x{{ j }}
        , arrayReverseFill(v -> v > 0, arrayMap((v, following, x) -> if(v != following, if(x = 0, 18446744073709551615, x), 0), t, {{ shift_left }}t), 0), next_x{{ j }})) AS after_x{{ j }}
{% for k in range(n, 1, -1) %}{% if k <= exclude_from_steps[j] %}
        , {% if ordered %}arrayReverseFill(v -> v > 0, {% endif %}arrayMap((b, v) -> if(bitTest(b, {{ k - 1 }}), v, 0), m, {% if k == exclude_from_steps[j] %}after_x{{ j }}{% else %}{{ shift_left }}x{{ j }}_{{ k + 1 }}), 0){% endif %}){% if ordered %}){% endif %} AS x{{ j }}_{{ k }}
{% endif %}{% endfor %}
        , arrayMap((r, t1, x, until) -> r >= {exclude_from_steps:Array(UInt8)}[{{ j + 1 }}] AND if(r >= {exclude_to_steps:Array(UInt8)}[{{ j + 1 }}], x < until, x <= t1 + {{ window }}),
                   reach, t, {% if exclude_from_steps[j] == 1 %}after_x{{ j }}{% else %}{{ shift_left }}x{{ j }}_2), 0){% endif %}, {% for k in range(2, n + 1) %}{% if k == exclude_to_steps[j] %}s{{ k }}{% endif %}{% endfor %}) AS dropped{{ j }}
{% endfor %}
        , {% if nx > 0 %}arrayMap((r{% for j in range(nx) %}, d{{ j }}{% endfor %}) -> if({% for j in range(nx) %}d{{ j }} OR {% endfor %}0, 0, r), reach{% for j in range(nx) %}, dropped{{ j }}{% endfor %}){% else %}reach{% endif %} AS kept
{% if attempt == "best" %}
        , arrayMax(kept) AS level
        , indexOf(kept, level) AS p
{% else %}
        , arrayFirstIndex(b -> bitTest(b, 0), m) AS p
        , kept[p] AS level
{% endif %}
    FROM
    (
        SELECT
            actor_id,
            bitShiftLeft(toUInt64(toUnixTimestamp64Milli(timestamp) - toUnixTimestamp({from:DateTime}) * 1000), 24)
                + bitShiftLeft(toUInt64(multiIf({% for k in range(1, n + 1) %}step{{ k }}, {{ k }}, {% endfor %}0)), 20)
{% for k in range(1, n + 1) %}
                + bitShiftLeft(toUInt64(step{{ k }}), {{ k - 1 }})
{% endfor %}
{% for j in range(nx) %}
                + bitShiftLeft(toUInt64(event = {exclude_events:Array(String)}[{{ j + 1 }}]), {{ n + j }})
{% endfor %}
                AS event_key
{% if breakdown %}
            , if(step1, toString({{ breakdown }}), '') AS breakdown_value
{% endif %}
        FROM
        (
            SELECT
                actor_id,
                timestamp,
                event
{% if breakdown %}
                , {{ breakdown }}
{% endif %}
{% for k in range(1, n + 1) %}
                , event = {steps:Array(String)}[{{ k }}]
{% for i in range(nf) %}{% if filter_steps[i] == k %}
{% set property %}{filter_properties:Array(String)}[{{ i + 1 }}]{% endset %}
{% set value %}{filter_values:Array(String)}[{{ i + 1 }}]{% endset %}
{% if filter_ops[i] in [">", ">=", "<", "<="] %}
                  AND ifNull({% if filter_properties[i] in lifted %}{% for column in lifted %}{% if filter_properties[i] == column %}{% if column in ["revenue", "duration_ms"] %}{{ column }}{% else %}toFloat64OrNull(toString({{ column }})){% endif %}{% endif %}{% endfor %}{% else %}JSONExtract(properties, {{ property }}, 'Nullable(Float64)'){% endif %} {{ filter_ops[i] }} toFloat64OrNull({{ value }}), 0)
{% else %}
{% set text %}{% if filter_properties[i] in lifted %}{% for column in lifted %}{% if filter_properties[i] == column %}toString({{ column }}){% endif %}{% endfor %}{% else %}if(JSONType(properties, {{ property }}) = 'String', JSONExtractString(properties, {{ property }}), JSONExtractRaw(properties, {{ property }})){% endif %}{% endset %}
                  AND {% if filter_ops[i] == "contains" %}position({{ text }}, {{ value }}) > 0{% else %}{{ text }} {{ filter_ops[i] }} {{ value }}{% endif %}
{% endif %}
{% endif %}{% endfor %}
                  AS step{{ k }}
{% endfor %}
            FROM events
            WHERE timestamp >= {from:DateTime} AND timestamp < {to:DateTime} AND is_bot = 0
{% if segment is not none %}
              AND actor_id IN (SELECT actor_id FROM segment_members WHERE segment_id = {segment:UUID} AND computed_at = (SELECT max(computed_at) FROM segment_members WHERE segment_id = {segment:UUID}))
{% endif %}
{% if ordered %}
              AND (event IN {steps:Array(String)}{% if nx > 0 %} OR event IN {exclude_events:Array(String)}{% endif %})
{% endif %}
        )
    )
    GROUP BY actor_id
)
WHERE level > 0
