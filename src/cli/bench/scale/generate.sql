-- One day of `chgate bench scale`'s game-store traffic, generated inside ClickHouse and inserted
-- into `events` (so the materialized views fill the rollups as they do for ingested rows). Every
-- value is a hash of (seed, day, session, position): the same parameters give the same rows, in
-- whatever order threads produce them.
--
-- Sessions 0 .. new_users - 1 are the first sessions of the users first seen this day (users
-- new_from ..), with a signup; the next `returning` sessions are of users first seen earlier:
-- a third of them from the users of the first day (an established base), the others from a
-- cohort picked with a bias to recent ones (activity decays with age, about as 1/sqrt(age)), and
-- within a cohort with a heavy tail (a few users come back very often: the most active
-- of a cohort of n users has about n^-0.63 of its sessions). The last `bots` sessions
-- are crawlers (is_bot = 1). A session is a home view, sometimes a search, one or more game views
-- (a geometric number, mean ~3) each of which leaks through cart, checkout and purchase (a
-- payment connector call, sometimes a refund or a review), sometimes a play session, sometimes a
-- connector operation; 2-90 s between events.
--
-- Users are numbered by the day they were first seen; the users first seen before day x are
-- 0 .. cohort(x) - 1, cohort(x) = users * (0.3 + 0.7 * x / days) for x >= 1.
INSERT INTO events (event_id, event, timestamp, received_at, user_id, anonymous_id, actor_id, session_id,
    platform, properties, item_id, developer_id, revenue, currency, operation, status, duration_ms, ip,
    country, region, city, locale, user_agent, browser, browser_version, os, os_version, device_type,
    device_model, is_bot, app_version, library, page_url, page_path, page_title, referrer, referrer_host,
    channel, utm_source, utm_medium, utm_campaign, utm_term, utm_content, ingest_segment)
