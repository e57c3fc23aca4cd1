{#- Distinct users per period (`bucket`: toDate, toMonday or toStartOfMonth of the day) from `from`
    to `to`, with the dau template's `platform` and `country` filters when the including template
    has them, as rows (period, users). Closed periods come from dau_final while its fingerprint
    still equals the rollup's (no row added since they were finalized: src/rollups); the others
    merge dau_daily's states. `granularity_sql`: the final rows' granularity, as SQL. -#}
{% set users_filters %}{% if platform is defined and platform %} AND platform = {platform:String}{% endif %}{% if country is defined and country %} AND country = {country:String}{% endif %}{% endset %}
    WITH
    checked AS
    (
        {#- Each period of the range with its finalized value, fresh when one exists with the
            rollup's fingerprint. Referenced twice, so computed twice: it reads only fingerprints
            and final rows, never states. -#}
        SELECT l.period AS period, f.users AS users, f.present = 1 AND f.fingerprint = l.fingerprint AS fresh
        FROM
        (
            SELECT {{ bucket }}(day) AS period, sum(events) AS fingerprint
            FROM dau_daily
            WHERE day BETWEEN {from:Date} AND {to:Date}{{ users_filters }}
            GROUP BY period
        ) AS l
        LEFT JOIN
        (
            SELECT period, argMax(users, finalized_at) AS users, argMax(fingerprint, finalized_at) AS fingerprint, toUInt8(1) AS present
            FROM dau_final
            WHERE granularity = {{ granularity_sql }}
              AND by_platform = {% if platform is defined and platform %}1{% else %}0{% endif %} AND by_country = {% if country is defined and country %}1{% else %}0{% endif %}
              AND period BETWEEN {{ bucket }}({from:Date}) AND {to:Date}{{ users_filters }}
            GROUP BY period
        ) AS f ON f.period = l.period
    )
    SELECT period, users FROM checked WHERE fresh
    UNION ALL
    SELECT {{ bucket }}(day) AS period, uniqMerge(users) AS users
    FROM dau_daily
    WHERE day BETWEEN {from:Date} AND {to:Date}{{ users_filters }}
      AND {{ bucket }}(day) IN (SELECT period FROM checked WHERE NOT fresh)
    GROUP BY period
