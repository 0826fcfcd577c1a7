#!/usr/bin/env bash
# Delivery benchmarks on this machine, in one run against one sink on 127.0.0.1 (the
# capture receiver, recording and history off), each measured ROUNDS times
# interleaved (default 3):
#   wrk            -c64 POSTs of one ~600-byte event (if wrk is installed)
#   bare reqwest   64 tasks, one client built as `hookline send` builds its own,
#                  posting the same body $UNBATCHED times (src/bin/bench-reqwest.rs),
#                  before and after the unbatched sends of the round (a send's
#                  ratio is to the mean of the two)
#   send           `hookline send` of $UNBATCHED events, one per request,
#                  concurrency 64, history on
#   send (no hist) the same with --no-history
#   batched        `hookline send` of $BATCHED events (1 000 per request,
#                  concurrency 8, history on): wall clock from process start
#                  (import included) and peak RSS
# Prints a table (median of the rounds, and each round). Asserts nothing.
# Needs GNU time (apt-get install time); wrk is optional (apt-get install wrk).
# Env: ROUNDS, UNBATCHED (default 50000), BATCHED (default 1000000); BASELINE: the
# path of another `hookline` binary (an older build) whose three `send` measures are
# taken in the same rounds, interleaved, so the two can be compared on a noisy machine.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
UNBATCHED=${UNBATCHED:-50000}
BATCHED=${BATCHED:-1000000}
[ -x /usr/bin/time ] || { echo "missing GNU time: apt-get install -y time" >&2; exit 2; }
HAVE_WRK=0; command -v wrk >/dev/null && HAVE_WRK=1
nice -n 10 cargo build --release --quiet --bins
BIN=${CARGO_TARGET_DIR:-target}/release/hookline
BARE=${CARGO_TARGET_DIR:-target}/release/bench-reqwest
work=$(mktemp -d)
SINK=
trap '[ -n "$SINK" ] && kill "$SINK" 2>/dev/null; rm -rf "$work"' EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
$BIN capture --listen "127.0.0.1:$PORT" --no-record --no-history > "$work/sink.log" 2>&1 &
SINK=$!
for _ in $(seq 50); do grep -q listening "$work/sink.log" 2>/dev/null && break; sleep 0.1; done
URL="http://127.0.0.1:$PORT/sink"

python3 - "$work" "$UNBATCHED" "$BATCHED" <<'PY'
import json, sys
work, small, big = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def ev(i):
    return {"type": "track", "event": "Order Completed", "userId": f"user-{i}", "anonymousId": "21b43de4-3b9b-423f-b51f-794eae31fc03",
            "messageId": f"04a303b1-a466-4e66-9022-{i:012d}", "timestamp": "2020-04-22T08:06:20.338Z",
            "properties": {"order_id": f"o-{i}", "category": "boots", "product_name": "new_boots", "price": 60, "currency": "USD", "plan": "Enterprise"},
            "context": {"ip": "203.0.113.7", "locale": "en-US", "library": {"name": "RudderLabs JavaScript SDK", "version": "1.1.1-rc.2"},
                        "traits": {"email": "User@Domain.com", "name": "User name", "company": {"id": "company-A"}}, "page": {"path": "/checkout", "url": "https://shop.example/checkout"}}}
# One template, the index substituted: fast enough for a million lines.
tpl = json.dumps(ev(987654321), separators=(",", ":"))
def write(name, n):
    with open(f"{work}/{name}", "w") as f:
        for i in range(n):
            f.write(tpl.replace("987654321", str(i)) + "\n")
write("small.ndjson", small)
write("big.ndjson", big)
with open(f"{work}/body.json", "w") as f:
    f.write(json.dumps(ev(1), separators=(",", ":")))
PY
# The files just written are still being flushed to disk: wait for that, or the
# writeback competes with the first rounds.
sync
BODY_BYTES=$(wc -c < "$work/body.json")
BIG_MB=$(( $(wc -c < "$work/big.ndjson") / 1048576 ))
cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$work/body.json", "rb"); wrk.body = f:read("*a"); f:close()
LUA
cat > "$work/ws.json" <<JSON
{"version": 1, "destinations": [
  {"name": "sink", "url": "$URL", "delivery": {"concurrency": 64, "max_attempts": 3}},
  {"name": "batched", "url": "$URL", "batching": {"max_events": 1000, "max_bytes": 5000000}, "delivery": {"concurrency": 8}}
]}
JSON
echo "body ${BODY_BYTES} bytes; unbatched $UNBATCHED events; batched $BATCHED events (${BIG_MB} MB file); $ROUNDS rounds; $(nproc) cores"

# Each measurement appends "name value unit" to $work/results.
record() { echo "$1 $2 $3" >> "$work/results"; }

