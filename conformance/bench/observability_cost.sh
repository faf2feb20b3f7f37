#!/usr/bin/env bash
# What metrics, the access log and traces cost: manifest GETs (wrk, 2 threads, 32 connections,
# 5 s, the same request as runtimes.sh) against one binary with metrics and the access log on,
# off, and each alone, and with both on plus traces (every request sampled, and 1 in 100) sent
# to a collector (conformance/harness/otlp_receiver.py, which takes each export without decoding
# it), taking turns for ROUNDS rounds; each run prints req/s and the server's CPU per request
# (/proc/PID/stat), which moves less than req/s when other work shares the machine.
# Usage: conformance/bench/observability_cost.sh [BIN] [ROUNDS]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${1:-target/release/stowage}; rounds=${2:-3}; work=$(mktemp -d)
collector_port=$((20000 + RANDOM % 20000))
(cd "$root/conformance" && exec "$root/.venv/bin/python" -m harness.otlp_receiver $collector_port) & collector=$!
trap 'kill $collector; rm -rf "$work"' EXIT
traces=$(printf '[observability.tracing]\nendpoint="http://127.0.0.1:%s/v1/traces"' $collector_port)
cat > $work/manifest <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}
JSON
run() { # name extra-toml
  local port=$((20000 + RANDOM % 20000))
  printf '[server]\nport=%s\n%s\n[blob_store.fs]\nroot_dir="%s/data-%s"\n' $port "$2" $work $1 > $work/$1.toml
  $bin serve --config $work/$1.toml 2>>$work/$1.log & local pid=$!
  for i in $(seq 50); do curl -sf localhost:$port/v2/ >/dev/null && break; sleep 0.1; done
  curl -sf -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary @$work/manifest localhost:$port/v2/bench/manifests/latest >/dev/null
  local t0=$(awk '{print $14+$15}' /proc/$pid/stat)
  local out=$(wrk -t2 -c32 -d5s -H 'Accept: application/vnd.oci.image.manifest.v1+json' http://localhost:$port/v2/bench/manifests/latest)
  local t1=$(awk '{print $14+$15}' /proc/$pid/stat)
  local rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
  local n=$(echo "$out" | awk '/requests in/{print $1}')
  kill $pid; wait $pid || true
  echo "$1 $rps req/s, $(( (t1 - t0) * 10000000 / n / 1000 )) us CPU/req"
}
for r in $(seq $rounds); do
  run metrics $'[observability.log]\naccess_log=false'
  run log $'[observability.metrics]\nenabled=false'
  run on ''
  run off $'[observability.metrics]\nenabled=false\n[observability.log]\naccess_log=false'
  run traced "$traces"
  run sampled "$traces"$'\nsampling_rate=0.01'
done
