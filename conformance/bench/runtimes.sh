#!/usr/bin/env bash
# smol against tokio, side by side in one run on one machine: push of one 256 MiB blob in
# a single monolithic POST, pull of it, and manifest GETs per second (wrk, 32 connections,
# 5 s), on fs storage. The binaries take turns for 3 rounds, so load from elsewhere on the
# machine falls on both; each figure is the median of its rounds. Prints the figures and
# smol/tokio (above 1: smol is faster). Needs curl and wrk; binaries from target/release
# (or the folder in $1).
#
#   cargo build --release -p stowage -p stowage-smol && conformance/bench/runtimes.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
bin_dir=${1:-target/release}
runtimes=(stowage stowage-smol)
blob_mib=256
rounds=3
work=$(mktemp -d)
server_pid=
stop_server() {
  if [[ -n $server_pid ]]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
  fi
}
trap 'stop_server; rm -rf "$work"' EXIT

head -c "${blob_mib}MiB" /dev/urandom > "$work/blob"
blob_digest=sha256:$(sha256sum "$work/blob" | cut -d' ' -f1)
printf '{}' > "$work/config"
config_digest=sha256:$(sha256sum "$work/config" | cut -d' ' -f1)
cat > "$work/manifest" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
 "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"$config_digest","size":2},
 "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"$blob_digest","size":$((blob_mib * 1048576))}]}
JSON

# Starts a server on a fresh root ($1) and a port of its choosing; sets $url.
start_server() {
  local binary=$1 root=$2
  mkdir -p "$root"
  printf '[server]\nport = 0\n[blob_store.fs]\nroot_dir = "%s"\n' "$root/data" > "$root/config.toml"
  NO_COLOR=1 RUST_LOG=warn,stowage=info,stowage_smol=info \
    "$binary" serve --config "$root/config.toml" 2> "$root/server.log" &
  server_pid=$!
  local address=
  for _ in $(seq 200); do
    address=$(grep -o 'address=[0-9.:]*' "$root/server.log" | head -n 1 | cut -d= -f2) || true
    [[ -n $address ]] && break
    sleep 0.05
  done
  [[ -n $address ]] || { cat "$root/server.log"; echo "$binary did not start" >&2; exit 1; }
  url=http://$address
}

# Seconds one curl transfer took; fails unless the status is $1.
timed_curl() {
  local expect=$1
  shift
  local out
  out=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' "$@")
  [[ ${out%% *} == "$expect" ]] || { echo "curl $*: got ${out%% *}, want $expect" >&2; exit 1; }
  echo "${out#* }"
}

# One round of one binary; appends "push_mib_s pull_mib_s manifest_gets_s" to $work/$1.
measure() {
  local name=$1 root=$work/root
  start_server "$bin_dir/$name" "$root"
  local push pull report gets
  push=$(timed_curl 201 -X POST -H 'Content-Type: application/octet-stream' \
    --data-binary "@$work/blob" "$url/v2/bench/blobs/uploads/?digest=$blob_digest")
  pull=$(timed_curl 200 "$url/v2/bench/blobs/$blob_digest")
  timed_curl 201 -X POST -H 'Content-Type: application/octet-stream' \
    --data-binary "@$work/config" "$url/v2/bench/blobs/uploads/?digest=$config_digest" > /dev/null
  timed_curl 201 -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
    --data-binary "@$work/manifest" "$url/v2/bench/manifests/latest" > /dev/null
  report=$(wrk -t2 -c32 -d5s -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "$url/v2/bench/manifests/latest")
  gets=$(awk '/^Requests\/sec:/ {print $2}' <<< "$report")
  if [[ -z $gets ]] || grep -q 'Non-2xx' <<< "$report"; then
    echo "$report" >&2
    exit 1
  fi
  stop_server
  rm -rf "$root"
  awk -v mib="$blob_mib" -v push="$push" -v pull="$pull" -v gets="$gets" \
    'BEGIN { printf "%.1f %.1f %.0f\n", mib / push, mib / pull, gets }' >> "$work/$name"
}

# The median of column $2 of the rounds in file $1.
median() { cut -d' ' -f"$2" "$1" | sort -g | sed -n "$(((rounds + 1) / 2))p"; }

for _ in $(seq "$rounds"); do
  for name in "${runtimes[@]}"; do
    measure "$name"
  done
done

printf '%-22s %10s %10s %10s\n' figure tokio smol smol/tokio
column=1
for figure in "push ${blob_mib} MiB (MiB/s)" "pull ${blob_mib} MiB (MiB/s)" "manifest GET (req/s)"; do
  tokio=$(median "$work/stowage" "$column")
  smol=$(median "$work/stowage-smol" "$column")
  awk -v n="$figure" -v t="$tokio" -v s="$smol" \
    'BEGIN { printf "%-22s %10s %10s %10.2f\n", n, t, s, s / t }'
  column=$((column + 1))
done
