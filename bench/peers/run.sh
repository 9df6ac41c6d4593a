#!/usr/bin/env bash
# Starling side by side with peer stream processors (Pathway, Bytewax) on the
# same generated Nexmark bids.
#
#   bench/peers/run.sh [EVENTS] [QUERIES]
#
#   EVENTS   Nexmark events to generate, all topics (default 1000000; bids
#            are 46 of every 50). Generated once per size and seed, kept.
#   QUERIES  comma-separated: tumble, q5, q7 (default: all three)
#
# Environment: SEED (default 1), OUT_OF_ORDER_GROUP (events permuted in
# groups of this many, default 10000: up to 1 s out of order at the
# generator's 10,000 events/s of event time), PEERS (default "pathway bytewax"),
# PEERS_VENV (default target/peers-venv), PEERS_WORK (data, results and logs;
# default target/peers), RUN_TIMEOUT (seconds per engine run, default 900),
# STARLING_BENCH (a starling-bench binary to use instead of building one).
#
# Every engine reads the same file (bid.ndjson, alone in its directory) and
# is timed from reading to results written; each peer's result file is
# checked against Starling's. Exits non-zero if a run failed or a result
# differed.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
events="${1:-1000000}"
queries="${2:-tumble,q5,q7}"
seed="${SEED:-1}"
disorder="${OUT_OF_ORDER_GROUP:-10000}"
peers="${PEERS:-pathway bytewax}"
venv="${PEERS_VENV:-$root/target/peers-venv}"
work="${PEERS_WORK:-$root/target/peers}"
timeout="${RUN_TIMEOUT:-900}"
bench="${STARLING_BENCH:-}"  # a prebuilt starling-bench: skips the build

die() { echo "bench/peers/run.sh: ERROR: $*" >&2; exit 2; }
say() { echo "== $*" >&2; }

PEERS_VENV="$venv" "$here/install.sh" >&2 || die "peer install failed"
py="$venv/bin/python"

if [ -z "$bench" ]; then
  say "building starling-bench (release)"
  (cd "$root" && cargo build --release -p starling-bench -p starling-engine) \
    || die "cargo build --release -p starling-bench -p starling-engine failed"
  bench="$root/target/release/starling-bench"
fi
"$bench" nexmark --help 2>/dev/null | grep -q -- '--input' \
  || die "$bench has no 'nexmark --input' (Starling's side of this benchmark)"

data="$work/data/events-$events-seed-$seed-ooo-$disorder"
if [ ! -e "$data/.complete" ]; then
  say "generating $events Nexmark events (seed $seed) into $data"
  rm -rf "$data" && mkdir -p "$data"
  "$bench" nexmark-generate --events "$events" --seed "$seed" \
    --out-of-order-group "$disorder" --out "$data/all" >&2 \
    || die "starling-bench nexmark-generate failed"
  [ -s "$data/all/bid.ndjson" ] || die "the generator wrote no $data/all/bid.ndjson"
  touch "$data/.complete"
fi
# The workloads read bids only: give every engine a directory holding just
# bid.ndjson, so they all read (and count, and are timed on) the same file.
mkdir -p "$data/bids"
ln -sf ../all/bid.ndjson "$data/bids/bid.ndjson"
input="$data/bids"

out="$work/out"
mkdir -p "$out"
results="$out/results.ndjson"
: >"$results"
failed=0

# run ENGINE QUERY CMD...: run one engine, keep its JSON line in $results
# (with a "check" field) unless it failed.
run() {
  local engine="$1" q="$2"; shift 2
  local base="$out/$engine.$q" check="(reference)" load
  load="$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo '?')"  # shared machine: note the load
  say "$engine $q (load average $load)"
  rm -f "$base.ndjson"
  if ! timeout "$timeout" "$@" >"$base.stdout" 2>"$base.stderr"; then
    echo "!! $engine $q FAILED (exit $?); last lines of $base.stderr:" >&2
    tail -n 15 "$base.stderr" | sed 's/^/   /' >&2
    failed=1
    return 1
  fi
  if [ "$engine" != starling ]; then
    if [ ! -e "$out/starling.$q.ndjson" ]; then
      check="unchecked (no starling result)"
    elif ! "$py" "$here/compare.py" check "$out/starling.$q.ndjson" "$base.ndjson" >"$base.check"; then
      check="MISMATCH"
      failed=1
      echo "!! RESULT MISMATCH: $engine $q differs from starling" >&2
      sed 's/^/   /' "$base.check" >&2
    else
      check="ok: $(cat "$base.check")"
    fi
  fi
  "$py" "$here/compare.py" last-json "check=$check" "load=$load" <"$base.stdout" >>"$results" \
    || { echo "!! $engine $q printed no JSON result line" >&2; failed=1; }
}

for q in ${queries//,/ }; do
  case "$q" in tumble|q5|q7) ;; *) die "unknown query '$q' (tumble, q5, q7)";; esac
  run starling "$q" "$bench" nexmark --query "$q" --input "$input" --json \
    --output "$out/starling.$q.ndjson" || rm -f "$out/starling.$q.ndjson"
  for peer in $peers; do
    case "$peer" in
      pathway) run pathway "$q" env PATHWAY_THREADS=2 "$py" "$here/pathway_nexmark.py" \
                 --query "$q" --input "$input" --output "$out/pathway.$q.ndjson" ;;
      bytewax) run bytewax "$q" "$py" "$here/bytewax_nexmark.py" --processes 2 \
                 --query "$q" --input "$input" --output "$out/bytewax.$q.ndjson" ;;
      *) die "unknown peer '$peer' (pathway, bytewax)" ;;
    esac
  done
done

echo
echo "Nexmark bids from $events events (seed $seed, out-of-order group $disorder), $input/bid.ndjson; 2 workers each"
"$py" "$here/compare.py" table "$results"
if [ "$failed" != 0 ]; then
  echo
  echo "!! some runs failed or their results differ from Starling's (see above; logs in $out)"
fi
exit "$failed"
