// The official JS client (@clickhouse/client) through the BI endpoint: parameters, JSONEachRow,
// streaming, and a refusal surfaced as a ClickHouse error. Run by tests/api/bi.rs.
const assert = require('node:assert/strict');
const { createClient } = require('@clickhouse/client');

const { CHGATE_BI_HOST: host, CHGATE_BI_PORT: port, CHGATE_BI_DATABASE: database, CHGATE_BI_KEY: key } = process.env;

(async () => {
  const client = createClient({ url: `http://${host}:${port}`, username: 'js', password: key, database });
  assert.equal((await client.ping()).success, true);

  const result = await client.query({
    query: 'SELECT event, count() AS n FROM events WHERE event IN {events:Array(String)} GROUP BY event ORDER BY event',
    query_params: { events: ['purchase', 'game_view'] },
    format: 'JSONEachRow',
  });
  const rows = await result.json();
  assert.deepEqual(rows.map((r) => r.event), ['game_view', 'purchase']);
  assert.ok(rows.every((r) => Number(r.n) === 40), JSON.stringify(rows));
  console.log('ok: query with params as JSONEachRow', JSON.stringify(rows));

  const stream = (await client.query({ query: 'SELECT number FROM numbers(50000)', format: 'JSONEachRow' })).stream();
  let count = 0;
  for await (const batch of stream) count += batch.length;
  assert.equal(count, 50000);
  console.log('ok: streamed 50000 rows');

  await assert.rejects(client.command({ query: 'TRUNCATE TABLE events' }), (error) => {
    assert.equal(error.type, 'READONLY');
    return true;
  });
  console.log('ok: TRUNCATE refused as READONLY');
  await client.close();
})().catch((error) => {
  console.error('FAILED:', error);
  process.exit(1);
});
