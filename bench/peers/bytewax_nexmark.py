"""Nexmark workloads on Bytewax (https://bytewax.io), for bench/peers/run.sh.

Reads DIR/bid.ndjson with `FileSource` and computes one of (times are the
bids' `date_time`, ms since the epoch; windows are aligned to multiples of
their size/slide since the epoch, half-open):

  tumble  per auction, bids per 10 s tumbling window
          -> [auction, window_start, window_end, count]
  q5      hot items: per 10 s window sliding every 2 s, the auctions with
          the most bids in that window (ties all kept) -> [auction, num]
  q7      highest bid: per 10 s tumbling window the max price; every bid
          with that price and window_end - 10 s <= date_time <= window_end
          (Flink's BETWEEN) -> [auction, price, bidder, date_time, extra]

Windows use an EventClock on `date_time` that waits --wait-ms (default
10 s) for out-of-order bids. Its "system time" is frozen, so a window
closes on event time alone however fast or slow the replay runs; EOF
closes the rest. Bids that still arrive late are counted and reported.

--processes N (default 2) runs N single-worker processes as one Bytewax
cluster on localhost (threads would share one GIL). The file is one
partition, read and parsed by one worker; the windows are spread over the
workers by key (tumble: by auction; q5 and q7 have one key, so their window
work runs on one worker, in a pipeline with the reader).

Writes the final rows, sorted, as NDJSON arrays to --output and prints one
JSON line {"engine", "query", "events", "seconds", "events_per_sec"}, where
seconds runs from the moment all worker processes (imports done, dataflow
built) are told to start to the merged output file being written.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import bytewax.operators as op
from bytewax.connectors.files import FileSource
from bytewax.dataflow import Dataflow
from bytewax.operators import windowing as win
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import cluster_main

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
TUMBLE = timedelta(seconds=10)
HOP = timedelta(seconds=2)
TUMBLE_MS = 10_000

STATS = {"events": 0, "late": 0}  # per process (one worker per process)
ROWS = []  # result rows that reached this process's sink


def ts(bid):
    return EPOCH + timedelta(milliseconds=bid[3])


def parse(line):
    STATS["events"] += 1
    b = json.loads(line)
    # (auction, price, bidder, date_time, extra): all that the queries use
    return (b["auction"], b["price"], b["bidder"], b["date_time"], b["extra"])


def count_late(_step, _item):
    STATS["late"] += 1


def tumble(bids, clock):
    out = win.count_window(
        "count", bids, clock, win.TumblingWindower(TUMBLE, EPOCH), lambda b: str(b[0])
    )
    op.inspect("late", out.late, count_late)
    return op.map(
        "row",
        out.down,
        lambda kv: [int(kv[0]), kv[1][0] * TUMBLE_MS, (kv[1][0] + 1) * TUMBLE_MS, kv[1][1]],
    )


def add_bid(counts, bid):
    counts[bid[0]] = counts.get(bid[0], 0) + 1
    return counts


def merge_counts(a, b):
    for k, n in b.items():
        a[k] = a.get(k, 0) + n
    return a


def q5(bids, clock):
    # The max is over all auctions of a window, so the window state is keyed
    # by one key: auction -> bids in that window.
    out = win.fold_window(
        "counts",
        op.key_on("all", bids, lambda _b: "all"),
        clock,
        win.SlidingWindower(TUMBLE, HOP, EPOCH),
        dict,
        add_bid,
        merge_counts,
        ordered=False,
    )
    op.inspect("late", out.late, count_late)

    def hottest(kv):
        counts = kv[1][1]
        top = max(counts.values())
        return [[a, n] for a, n in counts.items() if n == top]

    return op.flat_map("hottest", out.down, hottest)


def new_top():
    # [max price, bids at that price, bids at exactly the window start]
    return [-1, [], []]


def add_top(s, bid):
    if bid[1] > s[0]:
        s[0], s[1] = bid[1], [bid]
    elif bid[1] == s[0]:
        s[1].append(bid)
    if bid[3] % TUMBLE_MS == 0:
        s[2].append(bid)
    return s


def merge_top(a, b):
    for bid in b[1]:
        add_top(a, bid)
    a[2] += [x for x in b[2] if x not in a[2]]
    return a


def match_edges(state, mark):
    """Window k's max price also matches bids at exactly its end, which are
    window k+1's edge bids: pair the two, in whichever order they close."""
    maxes, edges = state or ({}, {})
    kind, wid, val = mark
    if kind == "max":
        if wid + 1 not in edges:
            maxes[wid] = val
            return (maxes, edges), []
        price, at_end = val, edges.pop(wid + 1)
    else:  # the edge bids of window wid, for window wid - 1's max
        if wid - 1 not in maxes:
            edges[wid] = val
            return (maxes, edges), []
        price, at_end = maxes.pop(wid - 1), val
    return (maxes, edges), [b for b in at_end if b[1] == price]


