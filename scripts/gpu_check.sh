#!/usr/bin/env bash
# The CUDA build path, checked in one run on a machine with an NVIDIA GPU and a pip torch
# (README.md, "CUDA build"). Nothing is downloaded, except Debian build dependencies that
# scripts/install_deps.sh finds missing.
#   1. torch: python3's torch must be a CUDA build with the C++11 ABI that sees a GPU;
#   2. deps: scripts/install_deps.sh without Debian's libtorch-dev;
#   3. configure, build: build-gpu/ against that torch (-DTorch_DIR=<torch>/share/cmake/Torch);
#   4. link: the binaries load libtorch_cuda.so;
#   5. golden: the model's golden tests (model_test) on cuda, then on cpu;
#   6. device auto: fedprllm-eval --device auto chooses cuda:0 and says so;
#   7. prune: fedprllm-prune of the bundled model on cpu and on cuda: masks and perplexity agree;
#   8. federation: fedprllm-server and two sites (device: auto) over mTLS on loopback; the
#      sites compute on cuda:0 and the pruned model's masks match a cpu federation's.
# Prints one PASS or FAIL line per check with its seconds, then "gpu_check: N passed,
# N failed"; exits 1 when any check failed.
#
# Usage: scripts/gpu_check.sh [CHECK_DIR] (default out/gpu-check; logs in CHECK_DIR/logs).
# Environment:
#   PYTHON (python3), BUILD_DIR (build-gpu), JOBS (all cores);
#   FEDPRLLM_SHARED_DATA: a copy of shared/data, for the golden tests' TinyStories text
#     (default ../shared/data beside the checkout, else shared/data inside it).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
BUILD=${BUILD_DIR:-build-gpu}
JOBS=${JOBS:-$(nproc)}
CHECK_DIR=${1:-out/gpu-check}
MODEL=$ROOT/models/stories260K/stories260K.bin
# Mask agreement between cpu and cuda: float32 sums in another order may flip a weight that
# sits at its group's threshold, a broken path flips about half of them.
MAX_MASK_DIFF=0.005
# Relative perplexity difference between the cpu- and the cuda-pruned model.
MAX_PPL_DIFF=0.01

START=$SECONDS
PASSED=0
FAILED=0
STEP_START=$SECONDS
step() { STEP_START=$SECONDS; }
pass() { PASSED=$((PASSED + 1)); echo "PASS $1 ($((SECONDS - STEP_START))s)"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $1 ($((SECONDS - STEP_START))s)"; }
# show LOG [N]: the last N (25) lines of a log, indented under a FAIL line.
show() { tail -n "${2:-25}" "$1" | sed 's/^/    | /'; }
finish() {
  echo "gpu_check: total $((SECONDS - START))s; logs in $CHECK_DIR/logs"
  echo "gpu_check: $PASSED passed, $FAILED failed"
  if [ "$FAILED" -eq 0 ]; then exit 0; fi
  exit 1
}
# A check that the rest depends on failed: stop here.
fatal() {
  fail "$1${2:+: $2}"
  finish
}

# ---- 1. torch
step
mkdir -p "$CHECK_DIR/logs"
CHECK_DIR=$(cd "$CHECK_DIR" && pwd)
LOGS=$CHECK_DIR/logs
command -v "$PY" > /dev/null || fatal torch "no $PY on PATH; install Python 3 and a CUDA torch wheel first"
TORCH_PKG=$("$PY" -c 'import torch, os; print(os.path.dirname(torch.__file__))' 2> "$LOGS/torch.txt") ||
  fatal torch "$PY has no torch module; install a CUDA torch wheel first"
# One line of facts, then the device name (which has spaces).
if ! "$PY" - > "$LOGS/torch.txt" 2>&1 <<'EOF'; then
import torch
cuda = torch.version.cuda or "none"
available = torch.cuda.is_available()
count = torch.cuda.device_count() if available else 0
cap = "%d.%d" % torch.cuda.get_device_capability(0) if available else "none"
print(torch.__version__, cuda, int(torch.compiled_with_cxx11_abi()), count, cap)
print(torch.cuda.get_device_name(0) if available else "none")
EOF
  fatal torch "$PY could not describe its torch: $(tail -n 1 "$LOGS/torch.txt")"
fi
read -r TORCH_VERSION TORCH_CUDA TORCH_ABI CUDA_COUNT CUDA_CAP < <(sed -n 1p "$LOGS/torch.txt")
CUDA_NAME=$(sed -n 2p "$LOGS/torch.txt")
TORCH_CMAKE=$TORCH_PKG/share/cmake/Torch
echo "gpu_check: torch $TORCH_VERSION at $TORCH_PKG (CUDA $TORCH_CUDA, C++11 ABI $TORCH_ABI);" \
  "$CUDA_COUNT CUDA device(s), cuda:0 = $CUDA_NAME (compute capability $CUDA_CAP)"
[ "$TORCH_CUDA" != none ] || fatal torch "torch $TORCH_VERSION is a CPU build (torch.version.cuda is None); install a CUDA wheel"
[ "$TORCH_ABI" = 1 ] || fatal torch "torch.compiled_with_cxx11_abi() is False: this torch's pre-C++11 ABI cannot link with the system's gRPC, abseil and protobuf; install a wheel built with the C++11 ABI (pytorch.org's are from 2.7 on)"
[ "$CUDA_COUNT" -gt 0 ] || fatal torch "torch sees no CUDA device (driver, CUDA_VISIBLE_DEVICES?)"
[ -f "$TORCH_CMAKE/TorchConfig.cmake" ] || fatal torch "no $TORCH_CMAKE/TorchConfig.cmake in this torch"
pass "torch $TORCH_VERSION: CUDA $TORCH_CUDA, C++11 ABI, $CUDA_NAME"

# ---- 2. deps
step
if INSTALL_DEPS_EXCLUDE="libtorch-dev gnuplot-nox strace python3-yaml" bash scripts/install_deps.sh > "$LOGS/deps.log" 2>&1; then
  pass deps
else
  # Not fatal yet: the configure step says what is really missing.
  fail "deps: scripts/install_deps.sh failed (log: $LOGS/deps.log); trying to configure with what is installed"
  show "$LOGS/deps.log" 5
fi

# ---- 3. configure and build
step
# LibTorch's CMake config finds the CUDA toolkit through nvcc.
if ! command -v nvcc > /dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
# The project compiles no CUDA code; naming the GPU's architecture spares LibTorch's config a probe.
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$CUDA_CAP}
export CCACHE_BASEDIR=$ROOT CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
# torch 2.12 and later headers demand C++20 of their users (pytorch/pytorch#178150).
CXX_STANDARD=17
if "$PY" -c "import sys, torch; sys.exit(0 if tuple(map(int, torch.__version__.split('.')[:2])) >= (2, 12) else 1)" 2> /dev/null; then
  CXX_STANDARD=20
