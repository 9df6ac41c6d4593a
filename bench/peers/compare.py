"""Helpers for bench/peers/run.sh (standard library only).

  compare.py check EXPECTED ACTUAL   exit 0 if the two NDJSON result files hold
                                     the same rows (a multiset, order ignored);
                                     else print a diff excerpt and exit 1
  compare.py last-json [K=V ...]     print the last line of stdin that is a
                                     JSON object with "events_per_sec", with
                                     the fields K=V added
  compare.py table RESULTS           print the engine/query/events-per-second
                                     table from run.sh's results file
"""

import collections
import json
import sys

EXCERPT = 8


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def key(row):
    return json.dumps(row, separators=(",", ":"), sort_keys=True)


def check(expected_path, actual_path):
    expected, actual = load(expected_path), load(actual_path)
    widths = {len(r) for r in expected} | {len(r) for r in actual}
    note = ""
    if len(widths) > 1:
        # e.g. Starling's q5 also prints the window; the peers print
        # [auction, num] as Flink does. Compare the columns both have.
        n = min(widths)
        expected = [r[:n] for r in expected]
        actual = [r[:n] for r in actual]
        note = f" (rows of {sorted(widths)} columns: compared on the first {n})"
    e = collections.Counter(map(key, expected))
    a = collections.Counter(map(key, actual))
    if e == a:
        print(f"same {len(actual)} rows{note}")
        return 0
    missing, extra = e - a, a - e
    print(f"MISMATCH{note}: {expected_path} has {len(expected)} rows, "
          f"{actual_path} has {len(actual)}; {sum(missing.values())} rows only "
          f"in the first, {sum(extra.values())} only in the second")
    for label, rows in (("only in expected", missing), ("only in actual", extra)):
        for row in sorted(rows)[:EXCERPT]:
            print(f"  {label}: {row}" + (f" x{rows[row]}" if rows[row] > 1 else ""))
        if len(rows) > EXCERPT:
            print(f"  {label}: ... {len(rows) - EXCERPT} more distinct rows")
    return 1


def last_json(*fields):
    """`fields` are NAME=VALUE pairs added to the object printed."""
    found = None
    for line in sys.stdin:
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if "events_per_sec" in obj:
                found = obj
    if found is None:
        return 1
    found.update(f.split("=", 1) for f in fields)
    print(json.dumps(found))
    return 0


def table(path):
    runs = load(path)
    starling = {r["query"]: r for r in runs if r["engine"] == "starling"}
    head = f"{'engine':<10} {'query':<7} {'events':>10} {'seconds':>8} {'events/s':>12} {'starling/peer':>14} {'load':>5}  result"
    print(head)
    print("-" * len(head))
    best = {}
    for r in runs:
        s = starling.get(r["query"])
        eps = r.get("events_per_sec") or 0
        if r["engine"] == "starling":
            ratio = ""
        elif s and eps:
            ratio = f"{s['events_per_sec'] / eps:.1f}x"
            if eps > best.get(r["query"], (0, ""))[0]:
                best[r["query"]] = (eps, r["engine"])
        else:
            ratio = "-"
        events = r.get("events", 0)
        if s and events != s.get("events"):
            r["check"] = f"{r.get('check', '')} (events differ from starling's {s.get('events')})"
        print(f"{r['engine']:<10} {r['query']:<7} {events:>10} {r.get('seconds', 0):>8.2f} "
              f"{eps:>12,.0f} {ratio:>14} {r.get('load', ''):>5}  {r.get('check', '')}")
    print()
    for q, (eps, engine) in best.items():
        s = starling[q]["events_per_sec"]
        verdict = "meets" if s >= 3 * eps else "BELOW"
        print(f"{q}: starling {s:,.0f} events/s = {s / eps:.1f}x the best peer "
              f"({engine}, {eps:,.0f} events/s); target >= 3x: {verdict}")
    print("(load: the machine's 1-minute load average when the run started; it has 2 cores)")
    return 0


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "check":
        return check(*args)
    if cmd == "last-json":
        return last_json(*args)
    if cmd == "table":
        return table(*args)
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main())
