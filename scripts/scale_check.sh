#!/usr/bin/env bash
# A federation at real scale on this machine: fedprllm-synth writes a model of a real
# architecture's shapes (seeded random weights, bfloat16), then a real fedprllm-server and
# SITES real fedprllm-clients run a one-shot, layer-group, 50% job over mutual TLS on
# 127.0.0.1, each site calibrating on 1 window of 128 tokens of its own text (WikiText-2
# lines), computing in float32. Prints the wall time of each phase, the peak RSS and peak
# anonymous memory (RssAnon, sampled every 0.5 s) of the server and of each site, the bits
# per weight on the wire, and the pruned model's sparsity per matrix as an independent
# reader (Python, the safetensors bytes) counts its zeros. Slow (minutes to an hour) and
# heavy on disk (the model twice), so not part of .ci/run.
# Usage: scripts/scale_check.sh [OUT_DIR] (default out/scale-check). Environment:
#   ARCH (llama-2-7b; fedprllm-synth --list), SITES (3), LAYERS (0 = the architecture's),
#   BUILD_DIR (build), PORT (free port), KEEP_MODEL=1 reuses OUT_DIR/model.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
source scripts/federation_lib.sh
OUT=$(realpath -m "${1:-out/scale-check}")
ARCH=${ARCH:-llama-2-7b}
NSITES=${SITES:-3}
LAYERS=${LAYERS:-0}
BIN=$(realpath "${BUILD_DIR:-build}")
PORT=${PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
TEXT=$ROOT/../shared/data/wikitext-2/valid.txt
TOKENIZER=$ROOT/../shared/data/llama2-tokenizer/tokenizer.model
for f in "$BIN/server/fedprllm-server" "$BIN/client/fedprllm-client" "$BIN/tools/fedprllm-synth"; do
  [[ -x "$f" ]] || { echo "scale_check: $f is missing: build first (bash scripts/test.sh, or cmake --build build)" >&2; exit 2; }
done
mkdir -p "$OUT/logs" "$OUT/data"
now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.1f}')"; }

# watch PID NAME: samples VmHWM and RssAnon of PID into $OUT/logs/NAME.mem until it exits.
watch_memory() {
  local pid=$1 name=$2 peak_anon=0 hwm=0 a h
  while kill -0 "$pid" 2>/dev/null; do
    a=$(awk '/^RssAnon/{print $2}' "/proc/$pid/status" 2>/dev/null || true)
    h=$(awk '/^VmHWM/{print $2}' "/proc/$pid/status" 2>/dev/null || true)
    [[ -n "$a" && "$a" -gt "$peak_anon" ]] && peak_anon=$a
    [[ -n "$h" && "$h" -gt "$hwm" ]] && hwm=$h
    echo "$hwm $peak_anon" > "$OUT/logs/$name.mem"
    sleep 0.5
  done
}

t0=$(now)
if [[ "${KEEP_MODEL:-0}" == 1 && -f "$OUT/model/config.json" ]]; then
  echo "== reusing $OUT/model"
else
  echo "== fedprllm-synth --arch $ARCH --layers $LAYERS"
  rm -rf "$OUT/model"
  "$BIN/tools/fedprllm-synth" --arch "$ARCH" --layers "$LAYERS" --seed 1 --tokenizer "$TOKENIZER" --out "$OUT/model"
fi
t_synth=$(now)

SITE_NAMES=()
for ((i = 0; i < NSITES; ++i)); do SITE_NAMES+=("site-$i"); done
bash deploy/make_certs.sh "$OUT/certs" "${SITE_NAMES[@]}" >/dev/null
# Each site's private text: its own slice of WikiText-2's validation lines.
for ((i = 0; i < NSITES; ++i)); do
  awk -v n="$NSITES" -v i="$i" 'NF && (NR % n) == i' "$TEXT" > "$OUT/data/site-$i.txt"
