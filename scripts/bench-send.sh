#!/usr/bin/env bash
# Delivery benchmarks on this machine, against one minimal sink on 127.0.0.1 (the
# capture receiver with recording off): wrk's rate, `hookline send` of 50 000
# ~600-byte events at concurrency 64 with history on, the ratio; batched sending
# (1 000 events per request); and peak memory of a 100 000-event replay.
# Needs wrk and GNU time (apt-get install wrk time). Prints figures; asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in wrk /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y wrk time" >&2; exit 2; }
done
cargo build --release --quiet
BIN=target/release/hookline
work=$(mktemp -d)
trap 'kill $SINK 2>/dev/null || true; rm -rf "$work"' EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
$BIN capture --listen "127.0.0.1:$PORT" --no-record > "$work/sink.log" &
SINK=$!
for _ in $(seq 50); do grep -q listening "$work/sink.log" 2>/dev/null && break; sleep 0.1; done
URL="http://127.0.0.1:$PORT/sink"

python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
def ev(i):
    return {"type": "track", "event": "Order Completed", "userId": f"user-{i}", "anonymousId": "21b43de4-3b9b-423f-b51f-794eae31fc03",
            "messageId": f"04a303b1-a466-4e66-9022-{i:012d}", "timestamp": "2020-04-22T08:06:20.338Z",
            "properties": {"order_id": f"o-{i}", "category": "boots", "product_name": "new_boots", "price": 60, "currency": "USD", "plan": "Enterprise"},
            "context": {"ip": "203.0.113.7", "locale": "en-US", "library": {"name": "RudderLabs JavaScript SDK", "version": "1.1.1-rc.2"},
                        "traits": {"email": "User@Domain.com", "name": "User name", "company": {"id": "company-A"}}, "page": {"path": "/checkout", "url": "https://shop.example/checkout"}}}
for name, n in [("50k", 50_000), ("100k", 100_000), ("500k", 500_000)]:
    with open(f"{work}/events-{name}.ndjson", "w") as f:
        for i in range(n):
            f.write(json.dumps(ev(i), separators=(",", ":")) + "\n")
with open(f"{work}/body.json", "w") as f:
    f.write(json.dumps(ev(1), separators=(",", ":")))
PY
BODY_BYTES=$(wc -c < "$work/body.json")
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

echo "== wrk -c64 -d10s, ${BODY_BYTES}-byte POST"
WRK=$(wrk -c64 -t2 -d10s -s "$work/post.lua" "$URL" | awk '/Requests\/sec/ {print $2}')
echo "wrk: $WRK requests/s"

run() { # name events destination
  /usr/bin/time -f "%M" -o "$work/rss" $BIN send -w "$work/ws.json" -d "$3" -e "$work/events-$2.ndjson" --history "$work/history.sqlite3" > "$work/out.ndjson" 2>/dev/null
  local summary; summary=$(tail -1 "$work/out.ndjson")
  python3 - "$summary" "$(cat "$work/rss")" "$1" <<'PY'
import json, sys
s = json.loads(sys.argv[1])["summary"]; rss_mb = int(sys.argv[2]) / 1024; name = sys.argv[3]
events = s["delivered"] + s["failed"]
print(f'{name}: {s["requests"]} requests, {s["delivered"]} delivered, {s["failed"]} failed in {s["elapsed_ms"]} ms; peak RSS {rss_mb:.0f} MB')
PY
}
echo "== hookline send, 50 000 events, concurrency 64, history on"
run "send" 50k sink
SEND_RPS=$(python3 -c "import json;s=json.loads(open('$work/out.ndjson').read().splitlines()[-1])['summary'];print(round(s['requests']*1000/max(s['elapsed_ms'],1)))")
echo "hookline: $SEND_RPS requests/s; ratio to wrk: $(python3 -c "print(round($SEND_RPS/$WRK, 2))")"

echo "== hookline send, 500 000 events batched 1 000 per request"
run "batched" 500k batched
python3 -c "import json;s=json.loads(open('$work/out.ndjson').read().splitlines()[-1])['summary'];print('batched:', round(500000*1000/max(s['elapsed_ms'],1)), 'events/s')"

echo "== peak memory, 100 000-event replay (concurrency 64, history on)"
run "replay-100k" 100k sink