fi
# CMAKE_POLICY_VERSION_MINIMUM: a CMake 4 (pip's) still reads package configs that ask for
# older policies; older CMakes ignore it.
if ! cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTorch_DIR="$TORCH_CMAKE" \
       -DCMAKE_CXX_STANDARD=$CXX_STANDARD -DCMAKE_POLICY_VERSION_MINIMUM=3.5 > "$LOGS/configure.log" 2>&1; then
  fail configure
  show "$LOGS/configure.log"
  command -v nvcc > /dev/null || echo "gpu_check: no nvcc on PATH: LibTorch's CMake config needs the CUDA toolkit"
  finish
fi
CHOSEN=$(grep -m1 -- '-- LibTorch ' "$LOGS/configure.log" || true)
case "$CHOSEN" in
  *"($TORCH_CMAKE): CUDA") pass "configure:${CHOSEN#-- }, C++$CXX_STANDARD" ;;
  *) fatal configure "expected LibTorch from $TORCH_CMAKE with CUDA, configure says: ${CHOSEN:-nothing}" ;;
esac
step
TARGETS=(model_test fedprllm-prune fedprllm-eval fedprllm-generate fedprllm-server fedprllm-client)
if ! cmake --build "$BUILD" -j"$JOBS" --target "${TARGETS[@]}" > "$LOGS/build.log" 2>&1; then
  fail build
  grep -m 10 -E 'error|Error' "$LOGS/build.log" | sed 's/^/    | /' || true
  finish
fi
pass "build (${TARGETS[*]}, -j$JOBS)"
BIN=$(cd "$BUILD" && pwd)

# ---- 4. link
step
libs=$(ldd "$BIN/tools/fedprllm-prune" 2>&1 || true)
if cuda_lib=$(grep -m1 -o '/[^ ]*libtorch_cuda\.so' <<< "$libs"); then
  pass "link: fedprllm-prune loads $cuda_lib"
else
  fail "link: fedprllm-prune does not load libtorch_cuda.so (LibTorch would see no CUDA)"
fi

# ---- 5. golden
DATA=${FEDPRLLM_SHARED_DATA:-}
if [ -z "$DATA" ]; then
  for dir in "$ROOT/../shared/data" "$ROOT/shared/data"; do
    if [ -f "$dir/tinystories/tinystories_val.txt" ]; then DATA=$dir; break; fi
  done
