#!/usr/bin/env bash
# Contention check (issue 15): the "masks computed" time of each site in the main job (3 sites and
# the server on this machine's cores, the default thread policy) against the same site alone (one
# site and the server) at OMP_NUM_THREADS=1. MAIN_OMP=N forces N threads per process in the main job.
# The setup of scripts/run_federation.sh; it builds nothing: BIN (default build/) must hold
# fedprllm-server, fedprllm-client and fedprllm-generate. Usage: bench/contention.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
source scripts/federation_lib.sh
BIN=${BIN:-$ROOT/build}
MODEL=$ROOT/models/stories260K/stories260K.bin
OUT=${1:-out/contention}; mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
SITES=(site-a site-b site-c)
rm -rf "$OUT"; mkdir -p "$OUT/data"
for i in "${!SITES[@]}"; do
  "$BIN/tools/fedprllm-generate" --model "$MODEL" --out "$OUT/data/${SITES[$i]}.txt" --seed $((101 + i)) --streams 16 --tokens 160 --rounds 3 2>/dev/null
done
bash deploy/make_certs.sh "$OUT/certs" "${SITES[@]}" >/dev/null
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
setup() {  # setup DIR N_SITES SITE...
  local dir=$1 n=$2; shift 2
  mkdir -p "$dir"
  local port=$((20000 + RANDOM % 20000))
  local allowed=$(IFS=,; echo "$*")
  cat > "$dir/server.yaml" <<YAML
listen_address: "127.0.0.1:$port"
tls: {cert: $OUT/certs/server.crt, key: $OUT/certs/server.key, ca: $OUT/certs/ca.crt}
allowed_clients: [$allowed]
expected_clients: $n
min_clients: $n
model: $MODEL
output_dir: $dir/pruned
state_dir: $dir/state
sparsity: 0.5
pattern: "unstructured"
group: layer
strategy: one-shot
round_deadline_seconds: 600
exit_when_idle: true
YAML
  for site in "$@"; do
    local i=0; for j in "${!SITES[@]}"; do [ "${SITES[$j]}" = "$site" ] && i=$j; done
    write_site_config "$dir/$site.yaml" "$port" "$OUT/certs" "$MODEL" "$OUT/data/$site.txt" "$i" "$site"
  done
}
echo "== main job: 3 sites + server, default threads (nproc=$(nproc))"
setup "$OUT/main" 3 "${SITES[@]}"
( if [ -n "${MAIN_OMP:-}" ]; then export OMP_NUM_THREADS=$MAIN_OMP; fi; run_local_federation "$OUT/main" "$BIN" "${SITES[@]}" )
seconds() { grep -o 'masks computed in [0-9.]* s' "$1" | grep -o '[0-9.]*' | head -1; }
for s in "${SITES[@]}"; do echo "$s main: masks computed in $(seconds "$OUT/main/logs/$s.log") s"; done
worst=0
for s in "${SITES[@]}"; do
  setup "$OUT/alone-$s" 1 "$s"
  OMP_NUM_THREADS=1 run_local_federation "$OUT/alone-$s" "$BIN" "$s"
  main=$(seconds "$OUT/main/logs/$s.log") alone=$(seconds "$OUT/alone-$s/logs/$s.log")
  ratio=$(awk -v m="$main" -v a="$alone" 'BEGIN { printf "%.2f", m / a }')
  worst=$(awk -v r="$ratio" -v w="$worst" 'BEGIN { print (r > w ? r : w) }')
  echo "$s alone at 1 thread: masks computed in $alone s; main / alone = ${ratio}x"
done
echo "worst main / alone ratio: ${worst}x (target <= 2x; the logs round to 0.01 s)"