done
sites_list=$(IFS=,; echo "${SITE_NAMES[*]}")
cat > "$OUT/server.yaml" <<YAML
listen_address: "127.0.0.1:$PORT"
tls: {cert: $OUT/certs/server.crt, key: $OUT/certs/server.key, ca: $OUT/certs/ca.crt}
allowed_clients: [$sites_list]
expected_clients: $NSITES
min_clients: $NSITES
model: $OUT/model
output_dir: $OUT/pruned
state_dir: $OUT/state
sparsity: 0.5
pattern: unstructured
group: layer
strategy: one-shot
join_timeout_seconds: 3600
round_deadline_seconds: 86400
exit_when_idle: true
YAML
for ((i = 0; i < NSITES; ++i)); do
  cat > "$OUT/site-$i.yaml" <<YAML
server_address: "127.0.0.1:$PORT"
server_name: localhost
tls: {cert: $OUT/certs/site-$i.crt, key: $OUT/certs/site-$i.key, ca: $OUT/certs/ca.crt}
model: $OUT/model
calibration: [$OUT/data/site-$i.txt]
nsamples: 1
seqlen: 128
seed: $i
dtype: float32
batch_size: 1
rpc_timeout_seconds: 3600
exit_after_jobs: 1
YAML
done
rm -rf "$OUT/state" "$OUT/pruned"

PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
echo "== fedprllm-server and $NSITES fedprllm-clients on 127.0.0.1:$PORT (logs: $OUT/logs)"
t_start=$(now)
on_federation_process() { watch_memory "$1" "$2" & }
status=0
run_local_federation "$OUT" "$BIN" "${SITE_NAMES[@]}" || status=1
t_end=$(now)
sleep 1
if [[ "$status" -ne 0 ]]; then
  echo "scale_check: the federation failed; logs:" >&2
  tail -n 15 "$OUT/logs/server.log" "$OUT"/logs/site-*.log >&2
  exit 1
fi

echo "== figures"
echo "synth: $(elapsed "$t0" "$t_synth") s; federation (server start to exit): $(elapsed "$t_start" "$t_end") s"
python3 - "$OUT" "$NSITES" <<'PY'
import array, json, os, re, struct, sys
out, nsites = sys.argv[1], int(sys.argv[2])
def mem(name):
    hwm, anon = open(f"{out}/logs/{name}.mem").read().split()
    return int(hwm) / 1e6, int(anon) / 1e6
log = open(f"{out}/logs/server.log").read()
def seconds(pattern):
    m = re.search(pattern, log)
    return m.group(1) if m else "?"
print(f"server phases: aggregation {seconds(r'decided in ([0-9.]+) s')} s, "
      f"model write {seconds(r'pruned model written to .*?, ([0-9.]+) s')} s")
for name in ["server"] + [f"site-{i}" for i in range(nsites)]:
    hwm, anon = mem(name)
    print(f"{name:8s} peak RSS {hwm:6.2f} GB   peak RssAnon {anon:6.2f} GB")
report = json.load(open(f"{out}/pruned/report.json"))
print("server phases (report.json):", json.dumps(report.get("phases_seconds", {})))
bpw = [v["bits_per_weight"] for v in report.get("bytes_per_client", {}).values()]
print(f"bits per weight on the wire: {min(bpw):.4f} .. {max(bpw):.4f} over {len(bpw)} sites")
# Independent sparsity: count zero bfloat16/float values per prunable matrix in the safetensors.
model = f"{out}/pruned/model"
files = [f for f in os.listdir(model) if f.endswith(".safetensors")]
prunable = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
total = zeros = 0
worst = (1.0, 0.0)
for f in files:
    with open(os.path.join(model, f), "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        header = json.loads(fh.read(n))
        base = 8 + n
        for name, e in header.items():
            if name == "__metadata__" or not any(p in name for p in prunable):
                continue
            a, b = e["data_offsets"]
            fh.seek(base + a)
            size = 2 if e["dtype"] in ("BF16", "F16") else 4
            count = (b - a) // size
            z = 0
            left = count
            while left:  # +0 and -0 are the zeros of every float format
                k = min(1 << 24, left)
                values = array.array("H" if size == 2 else "I", fh.read(k * size))
                z += values.count(0) + values.count(0x8000 if size == 2 else 0x80000000)
                left -= k
            total += count
            zeros += z
            s = z / count
            worst = (min(worst[0], s), max(worst[1], s))
print(f"pruned model: {zeros} of {total} prunable weights are zero ({zeros / total:.6f}); "
      f"per matrix {worst[0]:.6f} .. {worst[1]:.6f} (independent reader over {len(files)} safetensors file(s))")
PY