fi
for device in cuda cpu; do
  step
  if [ -z "$DATA" ] || [ ! -f "$DATA/tinystories/tinystories_val.txt" ]; then
    fail "golden on $device: no tinystories/tinystories_val.txt; copy ../shared/data/tinystories into shared/data/ in the checkout or set FEDPRLLM_SHARED_DATA"
    continue
  fi
  log=$LOGS/golden-$device.log
  if FEDPRLLM_SHARED_DATA=$DATA FEDPRLLM_TEST_DEVICE=$device timeout 300 "$BIN/model/model_test" \
       --gtest_filter='LlamaModelTest.*Golden*:ComputeOptionsTest.*:ProbeCudaTest.*:ResolveDeviceTest.*:DescribeDeviceTest.*' \
       > "$log" 2>&1 && ran=$(grep -m1 -o 'golden values on [a-z0-9:]*' "$log"); then
    pass "golden on ${ran#golden values on } ($(grep -m1 -o '[0-9]* tests* from [0-9]* test suites* ran' "$log"))"
  else
    fail "golden on $device"
    grep -E 'Failure|Expected|Which is|actual|FAILED|golden values' "$log" | head -n 20 | sed 's/^/    | /' || show "$log"
  fi
done

# ---- 6..8 share generated text: calibration and a held-out text, as run_federation.sh.
step
mkdir -p "$CHECK_DIR/data"
if ! { "$BIN/tools/fedprllm-generate" --model "$MODEL" --out "$CHECK_DIR/data/site-a.txt" --seed 101 --streams 16 --tokens 160 --rounds 3 &&
       "$BIN/tools/fedprllm-generate" --model "$MODEL" --out "$CHECK_DIR/data/site-b.txt" --seed 102 --streams 16 --tokens 160 --rounds 3 &&
       "$BIN/tools/fedprllm-generate" --model "$MODEL" --out "$CHECK_DIR/data/held-out.txt" --seed 999 --streams 16 --tokens 160 --rounds 3
     } > "$LOGS/generate.log" 2>&1; then
  fatal "generate: fedprllm-generate failed" "$(tail -n 3 "$LOGS/generate.log")"
fi
pass "generate: calibration and held-out text from the bundled model (cpu)"

