#!/usr/bin/env bash
# README command 1: the main job. Installs what is missing (apt-get), builds, then runs a
# complete federated pruning of the bundled stories260K model on loopback with mutual TLS:
# one fedprllm-server and three fedprllm-client sites, each calibrating on its own private
# stories that the bundled model generates with the site's own seed. Finally it prints the
# perplexity of the dense and the pruned model on a held-out generated text.
# Usage: scripts/run_federation.sh [OUT_DIR] (default out/main-job). Knobs via environment:
#   STRATEGY (one-shot|iterative|exact), GROUP (layer|row|column), SPARSITY (0.5), PATTERN, PORT,
#   SECURE_AGGREGATION (false; true with STRATEGY=exact: the server sees only the sum).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
source scripts/federation_lib.sh
OUT=${1:-out/main-job}
STRATEGY=${STRATEGY:-one-shot}
GROUP=${GROUP:-layer}
SPARSITY=${SPARSITY:-0.5}
PATTERN=${PATTERN:-unstructured}
SECURE_AGGREGATION=${SECURE_AGGREGATION:-false}
PORT=${PORT:-$((20000 + RANDOM % 20000))}
MODEL=$ROOT/models/stories260K/stories260K.bin
SITES=(site-a site-b site-c)

bash scripts/install_deps.sh
export CCACHE_BASEDIR="$(pwd)"
export CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target fedprllm-server fedprllm-client fedprllm-eval fedprllm-generate
BIN=$ROOT/build

rm -rf "$OUT"
mkdir -p "$OUT/data" "$OUT/logs"
OUT=$(cd "$OUT" && pwd)

echo "== generating each site's private stories and the held-out text with the bundled model"
for i in "${!SITES[@]}"; do
  "$BIN/tools/fedprllm-generate" --model "$MODEL" --out "$OUT/data/${SITES[$i]}.txt" \
    --seed $((101 + i)) --streams 16 --tokens 160 --rounds 3 2>/dev/null
done
"$BIN/tools/fedprllm-generate" --model "$MODEL" --out "$OUT/data/held-out.txt" \
  --seed 999 --streams 16 --tokens 160 --rounds 3 2>/dev/null

echo "== making the federation CA and certificates"
bash deploy/make_certs.sh "$OUT/certs" "${SITES[@]}" >/dev/null

cat > "$OUT/server.yaml" <<YAML
listen_address: "127.0.0.1:$PORT"
tls: {cert: $OUT/certs/server.crt, key: $OUT/certs/server.key, ca: $OUT/certs/ca.crt}
allowed_clients: [site-a, site-b, site-c]
expected_clients: 3
min_clients: 3
model: $MODEL
output_dir: $OUT/pruned
state_dir: $OUT/state
sparsity: $SPARSITY
pattern: "$PATTERN"
group: $GROUP
strategy: $STRATEGY
secure_aggregation: $SECURE_AGGREGATION
round_deadline_seconds: 600
exit_when_idle: true
YAML
for i in "${!SITES[@]}"; do
  site=${SITES[$i]}
  write_site_config "$OUT/$site.yaml" "$PORT" "$OUT/certs" "$MODEL" "$OUT/data/$site.txt" "$i" "$site"
done

PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

echo "== starting fedprllm-server and the sites on 127.0.0.1:$PORT (logs: $OUT/logs)"
status=0
run_local_federation "$OUT" "$BIN" "${SITES[@]}" || status=1
echo "== server log"
cat "$OUT/logs/server.log"
if [ "$status" -ne 0 ]; then
  echo "federation failed; client logs:" >&2
  tail -n 20 "$OUT"/logs/site-*.log >&2
  exit 1
fi

echo "== perplexity on the held-out generated stories (seqlen 128)"
dense=$("$BIN/tools/fedprllm-eval" --model "$MODEL" --text "$OUT/data/held-out.txt" --seqlen 128 2>/dev/null | tail -n 1)
pruned=$("$BIN/tools/fedprllm-eval" --model "$OUT/pruned/model" --text "$OUT/data/held-out.txt" --seqlen 128 2>/dev/null | tail -n 1)
echo "dense  model  $dense"
echo "pruned model  $pruned   ($STRATEGY, group $GROUP, sparsity $SPARSITY $PATTERN, 3 sites, mTLS)"
echo "pruned model: $OUT/pruned/model, report: $OUT/pruned/report.json"
