#!/usr/bin/env bash
# A real Prometheus server scraping a running local cluster (scripts/cluster.sh) every second,
# while `occam load` drives it; then PromQL through the server's HTTP API:
#
#   rate(occam_committed_txs_total[10s])                                   (summed: the TPS)
#   histogram_quantile(0.99, rate(occam_certificate_latency_seconds_bucket[10s]))
#
# and checks that both answer with plausible values, after `promtool check metrics` accepted
# every node's /metrics; every query of scripts/grafana-dashboard.json must evaluate too. Needs Debian's `prometheus` package (prometheus, promtool), curl and
# python3. Everything listens on 127.0.0.1; Prometheus is started here and stopped (by its pid)
# when the script ends.
#
#   DIR=target/cluster OCCAM=target/release/occam scripts/prometheus.sh
#
# Settings: DIR, OCCAM (as scripts/cluster.sh), PROM_PORT (9090), RATE (200), SECONDS_OF_LOAD
# (15).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${DIR:-target/cluster}
OCCAM=${OCCAM:-target/release/occam}
PROM_PORT=${PROM_PORT:-9090}
RATE=${RATE:-200}
LOAD_S=${SECONDS_OF_LOAD:-15}
CLUSTER="$DIR/cluster.toml"
for tool in prometheus promtool curl python3; do
  command -v "$tool" >/dev/null || { echo "$tool is missing (Debian: apt-get install prometheus curl python3)" >&2; exit 1; }
done
[ -f "$CLUSTER" ] || { echo "no cluster in $DIR (scripts/cluster.sh up)" >&2; exit 1; }
mapfile -t TARGETS < <(sed -n 's/^metrics = "\(.*\)"/\1/p' "$CLUSTER")
[ ${#TARGETS[@]} -gt 0 ] || { echo "the cluster's nodes serve no metrics (no metrics = in $CLUSTER)" >&2; exit 1; }

echo "promtool check metrics, every node:"
for t in "${TARGETS[@]}"; do
  curl -sf --max-time 5 "http://$t/metrics" | promtool check metrics
  echo "  $t: accepted"
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/occam-prometheus.XXXXXX")
PROM_PID=""
cleanup() {
  [ -n "$PROM_PID" ] && kill "$PROM_PID" 2>/dev/null && wait "$PROM_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
scripts/cluster.sh prometheus-config >"$WORK/prometheus.yml"
promtool check config "$WORK/prometheus.yml" >/dev/null
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/data" \
  --web.listen-address="127.0.0.1:$PROM_PORT" >"$WORK/prometheus.log" 2>&1 &
PROM_PID=$!
API="http://127.0.0.1:$PROM_PORT/api/v1"
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$PROM_PORT/-/ready" >/dev/null && break
  kill -0 "$PROM_PID" 2>/dev/null || { cat "$WORK/prometheus.log"; echo "prometheus exited" >&2; exit 1; }
  sleep 0.2
done
curl -sf "http://127.0.0.1:$PROM_PORT/-/ready" >/dev/null || { cat "$WORK/prometheus.log"; echo "prometheus is not ready" >&2; exit 1; }

echo "load: $RATE tx/s for $LOAD_S s, scraped every second"
"$OCCAM" load --cluster "$CLUSTER" --rate "$RATE" --duration "$LOAD_S" >"$WORK/load.txt" 2>&1 || { cat "$WORK/load.txt"; exit 1; }
grep '^offered' "$WORK/load.txt"
sleep 2 # one more scrape after the last commits

# One instant query; prints the sum of the vector's values, or fails if it is empty or not numbers.
query() {
  curl -sf --get "$API/query" --data-urlencode "query=$1" | python3 -c '
import json, math, sys
r = json.load(sys.stdin)
assert r["status"] == "success", r
v = [float(x["value"][1]) for x in r["data"]["result"]]
v = [x for x in v if not math.isnan(x)]
if not v:
    sys.exit("no value: " + json.dumps(r["data"]))
print(max(v) if sys.argv[1] == "max" else sum(v))' "$2"
}
# The window ends at the load's last seconds: the rate and the quantile cover the load.
tps=$(query 'sum(rate(occam_committed_txs_total[10s]))' sum)
p99=$(query 'histogram_quantile(0.99, sum by (le) (rate(occam_certificate_latency_seconds_bucket[10s])))' max)
targets_up=$(query 'sum(up{job="occam"})' sum)
echo "Prometheus says: $tps tx/s committed (offered $RATE), certificate latency p99 $p99 s, $targets_up of ${#TARGETS[@]} targets up"
# Every query of the Grafana dashboard must parse and evaluate on the server (an empty answer
# is fine: a cluster without refusals has none).
python3 - "$API" scripts/grafana-dashboard.json <<'EOF'
import json, sys, urllib.parse, urllib.request
api, path = sys.argv[1:]
exprs = [t["expr"] for p in json.load(open(path))["panels"] for t in p["targets"]]
for e in exprs:
    q = e.replace("$__rate_interval", "10s")
    with urllib.request.urlopen(api + "/query?" + urllib.parse.urlencode({"query": q}), timeout=10) as r:
        body = json.load(r)
    if body.get("status") != "success":
        sys.exit(f"the dashboard's query {e!r} failed: {body}")
print(f"the dashboard's {len(exprs)} queries evaluate")
EOF
python3 - "$tps" "$p99" "$targets_up" "$RATE" "${#TARGETS[@]}" <<'EOF'
import sys
tps, p99, up, rate, targets = map(float, sys.argv[1:])
problems = []
if up != targets:
    problems.append(f"{up:.0f} of {targets:.0f} targets up")
if not (0.2 * rate <= tps <= 1.5 * rate):
    problems.append(f"committed rate {tps:.1f} tx/s is not near the offered {rate:.0f}")
if not (0 < p99 <= 10):
    problems.append(f"certificate latency p99 {p99} s is not in (0, 10]")
if problems:
    sys.exit("implausible: " + "; ".join(problems))
print("plausible")
EOF
