"""The Nexmark queries as SQL on DuckDB: the reference that Starling's results must equal.

Usage: nexmark_duckdb.py DATA_DIR OUT_DIR QUERY...

DATA_DIR holds person.ndjson, auction.ndjson and bid.ndjson as `starling-bench
nexmark-generate` writes them. For each QUERY, OUT_DIR/QUERY.ndjson receives the query's
result rows, one JSON array per line, in the column order of Starling's definition
(dataflows/nexmark/QUERY.yaml). Each query is the Flink benchmark's SQL, written for a
batch engine: windows are computed from the event times (aligned to multiples of the size
or slide, half-open), which is what a streaming engine must arrive at once all input is in.
"""

import json
import sys
from pathlib import Path

import duckdb

COLUMNS = {
    "person": {
        "id": "BIGINT", "name": "VARCHAR", "email_address": "VARCHAR",
        "credit_card": "VARCHAR", "city": "VARCHAR", "state": "VARCHAR",
        "date_time": "BIGINT", "extra": "VARCHAR",
    },
    "auction": {
        "id": "BIGINT", "item_name": "VARCHAR", "description": "VARCHAR",
        "initial_bid": "BIGINT", "reserve": "BIGINT", "date_time": "BIGINT",
        "expires": "BIGINT", "seller": "BIGINT", "category": "BIGINT", "extra": "VARCHAR",
    },
    "bid": {
        "auction": "BIGINT", "bidder": "BIGINT", "price": "BIGINT", "channel": "VARCHAR",
        "url": "VARCHAR", "date_time": "BIGINT", "extra": "VARCHAR",
    },
}

QUERIES = {
    "q0": "SELECT auction, bidder, price, date_time, extra FROM bid",
    "q1": "SELECT auction, bidder, 0.908::DOUBLE * price, date_time, extra FROM bid",
    "q2": "SELECT auction, price FROM bid WHERE auction % 123 = 0",
    "q3": """
        SELECT P.name, P.city, P.state, A.id
        FROM auction A JOIN person P ON A.seller = P.id
        WHERE A.category = 10 AND P.state IN ('OR', 'ID', 'CA')""",
    "q4": """
        SELECT category, AVG(final) FROM (
            SELECT MAX(B.price) AS final, A.category
            FROM auction A JOIN bid B ON A.id = B.auction
            WHERE B.date_time BETWEEN A.date_time AND A.expires
            GROUP BY A.id, A.category)
        GROUP BY category""",
    # HOP(10 s, every 2 s): each bid is in the 5 windows starting at its 2 s slot and the
    # 4 slots before it.
    "q5": """
        WITH counts AS (
            SELECT auction, ws, COUNT(*) AS num FROM (
                SELECT auction, (date_time // 2000) * 2000 - k * 2000 AS ws
                FROM bid, range(0, 5) AS t(k))
            GROUP BY auction, ws),
        maxes AS (SELECT ws, MAX(num) AS maxn FROM counts GROUP BY ws)
        SELECT c.auction, c.num, c.ws, c.ws + 10000
        FROM counts c JOIN maxes m ON c.ws = m.ws
        WHERE c.num >= m.maxn""",
    "q7": """
        WITH highest AS (
            SELECT (date_time // 10000) * 10000 + 10000 AS window_end, MAX(price) AS maxprice
            FROM bid GROUP BY 1)
        SELECT B.auction, B.price, B.bidder, B.date_time, B.extra
        FROM bid B JOIN highest H ON B.price = H.maxprice
        WHERE B.date_time BETWEEN H.window_end - 10000 AND H.window_end""",
    "q8": """
        WITH p AS (
            SELECT id, name, (date_time // 10000) * 10000 AS starttime
            FROM person GROUP BY id, name, starttime),
        a AS (
            SELECT seller, (date_time // 10000) * 10000 AS starttime
            FROM auction GROUP BY seller, starttime)
        SELECT p.id, p.name, p.starttime
        FROM p JOIN a ON p.id = a.seller AND p.starttime = a.starttime""",
    # SESSION(10 s): a bid at least 10 s after the bidder's previous one starts a session;
    # a session ends 10 s after its last bid.
    "q11": """
        WITH gaps AS (
            SELECT bidder, date_time,
                   date_time - LAG(date_time) OVER (PARTITION BY bidder ORDER BY date_time) AS gap
            FROM bid),
        sessions AS (
            SELECT bidder, date_time,
                   SUM(CASE WHEN gap IS NULL OR gap >= 10000 THEN 1 ELSE 0 END)
                       OVER (PARTITION BY bidder ORDER BY date_time
                             ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS session
            FROM gaps)
        SELECT bidder, MIN(date_time), MAX(date_time) + 10000, COUNT(*)
        FROM sessions GROUP BY bidder, session""",
    "tumble": """
        SELECT auction, (date_time // 10000) * 10000 AS ws, ws + 10000, COUNT(*)
        FROM bid GROUP BY auction, ws""",
}


def main(argv):
    if len(argv) < 4:
        sys.exit(__doc__)
    data, out = Path(argv[1]), Path(argv[2])
    unknown = [q for q in argv[3:] if q not in QUERIES]
    if unknown:
        sys.exit(f"unknown queries {unknown}; known: {sorted(QUERIES)}")
    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    for table, columns in COLUMNS.items():
        path = data / f"{table}.ndjson"
        cols = "{" + ", ".join(f"'{k}': '{v}'" for k, v in columns.items()) + "}"
        con.execute(
            f"CREATE TABLE {table} AS SELECT * FROM read_json('{path}', "
            f"format = 'newline_delimited', columns = {cols})"
        )
    for q in argv[3:]:
        rows = con.execute(QUERIES[q]).fetchall()
        with open(out / f"{q}.ndjson", "w") as f:
            for row in rows:
                f.write(json.dumps(list(row), separators=(",", ":")) + "\n")
        print(f"{q}: {len(rows)} rows", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv)