# perplexity MODEL DEVICE LOG: prints the perplexity of MODEL on the held-out text.
perplexity() {
  timeout 120 "$BIN/tools/fedprllm-eval" --model "$1" --text "$CHECK_DIR/data/held-out.txt" --seqlen 128 --device "$2" \
    > "$3" 2>&1 && sed -n 's/^perplexity: //p' "$3"
}
# compare_masks A B: the two pruned Hugging Face directories' masks (the zeros of the seven
# linear layers), read from model.safetensors with the standard library alone; prints
# "differing total sparsity_a sparsity_b" and fails past MAX_MASK_DIFF or below 40% sparsity.
compare_masks() {
  "$PY" - "$1/model.safetensors" "$2/model.safetensors" "$MAX_MASK_DIFF" <<'EOF'
import json, struct, sys
# A weight is pruned when it is +0 or -0: every bit but the sign is clear.
WORDS = {"F32": ("I", 0x7FFFFFFF), "F16": ("H", 0x7FFF), "BF16": ("H", 0x7FFF)}
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
def masks(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__" or not any(l in name for l in LINEARS):
            continue
        code, bits = WORDS[t["dtype"]]
        begin, end = t["data_offsets"]
        words = memoryview(data)[8 + n + begin:8 + n + end].cast(code)
        out[name] = [w & bits == 0 for w in words]
    return out
a, b = masks(sys.argv[1]), masks(sys.argv[2])
assert a and a.keys() == b.keys(), "the two models hold different linear layers"
total = sum(len(m) for m in a.values())
differing = sum(x != y for k in a for x, y in zip(a[k], b[k]))
sa = sum(sum(m) for m in a.values()) / total
sb = sum(sum(m) for m in b.values()) / total
print(differing, total, "%.4f" % sa, "%.4f" % sb)
sys.exit(0 if differing <= float(sys.argv[3]) * total and sa > 0.4 and sb > 0.4 else 1)
EOF
}

# ---- 6. device auto
step
if dense_cuda=$(perplexity "$MODEL" auto "$LOGS/eval-dense-auto.log") &&
   line=$(grep -m1 '^computing on cuda:0 (device: auto;' "$LOGS/eval-dense-auto.log"); then
  pass "device auto: ${line#computing on }"
else
  fail "device auto: fedprllm-eval --device auto did not compute on cuda:0"
  show "$LOGS/eval-dense-auto.log" 5
fi

# ---- 7. prune
step
prune_ok=1
for device in cpu cuda; do
  if ! timeout 180 "$BIN/tools/fedprllm-prune" --model "$MODEL" --calib "$CHECK_DIR/data/site-a.txt" --nsamples 32 \
         --seqlen 128 --sparsity 0.5 --device "$device" --out "$CHECK_DIR/prune-$device" > "$LOGS/prune-$device.log" 2>&1; then
    fail "prune on $device: fedprllm-prune failed"
    show "$LOGS/prune-$device.log" 10
    prune_ok=0
  fi
done
if [ "$prune_ok" = 1 ]; then
  cuda_s=$(sed -n 's/^pruned .* in \([0-9.]*\)s .*/\1/p' "$LOGS/prune-cuda.log")
  cpu_s=$(sed -n 's/^pruned .* in \([0-9.]*\)s .*/\1/p' "$LOGS/prune-cpu.log")
  if masks=$(compare_masks "$CHECK_DIR/prune-cpu" "$CHECK_DIR/prune-cuda" 2>&1) &&
     ppl_cpu=$(perplexity "$CHECK_DIR/prune-cpu" cpu "$LOGS/eval-prune-cpu.log") &&
     ppl_cuda=$(perplexity "$CHECK_DIR/prune-cuda" cuda "$LOGS/eval-prune-cuda.log") &&
     "$PY" -c "import sys; a, b = $ppl_cpu, $ppl_cuda; sys.exit(0 if abs(a - b) <= $MAX_PPL_DIFF * a else 1)"; then
    read -r differing total sa sb <<< "$masks"
    pass "prune on cuda: $differing of $total mask bits differ from cpu (sparsity $sb vs $sa), perplexity $ppl_cuda vs $ppl_cpu (dense ${dense_cuda:-?}); ${cuda_s}s vs ${cpu_s}s"
  else
    fail "prune on cuda: masks or perplexity differ from cpu: masks '${masks:-}' perplexity '${ppl_cuda:-?}' vs '${ppl_cpu:-?}'"
  fi
fi

# ---- 8. federation
# federation NAME DEVICE: server + site-a, site-b on loopback with mTLS, sites on DEVICE.
federation() {
  local dir=$CHECK_DIR/federation-$1 device=$2 port=$((20000 + RANDOM % 20000)) site i=0
  rm -rf "$dir"
  mkdir -p "$dir"
  bash deploy/make_certs.sh "$dir/certs" site-a site-b > /dev/null 2>&1
  cat > "$dir/server.yaml" <<YAML
listen_address: "127.0.0.1:$port"
tls: {cert: $dir/certs/server.crt, key: $dir/certs/server.key, ca: $dir/certs/ca.crt}
allowed_clients: [site-a, site-b]
expected_clients: 2
min_clients: 2
model: $MODEL
output_dir: $dir/pruned
state_dir: $dir/state
sparsity: 0.5
group: layer
strategy: one-shot
round_deadline_seconds: 300
exit_when_idle: true
YAML
  for site in site-a site-b; do
    cat > "$dir/$site.yaml" <<YAML
server_address: "127.0.0.1:$port"
server_name: localhost
tls: {cert: $dir/certs/$site.crt, key: $dir/certs/$site.key, ca: $dir/certs/ca.crt}
model: $MODEL
calibration: [$CHECK_DIR/data/$site.txt]
nsamples: 16
seqlen: 128
seed: $i
device: $device
exit_after_jobs: 1
YAML
    i=$((i + 1))
  done
  # timeout stops the whole process group (server and sites) if the job hangs.
  timeout 240 bash -c "source scripts/federation_lib.sh; PIDS=(); run_local_federation '$dir' '$BIN' site-a site-b"
}
step
if federation cuda auto && federation cpu cpu; then
  line=$(grep -h -m1 -o 'computing on .*' "$CHECK_DIR/federation-cuda/logs/site-a.log" || true)
  if [[ "$line" == "computing on cuda:0 (device: auto;"* ]] &&
     masks=$(compare_masks "$CHECK_DIR/federation-cpu/pruned/model" "$CHECK_DIR/federation-cuda/pruned/model" 2>&1); then
    read -r differing total sa sb <<< "$masks"
    pass "federation on cuda (2 sites, mTLS): site-a ${line}; $differing of $total mask bits differ from the cpu federation"
  else
    fail "federation on cuda: site-a logged '${line:-nothing}'; masks against the cpu federation: '${masks:-}'"
  fi
else
  fail "federation: a process failed (logs: $CHECK_DIR/federation-*/logs)"
  for f in "$CHECK_DIR"/federation-*/logs/*.log; do echo "    == $f"; show "$f" 5; done
fi

finish
