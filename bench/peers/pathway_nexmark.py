"""Nexmark workloads on Pathway (https://pathway.com), for bench/peers/run.sh.

Reads DIR/bid.ndjson with `pw.io.jsonlines.read` in static mode and computes
one of (times are the bids' `date_time`, ms since the epoch; windows are
aligned to multiples of their size/hop since the epoch, half-open):

  tumble  per auction, bids per 10 s tumbling window
          -> [auction, window_start, window_end, count]
  q5      hot items: per 10 s window sliding every 2 s, the auctions with
          the most bids in that window (ties all kept) -> [auction, num]
  q7      highest bid: per 10 s tumbling window the max price; every bid
          with that price and window_end - 10 s <= date_time <= window_end
          (Flink's BETWEEN) -> [auction, price, bidder, date_time, extra]

Writes the final rows, sorted, as NDJSON arrays to --output and prints one
JSON line {"engine", "query", "events", "seconds", "events_per_sec"}, where
seconds runs from building the dataflow (before any byte is read) to the
output file being written (interpreter start and imports excluded).

Worker threads: PATHWAY_THREADS (run.sh sets 2).
"""

import argparse
import collections
import json
import os
import sys
import time

import pathway as pw

TUMBLE_MS = 10_000
HOP_MS = 2_000


class Bid(pw.Schema):
    auction: int
    bidder: int
    price: int
    channel: str
    url: str
    date_time: int
    extra: str


def tumble(bids):
    return bids.windowby(
        pw.this.date_time,
        window=pw.temporal.tumbling(duration=TUMBLE_MS, origin=0),
        instance=pw.this.auction,
    ).reduce(
        auction=pw.this._pw_instance,
        start=pw.this._pw_window_start,
        end=pw.this._pw_window_end,
        count=pw.reducers.count(),
    )


def q5(bids):
    counts = bids.windowby(
        pw.this.date_time,
        window=pw.temporal.sliding(hop=HOP_MS, duration=TUMBLE_MS, origin=0),
        instance=pw.this.auction,
    ).reduce(
        auction=pw.this._pw_instance,
        start=pw.this._pw_window_start,
        num=pw.reducers.count(),
    )
    top = counts.groupby(pw.this.start).reduce(
        pw.this.start, maxnum=pw.reducers.max(pw.this.num)
    )
    return counts.join(
        top, counts.start == top.start, counts.num == top.maxnum
    ).select(counts.auction, counts.num)


def q7(bids):
    maxes = bids.windowby(
        pw.this.date_time,
        window=pw.temporal.tumbling(duration=TUMBLE_MS, origin=0),
    ).reduce(
        end=pw.this._pw_window_end, maxprice=pw.reducers.max(pw.this.price)
    )
    return (
        bids.join(maxes, bids.price == maxes.maxprice)
        .filter(
            (pw.this.date_time >= pw.this.end - TUMBLE_MS)
            & (pw.this.date_time <= pw.this.end)
        )
        .select(bids.auction, bids.price, bids.bidder, bids.date_time, bids.extra)
    )


QUERIES = {"tumble": tumble, "q5": q5, "q7": q7}


def collect(table, rows):
    """Keep the table's final contents (a multiset) in `rows`."""
    columns = table.column_names()

    def on_change(key, row, time, is_addition):
        rows[tuple(row[c] for c in columns)] += 1 if is_addition else -1

    pw.io.subscribe(table, on_change=on_change)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--query", choices=sorted(QUERIES), required=True)
    ap.add_argument("--input", required=True, help="directory with bid.ndjson")
    ap.add_argument("--output", required=True, help="result file (NDJSON arrays)")
    args = ap.parse_args()

    start = time.perf_counter()
    bids = pw.io.jsonlines.read(
        os.path.join(args.input, "bid.ndjson"), schema=Bid, mode="static"
    )
    rows, count = collections.Counter(), collections.Counter()
    collect(QUERIES[args.query](bids), rows)
    collect(bids.reduce(n=pw.reducers.count()), count)
    pw.run(monitoring_level=pw.MonitoringLevel.NONE)

    out = sorted(r for r, n in rows.items() for _ in range(n))
    if any(n < 0 for n in rows.values()):
        sys.exit("pathway_nexmark: negative multiplicity in the result")
    with open(args.output, "w") as f:
        for r in out:
            f.write(json.dumps(list(r), separators=(",", ":")) + "\n")
    seconds = time.perf_counter() - start

    events = next((r[0] for r, n in count.items() if n > 0), 0)
    print(json.dumps({
        "engine": "pathway",
        "query": args.query,
        "events": events,
        "seconds": round(seconds, 3),
        "events_per_sec": round(events / seconds, 1),
        "threads": int(os.environ.get("PATHWAY_THREADS", "1")),
        "rows": len(out),
    }), flush=True)


if __name__ == "__main__":
    main()