def q7(bids, clock):
    out = win.fold_window(
        "max",
        op.key_on("all", bids, lambda _b: "all"),
        clock,
        win.TumblingWindower(TUMBLE, EPOCH),
        new_top,
        add_top,
        merge_top,
        ordered=False,
    )
    op.inspect("late", out.late, count_late)
    windows = op.key_rm("windows", out.down)  # (wid, [max, top bids, edge bids])
    inside = op.flat_map("inside", windows, lambda w: w[1][1])
    marks = op.flat_map(
        "marks", windows, lambda w: [("max", w[0], w[1][0]), ("edge", w[0], w[1][2])]
    )
    at_end = op.stateful_flat_map(
        "match", op.key_on("one", marks, lambda _m: "all"), match_edges
    )
    rows = op.merge("all_rows", inside, op.key_rm("at_end", at_end))
    return op.map("row", rows, list)


QUERIES = {"tumble": tumble, "q5": q5, "q7": q7}


class ListSink(DynamicSink):
    def build(self, step_id, worker_index, worker_count):
        return _ListPartition()


class _ListPartition(StatelessSinkPartition):
    def write_batch(self, items):
        ROWS.extend(items)


def build_flow(query, path, wait_ms):
    clock = win.EventClock(
        ts,
        wait_for_system_duration=timedelta(milliseconds=wait_ms),
        now_getter=lambda: EPOCH,  # frozen: replay on event time only
        to_system_utc=lambda _t: None,  # never wake up on system time
    )
    flow = Dataflow(f"nexmark_{query}")
    lines = op.input("bids", flow, FileSource(path, batch_size=1000))
    # Parsed where read: no redistribute, so each key sees the bids in file
    # order (a round-robin spread lets one parser run ahead of the other by
    # more than any sane wait, and bids then arrive late).
    bids = op.map("parse", lines, parse)
    op.output("out", QUERIES[query](bids, clock), ListSink())
    return flow


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def worker(args):
    """One process of the cluster: run the flow, dump stats and rows."""
    flow = build_flow(args.query, os.path.join(args.input, "bid.ndjson"), args.wait_ms)
    # Start together once every process has imported and built its flow.
    open(args.part + ".ready", "w").close()
    while not os.path.exists(args.part + ".go"):
        time.sleep(0.001)
    t0 = time.time()
    if args.process_id > 0:
        # Process 0 only listens and the others connect to it; give it a
        # moment to bind, or timely retries the connection a second later.
        time.sleep(0.1)
    cluster_main(flow, args.addresses.split(";"), args.process_id)
    with open(args.part, "w") as f:
        json.dump({"t0": t0, **STATS, "rows": ROWS}, f)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--query", choices=sorted(QUERIES), required=True)
    ap.add_argument("--input", required=True, help="directory with bid.ndjson")
    ap.add_argument("--output", required=True, help="result file (NDJSON arrays)")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--wait-ms", type=int, default=10_000,
                    help="out-of-orderness the event clock waits for")
    ap.add_argument("--process-id", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--addresses", help=argparse.SUPPRESS)
    ap.add_argument("--part", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.process_id is not None:
        return worker(args)

    addresses = ";".join(f"127.0.0.1:{p}" for p in free_ports(args.processes))
    parts = [f"{args.output}.part{i}" for i in range(args.processes)]
    procs = [
        subprocess.Popen([sys.executable, __file__, *sys.argv[1:],
                          "--process-id", str(i), "--addresses", addresses,
                          "--part", parts[i]])
        for i in range(args.processes)
    ]
    while not all(os.path.exists(p + ".ready") for p in parts):
        if any(p.poll() not in (None, 0) for p in procs):
            break
        time.sleep(0.001)
    for p in parts:
        open(p + ".go", "w").close()
    failed = [p.wait() != 0 for p in procs]
    for p in parts:
        for f in (p + ".ready", p + ".go"):
            if os.path.exists(f):
                os.remove(f)
    if any(failed):
        sys.exit("bytewax_nexmark: a worker process failed (see above)")
    done = []
    for part in parts:
        with open(part) as f:
            done.append(json.load(f))
        os.remove(part)
    rows = sorted(r for d in done for r in d["rows"])
    with open(args.output, "w") as f:
        for r in rows:
            f.write(json.dumps(r, separators=(",", ":")) + "\n")
    seconds = time.time() - min(d["t0"] for d in done)

    events = sum(d["events"] for d in done)
    late = sum(d["late"] for d in done)
    if late:
        print(f"bytewax_nexmark: WARNING: {late} (bid, window) pairs were late "
              f"and dropped; raise --wait-ms", file=sys.stderr)
    print(json.dumps({
        "engine": "bytewax",
        "query": args.query,
        "events": events,
        "seconds": round(seconds, 3),
        "events_per_sec": round(events / seconds, 1),
        "processes": args.processes,
        "late": late,
        "rows": len(rows),
    }), flush=True)


if __name__ == "__main__":
    main()