send() { # binary name events-file destination extra-args...
  local bin=$1 name=$2 file=$3 dest=$4; shift 4
  rm -f "$work/history.sqlite3"*
  /usr/bin/time -f "%e %M" -o "$work/time" "$bin" send -w "$work/ws.json" -d "$dest" -e "$work/$file" \
    --history "$work/history.sqlite3" "$@" > "$work/out.ndjson" 2> "$work/err.log" || true
  python3 - "$work" "$name" "$BATCHED" >> "$work/results" <<'PY'
import json, sys
work, name, batched = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = json.loads(open(f"{work}/out.ndjson").read().splitlines()[-1])["summary"]
wall, rss_kb = open(f"{work}/time").read().split()
wall = float(wall)
if s["failed"]:
    print(f"{name}-FAILED {s['failed']} requests")
if name.endswith("batched"):
    events = s["job_events"]["delivered"]
    if events != batched:
        print(f"{name}-SHORT {events} events")
    print(f"{name}-wall {events / wall:.0f} events/s")
    print(f"{name}-rss {int(rss_kb) / 1024:.0f} MB")
else:
    print(f"{name} {s['requests'] * 1000 / max(s['elapsed_ms'], 1):.0f} req/s")
    print(f"{name}-wall {s['requests'] / wall:.0f} req/s")
PY
}

bare() { # name
  record "$1" "$($BARE "$URL" "$work/body.json" "$UNBATCHED" 64 | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["requests_per_s"]))')" req/s
}

for round in $(seq "$ROUNDS"); do
  echo "== round $round"
  if [ "$HAVE_WRK" = 1 ]; then
    record wrk "$(wrk -c64 -t2 -d5s -s "$work/post.lua" "$URL" | awk '/Requests\/sec/ {printf "%.0f", $2}')" req/s
    sleep 1
  fi
  # The unbatched sends between two bare loops: each round's ratio is to their mean,
  # which follows the machine's speed better than one run a few seconds apart.
  bare bare
  send "$BIN" send small.ndjson sink
  send "$BIN" send-nohist small.ndjson sink --no-history
  if [ -n "${BASELINE:-}" ]; then
    send "$BASELINE" base-send small.ndjson sink
    send "$BASELINE" base-send-nohist small.ndjson sink --no-history
  fi
  bare bare-after
  send "$BIN" batched big.ndjson batched
  if [ -n "${BASELINE:-}" ]; then
    send "$BASELINE" base-batched big.ndjson batched
  fi
done

python3 - "$work/results" "$HAVE_WRK" <<'PY'
import sys, statistics
rows = {}
for line in open(sys.argv[1]):
    name, value, unit = line.split(maxsplit=2)
    try:
        rows.setdefault(name, ([], unit.strip()))[0].append(float(value))
    except ValueError:
        rows.setdefault(name, ([], unit.strip()))
labels = {
    "wrk": "wrk -c64 (ceiling of the sink)",
    "bare": "bare reqwest loop, 64 tasks (before)",
    "bare-after": "bare reqwest loop, 64 tasks (after)",
    "send": "hookline send, history on (job time)",
    "send-wall": "hookline send, history on (wall)",
    "send-nohist": "hookline send, --no-history (job time)",
    "send-nohist-wall": "hookline send, --no-history (wall)",
    "batched-wall": "batched 1000/req, wall incl. import",
    "batched-rss": "batched 1000/req, peak RSS",
    "base-send": "BASELINE send, history on (job time)",
    "base-send-nohist": "BASELINE send, --no-history (job time)",
    "base-batched-wall": "BASELINE batched, wall incl. import",
    "base-batched-rss": "BASELINE batched, peak RSS",
}
med = {k: statistics.median(v) for k, (v, _) in rows.items() if v}
print(f"\n{'measure':42} {'median':>10} {'unit':8} rounds")
for k, label in labels.items():
    if k in rows and rows[k][0]:
        v, unit = rows[k]
        print(f"{label:42} {med[k]:>10.0f} {unit:8} {' '.join(f'{x:.0f}' for x in v)}")
for k in rows:
    if k.endswith("FAILED") or k.endswith("SHORT"):
        print(f"!! {k}: {rows[k]}")
if "bare" in med:
    for k in ("send", "send-nohist", "base-send", "base-send-nohist"):
        if k in med:
            after = rows.get("bare-after", rows["bare"])[0]
            ratios = [a / ((b + c) / 2) for a, b, c in zip(rows[k][0], rows["bare"][0], after)]
            per_round = " ".join(f"{r:.2f}" for r in ratios)
            both = statistics.median(rows["bare"][0] + after)
            print(f"{k} / bare = {med[k] / both:.2f}, median of the rounds' ratios "
                  f"{statistics.median(ratios):.2f}  (target >= 0.8; by round: {per_round})")
if "batched-wall" in med:
    print(f"batched events/s = {med['batched-wall']:.0f}  (target >= 1000000)")
if "batched-rss" in med:
    print(f"batched peak RSS = {med['batched-rss']:.0f} MB  (target < 150)")
PY
