{#- One row per user who entered the funnel: the attempt chosen by `attempt` (see funnel/v2),
    its furthest step `level`, the times t1..tN of its steps (ms after `from`, plus 1; 0 for steps
    it did not reach) and the breakdown value of its step-1 event. Users are grouped by
    cityHash64(actor_id): cheaper than grouping the text, and two of a million users share a hash
    with odds of about 3e-8.

    A user's events in the range become one sorted array of UInt64 keys:
        bits 24..63  ms since `from`, plus 1    (time order; never 0)
        bits 20..23  the lowest step the event satisfies, 0 for none (same-ms events in step order)
        bits  0..19  which steps (bit k-1 for step k) and which exclusions (bit N+j) it satisfies
    Everything after the sort is a fixed number of linear passes over scalar arrays (arrayMap,
    arrayReverseFill, arrayShiftLeft), about n * n / 2 of them, so the cost per user grows with
    their events, never with events times attempts:

    - s{J}_{K}: at each position, the key (so the time) of step K in the attempt whose step J is
      the first step-J event at or after it (ordered; strict: exactly there), the sentinel for a
      step it does not reach;
      built from step N back to step 2, each from the next one a position later. An attempt takes
      at each step the earliest matching event after its previous step, so these are suffix
      quantities, filled from the end by arrayReverseFill.
    - s2_K lines up with the step-1 events: the times of the attempt each one starts.
    - window_ends (kept_ends): at each step-1 event, the largest key within its attempt's window (0
      elsewhere, and for attempts an exclusion drops); the attempt reaches step K when s2_K is at
      most that,
      so one arrayFirstIndex per step finds the earliest attempt reaching it.
    - after_x{J}, x{J}_{K}: for exclusion J, the time of the first excluded event strictly after each
      position's time (INF when none), carried back to the attempt's step `from` the same way; an
      attempt is dropped when that time is before its step `to`, or, when it never reaches step
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
{#- Times since `from` have 40 bits of the key: about 34 years. -#}
{%- if (to[:4] | int) - (from[:4] | int) > 30 -%}{{ invalid("to", "must be at most 30 years after from") }}{%- endif -%}
{% set lifted = ["platform", "country", "region", "city", "locale", "browser", "os", "device_type", "app_version", "item_id", "developer_id", "currency", "channel", "utm_source", "utm_medium", "utm_campaign", "referrer_host", "page_path", "revenue", "duration_ms"] %}
{% set window %}toUInt64({window_seconds:UInt32}) * 1000{% endset %}
{#- The sentinel key is at 2^40 - 1 ms after `from`, beyond every window of a range of at most
    30 years, and a candidate for steps 2..n: shifted in from the end, it stands for a step an
    attempt does not reach. -#}
{% set never = "toUInt64(1099511627775)" %}
{% set sentinel %}toUInt64(bitShiftLeft({{ never }}, 24) + bitShiftLeft(toUInt64(1), {{ n }}) - 2){% endset %}
{#- Each step is a subquery of its own: an alias used twice in one SELECT is expanded twice, and
    with 10 steps the expanded expressions would outgrow ClickHouse's query tree limit. -#}
{% set bd %}{% if breakdown %}, breakdown_values{% endif %}{% endset %}
{% set chains %}{% for k in range(2, n + 1) %}, s2_{{ k }}{% endfor %}{% endset %}
SELECT level, breakdown{% for k in range(1, n + 1) %}, t{{ k }}{% endfor %}
FROM
(
    {#- The chosen attempt: at each step-1 event of an attempt that is not dropped, kept_ends holds
        the largest key within its window (0 elsewhere): the attempt reaches step k when s2_k is at
        most that. No if() or multiIf() around array functions or elements, whose short-circuit
        evaluation would filter (copy) the arrays first. -#}
    SELECT
{% if attempt == "best" %}
        arrayFirstIndex(deadline -> deadline > 0, kept_ends) AS first1,
{% for k in range(2, n + 1) %}
        arrayFirstIndex((x, deadline) -> x <= deadline, s2_{{ k }}, kept_ends) AS first{{ k }},
{% endfor %}
        toUInt8({% for k in range(1, n + 1) %}{% if k > 1 %} + {% endif %}(first{{ k }} > 0){% endfor %}) AS level,
        [{% for k in range(1, n + 1) %}{% if k > 1 %}, {% endif %}first{{ k }}{% endfor %}][level] AS p,
{% else %}
        arrayFirstIndex(e -> bitTest(e, 0), event_keys) AS p,
        toUInt8((kept_ends[p] > 0) * (1{% for k in range(2, n + 1) %} + (s2_{{ k }}[p] <= kept_ends[p]){% endfor %})) AS level,
{% endif %}
{% if breakdown %}
        breakdown_values[p] AS breakdown,
{% else %}
        '' AS breakdown,
{% endif %}
        bitShiftRight(event_keys[p], 24) AS t1
{% for k in range(2, n + 1) %}
        , bitShiftRight(s2_{{ k }}[p], 24) * (level >= {{ k }}) AS t{{ k }}
{% endfor %}
    FROM
    (
        {#- Exclusions: which attempts they drop. -#}
        SELECT
            event_keys{{ bd }}{{ chains }},
{% if nx > 0 %}
            arrayMap((deadline{% for k in range(2, n + 1) %}, x{{ k }}{% endfor %}) -> if(deadline > 0, 1{% for k in range(2, n + 1) %} + (x{{ k }} <= deadline){% endfor %}, 0), window_ends{{ chains }}) AS reach
{% for j in range(nx) %}
            , arrayShiftLeft(arrayReverseFill((v, e) -> bitTest(e, {{ n + j }}), arrayMap(e -> if(bitTest(e, {{ n + j }}), bitShiftRight(e, 24), 0), event_keys), event_keys), 1) AS next_x{{ j }}
            , arrayReverseFill(v -> v > 0, arrayMap((e, following, x) -> if(bitShiftRight(e, 24) != bitShiftRight(following, 24), if(x = 0, 18446744073709551615, x), 0), event_keys, arrayShiftLeft(event_keys, 1), next_x{{ j }})) AS after_x{{ j }}
{% for k in range(n, 1, -1) %}{% if k <= exclude_from_steps[j] %}
            , {% if ordered %}arrayReverseFill((v, e) -> bitTest(e, {{ k - 1 }}), {% endif %}arrayMap((e, v) -> if(bitTest(e, {{ k - 1 }}), v, 0), event_keys, {% if k == exclude_from_steps[j] %}after_x{{ j }}{% else %}arrayShiftLeft(x{{ j }}_{{ k + 1 }}, 1){% endif %}){% if ordered %}, event_keys){% endif %} AS x{{ j }}_{{ k }}
{% endif %}{% endfor %}
            , arrayMap((e, r, x, until) -> r >= {exclude_from_steps:Array(UInt8)}[{{ j + 1 }}] AND if(r >= {exclude_to_steps:Array(UInt8)}[{{ j + 1 }}], x < bitShiftRight(until, 24), x <= bitShiftRight(e, 24) + {{ window }}),
                       event_keys, reach, {% if exclude_from_steps[j] == 1 %}after_x{{ j }}{% else %}arrayShiftLeft(x{{ j }}_2, 1){% endif %}, {% for k in range(2, n + 1) %}{% if k == exclude_to_steps[j] %}s2_{{ k }}{% endif %}{% endfor %}) AS dropped{{ j }}
{% endfor %}
            , arrayMap((deadline{% for j in range(nx) %}, d{{ j }}{% endfor %}) -> if({% for j in range(nx) %}d{{ j }} OR {% endfor %}0, 0, deadline), window_ends{% for j in range(nx) %}, dropped{{ j }}{% endfor %}) AS kept_ends
{% else %}
            window_ends AS kept_ends
{% endif %}
        FROM
        (
            {#- s{j}_{k} is computed over the keys shifted left by j - 1, so that it lines up with
                s{j+1}_k one position later, and s2_k with the step-1 events whose attempts it
                times. -#}
            SELECT
                event_keys{{ bd }},
{% for j in range(n, 1, -1) %}
                arrayMap(e -> bitTest(e, {{ j - 1 }}), arrayShiftLeft(event_keys, {{ j - 1 }}, {{ sentinel }})) AS is{{ j }},
{% for k in range(j, n + 1) %}
                {% if ordered %}arrayReverseFill((v, c) -> c, {% else %}arrayMap((v, c) -> if(c, v, {{ sentinel }}), {% endif %}{% if k == j %}arrayShiftLeft(event_keys, {{ j - 1 }}, {{ sentinel }}){% else %}s{{ j + 1 }}_{{ k }}{% endif %}, is{{ j }}) AS s{{ j }}_{{ k }},
{% endfor %}{% endfor %}
                arrayMap(e -> bitOr(bitShiftLeft(bitShiftRight(e, 24) + {{ window }}, 24), 16777215) * bitTest(e, 0), event_keys) AS window_ends
            FROM
            (
                SELECT
{% if breakdown %}
                    arraySort(groupArray((event_key, breakdown_value))) AS sorted,
                    arrayMap(e -> tupleElement(e, 1), sorted) AS event_keys,
                    arrayMap(e -> tupleElement(e, 2), sorted) AS breakdown_values
{% else %}
                    arraySort(groupArray(event_key)) AS event_keys
{% endif %}
                FROM
                (
                    SELECT
                        cityHash64(actor_id) AS user_key,
                        bitShiftLeft(toUInt64(toUnixTimestamp64Milli(timestamp) - toUnixTimestamp({from:DateTime}) * 1000 + 1), 24)
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
                GROUP BY user_key
            )
        )
    )
)
WHERE level > 0
