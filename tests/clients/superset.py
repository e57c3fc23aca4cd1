"""Superset's ClickHouse driver through the BI endpoint: clickhouse-connect's client and the
SQLAlchemy dialect (clickhousedb://) that Superset runs, doing what Superset does.

Run by tests/api/bi.rs with CHGATE_BI_HOST, CHGATE_BI_PORT, CHGATE_BI_DATABASE, CHGATE_BI_KEY (an
analyst) and CHGATE_BI_RESTRICTED_KEY (a marketer, who may not read `events`).
"""

import os
import sys

import clickhouse_connect
import sqlalchemy as sa
from clickhouse_connect.driver.exceptions import DatabaseError

HOST = os.environ["CHGATE_BI_HOST"]
PORT = int(os.environ["CHGATE_BI_PORT"])
DATABASE = os.environ["CHGATE_BI_DATABASE"]
KEY = os.environ["CHGATE_BI_KEY"]
RESTRICTED = os.environ["CHGATE_BI_RESTRICTED_KEY"]


def check(condition, message):
    if not condition:
        print(f"FAILED: {message}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {message}")


# The client Superset's engine spec builds on: handshake, settings probe, queries.
client = clickhouse_connect.get_client(host=HOST, port=PORT, username="superset", password=KEY)
check(client.server_version.count(".") >= 2, f"server version {client.server_version}")
check(
    client.query("SELECT currentDatabase()").result_rows[0][0] == DATABASE,
    "the session database is the analytics database",
)
rows = client.query(
    "SELECT toStartOfDay(timestamp) AS __timestamp, event, count() AS count "
    "FROM events GROUP BY __timestamp, event ORDER BY __timestamp, event LIMIT 1000"
).result_rows
check(len(rows) > 0 and all(r[2] > 0 for r in rows), f"a Superset time-bucket aggregate ({len(rows)} rows)")
bound = client.query(
    "SELECT count() FROM events WHERE event = {event:String}", parameters={"event": "purchase"}
).result_rows[0][0]
check(bound == 40, f"bound parameters ({bound} purchases)")
functions = client.query(
    "SELECT name FROM system.functions UNION ALL SELECT name FROM system.table_functions LIMIT 10000"
).result_rows
check(len(functions) > 500, f"Superset's function list ({len(functions)} names)")
many = client.query("SELECT number AS n FROM numbers(100000)").result_rows
check(len(many) == 100000, "a 100k-row result streams back")

# The SQLAlchemy dialect, as Superset's database connection uses it.
engine = sa.create_engine(f"clickhousedb://superset:{KEY}@{HOST}:{PORT}/{DATABASE}")
inspector = sa.inspect(engine)
schemas = inspector.get_schema_names()
check(schemas == [DATABASE, "system"], f"schemas {schemas}")
tables = inspector.get_table_names(schema=DATABASE)
check("events" in tables and "dau_daily" in tables, f"tables {tables}")
columns = {c["name"] for c in inspector.get_columns("events", schema=DATABASE)}
check({"event", "timestamp", "actor_id"} <= columns, f"columns of events ({len(columns)})")
with engine.connect() as connection:
    daily = connection.execute(
        sa.text("SELECT day, uniqMerge(users) AS dau FROM dau_daily GROUP BY day ORDER BY day")
    ).fetchall()
check(len(daily) >= 5 and all(r[1] > 0 for r in daily), f"DAU through SQLAlchemy ({len(daily)} days)")

# A role without access to `events` sees neither its name nor its rows.
restricted = sa.create_engine(f"clickhousedb://superset:{RESTRICTED}@{HOST}:{PORT}/{DATABASE}")
hidden = sa.inspect(restricted).get_table_names(schema=DATABASE)
check("events" not in hidden and "dau_daily" in hidden, f"restricted tables {hidden}")
check(not sa.inspect(restricted).has_table("events", schema=DATABASE), "has_table(events) is false")
restricted_client = clickhouse_connect.get_client(
    host=HOST, port=PORT, username="superset", password=RESTRICTED
)
try:
    restricted_client.query("SELECT count() FROM events")
    check(False, "reading events is refused")
except DatabaseError as error:
    check("497" in str(error) and "ACCESS_DENIED" in str(error), f"reading events is refused: {str(error)[:80]}")
visible = restricted_client.query(
    f"SELECT DISTINCT table FROM system.columns WHERE database = '{DATABASE}'"
).result_rows
check(("events",) not in visible, "system.columns hides events")
try:
    restricted_client.command("DROP TABLE dau_daily")
    check(False, "DDL is refused")
except DatabaseError as error:
    check("READONLY" in str(error), "DDL is refused")