WITH
    ['page_view', 'screen_view', 'signup', 'search', 'game_view', 'add_to_cart', 'checkout_started', 'purchase',
     'connector_call', 'refund', 'review', 'game_start', 'game_end', 'connector_call'] AS names,
    -- (code, region, city, locale, currency, first three octets); weights 30 20 10 7 6 6 5 5 6 5
    [('RU', 'Moscow', 'Moscow', 'ru-RU', 'RUB', '77.88.8'), ('US', 'California', 'San Jose', 'en-US', 'USD', '8.8.8'),
     ('DE', 'Hesse', 'Frankfurt am Main', 'de-DE', 'EUR', '85.214.132'), ('GB', 'England', 'London', 'en-GB', 'GBP', '81.2.69'),
     ('KZ', 'Almaty', 'Almaty', 'ru-KZ', 'KZT', '2.132.0'), ('BR', 'Sao Paulo', 'Sao Paulo', 'pt-BR', 'BRL', '200.160.2'),
     ('FR', 'Ile-de-France', 'Paris', 'fr-FR', 'EUR', '90.84.0'), ('TR', 'Istanbul', 'Istanbul', 'tr-TR', 'TRY', '78.160.0'),
     ('IN', 'Maharashtra', 'Mumbai', 'en-IN', 'INR', '117.192.0'), ('JP', 'Tokyo', 'Tokyo', 'ja-JP', 'JPY', '133.242.0')] AS countries,
    [30, 50, 60, 67, 73, 79, 84, 89, 95, 100] AS country_cum,
    -- platform, user agent, browser, browser version, os, os version, device type, device model, library;
    -- web 50 (six agents), ios 20 (two), android 22 (two), desktop 8
    [('web', 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36', 'Chrome', '131.0.0.0', 'Windows 10', 'NT 10.0', 'desktop', '', 'chgate-js'),
     ('web', 'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0', 'Firefox', '133.0', 'Windows 10', 'NT 10.0', 'desktop', '', 'chgate-js'),
     ('web', 'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15', 'Safari', '17.5', 'Mac OSX', '10.15.7', 'desktop', '', 'chgate-js'),
     ('web', 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36', 'Chrome', '130.0.0.0', 'Linux', 'UNKNOWN', 'desktop', '', 'chgate-js'),
     ('web', 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0', 'Edge', '131.0.0.0', 'Windows 10', 'NT 10.0', 'desktop', '', 'chgate-js'),
     ('web', 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 YaBrowser/24.12.0.0 Safari/537.36', 'Yandex Browser', '24.12.0.0', 'Windows 10', 'NT 10.0', 'desktop', '', 'chgate-js'),
     ('ios', 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1', 'Safari', '17.5', 'iPhone', '17.5', 'mobile', 'iPhone', 'chgate-ios'),
     ('ios', 'Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1', 'Safari', '16.6', 'iPad', '16.6', 'tablet', 'iPad', 'chgate-ios'),
     ('android', 'Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36', 'Chrome', '131.0.0.0', 'Android', '14', 'mobile', 'Pixel 8', 'chgate-android'),
     ('android', 'Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Mobile Safari/537.36', 'Chrome', '130.0.0.0', 'Android', '13', 'mobile', 'SM-S918B', 'chgate-android'),
     ('desktop', 'GameStoreClient/3.4.1 (Windows NT 10.0; Win64; x64)', 'GameStoreClient', '3.4.1', 'Windows 10', 'NT 10.0', 'desktop', '', 'chgate-desktop')] AS agents,
    -- referrer, referrer host, utm source, medium, campaign, channel; weights 35 18 14 8 4 7 6 5 3
    [('', '', '', '', '', 'direct'), ('https://www.google.com/', 'www.google.com', '', '', '', 'search'),
     ('https://yandex.ru/', 'yandex.ru', '', '', '', 'search'), ('https://vk.com/feed', 'vk.com', '', '', '', 'social'),
     ('https://t.me/', 't.me', '', '', '', 'social'), ('', '', 'newsletter', 'email', 'winter_sale', 'email'),
     ('https://www.google.com/', 'www.google.com', 'google', 'cpc', 'brand', 'paid'),
     ('https://yandex.ru/', 'yandex.ru', 'yandex', 'cpc', 'games_rsya', 'paid'),
     ('https://stopgame.ru/news', 'stopgame.ru', '', '', '', 'referral')] AS sources,
    [35, 53, 67, 75, 79, 86, 92, 97, 100] AS source_cum,
    [4.99, 9.99, 14.99, 19.99, 29.99, 39.99, 59.99] AS prices,
    ['steam_sync', 'payment_api', 'catalog_export', 'achievements_push'] AS operations,
    ['rpg', 'strategy', 'indie', 'coop', 'space', 'racing', 'horror', 'puzzle'] AS searches,
    ['Googlebot/2.1', 'YandexBot/3.0', 'HeadlessChrome'] AS bot_browsers,
    ['Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)',
     'Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)',
     'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36'] AS bot_agents,
    18446744073709551616. AS full
SELECT
    reinterpretAsUUID(concat(reinterpretAsString(cityHash64(h, pos, 1)), reinterpretAsString(cityHash64(h, pos, 2)))) AS event_id,
    names[kind] AS event,
    fromUnixTimestamp64Milli(toInt64(at), 'UTC') AS timestamp,
    fromUnixTimestamp64Milli(toInt64(at + 40 + cityHash64(h, pos, 3) % 2000), 'UTC') AS received_at,
    if(bot OR NOT identified, '', concat('user-', leftPad(toString(user), 7, '0'))) AS user_id,
    if(bot, concat('bot-', toString({day:UInt32}), '-', toString(s)), concat('anon-', lower(hex(cityHash64(user, {seed:UInt64}))))) AS anonymous_id,
    if(user_id = '', anonymous_id, user_id) AS actor_id,
    concat('s-', toString({day:UInt32}), '-', toString(s)) AS session_id,
    if(bot, 'web', agent.1) AS platform,
    multiIf(
        kind IN (1, 2), '{"name":"home"}',
        kind = 3, concat('{"method":"', ['email', 'vk', 'google', 'steam'][1 + cityHash64(h, 4) % 4], '"}'),
        kind = 4, concat('{"query":"', searches[1 + cityHash64(h, 5) % 8], '","results":', toString(cityHash64(h, 6) % 40), '}'),
        kind IN (9, 14), concat('{"operation":"', operation, '","status":"', status, '","duration_ms":', toString(assumeNotNull(duration_ms)), '}'),
        item = 0, '{}',
        concat('{"item_id":"', item_key, '","developer_id":"', developer_id, '","item_name":"Game ', leftPad(toString(item - 1), 3, '0'),
               '","price":', toString(price),
               if(kind IN (8, 10), concat(',"amount":', toString(revenue), ',"currency":"', currency, '","order_id":"o-', session_id, '-', item_key, '"'), ''),
               if(kind = 11, concat(',"rating":', toString(1 + cityHash64(h, pos, 4) % 5)), ''),
               if(kind = 13, concat(',"duration_ms":', toString(play_ms)), ''), '}')
    ) AS properties,
    item_key AS item_id,
    if(item = 0, '', concat('dev-', leftPad(toString((item - 1) % 40), 2, '0'))) AS developer_id,
    multiIf(kind NOT IN (8, 10), 0., whale, 1299., place.5 = 'RUB', round(price * 90), price) AS revenue,
    multiIf(kind NOT IN (8, 10), '', whale OR place.5 != 'RUB', 'USD', 'RUB') AS currency,
    multiIf(kind = 9, 'payment_api', kind = 14, operations[1 + cityHash64(h, 7) % 4], '') AS operation,
    multiIf(kind = 9, if(cityHash64(h, pos, 5) / full < 0.97, 'ok', 'error'),
            kind = 14, multiIf(cityHash64(h, pos, 5) / full < 0.94, 'ok', cityHash64(h, pos, 5) / full < 0.98, 'error', 'timeout'), '') AS status,
    CAST(multiIf(kind = 9, round(80 + pow(cityHash64(h, pos, 6) / full, 3) * 1500, 1),
                 kind = 14, round(20 + pow(cityHash64(h, pos, 6) / full, 4) * 4000, 1),
                 kind = 13, toFloat64(play_ms), NULL) AS Nullable(Float64)) AS duration_ms,
    if(bot, concat('66.249.66.', toString(1 + s % 249)), concat(place.6, '.', toString(1 + user_hash % 249))) AS ip,
    if(bot, 'US', place.1) AS country,
    if(bot, 'California', place.2) AS region,
    if(bot, 'Mountain View', place.3) AS city,
    if(bot, '', place.4) AS locale,
    if(bot, bot_agents[bot_kind], agent.2) AS user_agent,
    if(bot, bot_browsers[bot_kind], agent.3) AS browser,
    if(bot, '', agent.4) AS browser_version,
    if(bot, '', agent.5) AS os,
    if(bot, '', agent.6) AS os_version,
    if(bot, 'bot', agent.7) AS device_type,
    if(bot, '', agent.8) AS device_model,
    toUInt8(bot) AS is_bot,
    if(bot, '', '3.4.1') AS app_version,
    if(bot, '', agent.9) AS library,
    if(platform = 'web', concat('https://store.example', path,
                                if(source.3 = '', '', concat('?utm_source=', source.3, '&utm_medium=', source.4, '&utm_campaign=', source.5))), '') AS page_url,
    if(platform = 'web', path, '') AS page_path,
    if(platform = 'web', if(item = 0, 'Game Store', concat('Game ', leftPad(toString(item - 1), 3, '0'), ' - Game Store')), '') AS page_title,
    if(platform = 'web', source.1, '') AS referrer,
    if(platform = 'web', source.2, '') AS referrer_host,
    if(platform = 'web' OR bot, if(bot, 'direct', source.6), '') AS channel,
    if(platform = 'web', source.3, '') AS utm_source,
    if(platform = 'web', source.4, '') AS utm_medium,
    if(platform = 'web', source.5, '') AS utm_campaign,
    '' AS utm_term,
    '' AS utm_content,
    toUInt64(0) AS ingest_segment
FROM
(
    SELECT
        s, h, user, user_hash, identified, is_new, bot, bot_kind, agent, place, source, whale,
        intDiv(code, 1000) AS kind,
        code % 1000 AS item,
        if(item = 0, '', concat('game-', leftPad(toString(item - 1), 3, '0'))) AS item_key,
        prices[1 + (item - 1) % 7] AS price,
        multiIf(kind IN (1, 2) AND pos = 1, '/', kind = 3, '/signup', kind = 4, '/search', kind IN (5, 11), concat('/app/', item_key),
                kind = 6, '/cart', kind = 7, '/checkout', kind IN (8, 9), '/checkout/done', kind = 10, '/account/orders',
                kind IN (12, 13, 14), '/library', item = 0, '/', concat('/app/', item_key)) AS path,
        (cityHash64(h, 9) % 176) * 60000 + 300000 AS play_ms,
        pos,
        at
    FROM
    (
        SELECT
            number AS s,
            cityHash64({seed:UInt64}, {day:UInt32}, s) AS h,
            s >= {new_users:UInt64} + {returning:UInt64} AS bot,
            s < {new_users:UInt64} AS is_new,
            -- A returning session's user: the first day's base, or a cohort biased to recent days.
            if(cityHash64(h, 10) / full < 0.35 OR {day:UInt32} <= 1, 0,
               {day:UInt32} - 1 - toUInt32(floor(({day:UInt32} - 1) * pow(cityHash64(h, 11) / full, 2)))) AS cohort_day,
            if(cohort_day = 0, 0, toUInt64(floor({users:UInt64} * (0.3 + 0.7 * cohort_day / {days:UInt32})))) AS cohort_from,
            toUInt64(floor({users:UInt64} * (0.3 + 0.7 * (cohort_day + 1) / {days:UInt32}))) AS cohort_to,
            if(is_new, {new_from:UInt64} + s,
               cohort_from + toUInt64(floor((cohort_to - cohort_from) * pow(cityHash64(h, 12) / full, 1.6)))) AS user,
            cityHash64({seed:UInt64}, 7, user) AS user_hash,
            cityHash64(user_hash, 1) / full < 0.85 AS identified,
            pow(cityHash64(user_hash, 2) / full, 3) AS spender,
            agents[multiIf(cityHash64(user_hash, 3) % 100 < 50, 1 + cityHash64(user_hash, 4) % 6,
                           cityHash64(user_hash, 3) % 100 < 70, 7 + cityHash64(user_hash, 4) % 2,
                           cityHash64(user_hash, 3) % 100 < 92, 9 + cityHash64(user_hash, 4) % 2, 11)] AS agent,
            countries[arrayFirstIndex(c -> cityHash64(user_hash, 5) % 100 < c, country_cum)] AS place,
            sources[arrayFirstIndex(c -> cityHash64(h, 13) % 100 < c, source_cum)] AS source,
            cityHash64(h, 14) / full < 0.004 AS whale,
            1 + cityHash64(h, 15) % 3 AS bot_kind,
            -- Game views: geometric, mean about 3; each leaks through cart, checkout and purchase.
            least(30, 1 + toUInt32(floor(-log(1 - cityHash64(h, 16) / full) * 2.2))) AS views,
            arrayFlatten(arrayMap(j -> arrayMap(k -> k * 1000 + 1 + toUInt32(floor(pow(cityHash64(h, 100 + j, 1) / full, 2) * 200)),
                arrayConcat([5],
                    if(cityHash64(h, 100 + j, 2) / full < 0.28 + spender * 0.3,
                       arrayConcat([6], if(cityHash64(h, 100 + j, 3) / full < 0.45,
                           arrayConcat([7], if(cityHash64(h, 100 + j, 4) / full < 0.7,
                               arrayConcat([8, 9], if(cityHash64(h, 100 + j, 5) / full < 0.03, [10], []),
                                           if(cityHash64(h, 100 + j, 6) / full < 0.15, [11], [])), [])), [])), []))),
                range(views))) AS store,
            if(bot,
               arrayMap(j -> if(j = 0, 1000, 5000 + 1 + cityHash64(h, 200 + j) % 200), range(1 + cityHash64(h, 17) % 5)),
               arrayConcat(
                   [if(agent.1 = 'web', 1000, 2000)],
                   if(is_new, [3000], []),
                   if(cityHash64(h, 18) / full < 0.4, [4000], []),
                   store,
                   if(cityHash64(h, 19) / full < 0.5, [12000 + 1 + cityHash64(h, 20) % 200, 13000 + 1 + cityHash64(h, 20) % 200], []),
                   if(cityHash64(h, 21) / full < 0.3, [14000], []))) AS codes,
            toUInt64(toUnixTimestamp({day_start:DateTime})) * 1000 + cityHash64(h, 22) % (19 * 3600000) AS session_start,
            arrayCumSum(arrayMap((c, i) -> if(intDiv(c, 1000) = 13, (cityHash64(h, 9) % 176) * 60000 + 300000, 2000 + cityHash64(h, 300 + i) % 88000),
                                 codes, arrayEnumerate(codes))) AS offsets
        FROM numbers({new_users:UInt64} + {returning:UInt64} + {bots:UInt64})
    )
    ARRAY JOIN codes AS code, arrayEnumerate(codes) AS pos, arrayMap(o -> session_start + o, offsets) AS at
)
