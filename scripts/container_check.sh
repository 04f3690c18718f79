#!/usr/bin/env bash
# Builds the fedprllm-server and fedprllm-client images (docker/) and checks that a federation
# run in containers prunes exactly as the bare-metal binaries do: one server and three sites
# (site-a, site-b, site-c) on the host network (loopback) with mutual TLS, the bundled
# stories260K model, the calibration text and settings of scripts/run_federation.sh; the pruned
# model's files must match sha256 for sha256. Slow (the image build compiles the project), so
# not part of .ci/run. Needs root: podman, buildah and runc (installed with apt-get if
# missing), and debootstrap to make the debian:bookworm-slim base when no registry answers
# (../shared/docs/CONTAINERS.md).
# Usage: scripts/container_check.sh [OUT_DIR] (default out/container-check). Environment:
#   BUILD_DIR (build): the bare-metal build folder; JOBS (nproc): compile jobs of the image
#   build; PORT; OCI_RUNTIME (/usr/sbin/runc); KEEP_IMAGES=1 skips rebuilding existing images.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
source scripts/federation_lib.sh
OUT=${1:-out/container-check}
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
PORT=${PORT:-$((20000 + RANDOM % 20000))}
OCI_RUNTIME=${OCI_RUNTIME:-/usr/sbin/runc}
MODEL_REL=models/stories260K/stories260K.bin
SITES=(site-a site-b site-c)
BASE=docker.io/library/debian:bookworm-slim
TAG=$$
start=$SECONDS

need=()
for tool in podman buildah runc debootstrap; do command -v "$tool" >/dev/null || need+=("$tool"); done
if ((${#need[@]})); then
  echo "== installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
fi
rm -rf "$OUT"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# podman must not try to raise the open-files limit here (CONTAINERS.md).
if [[ -z "${CONTAINERS_CONF:-}" ]]; then
  printf '[containers]\ndefault_ulimits = []\n' > "$OUT/containers.conf"
  export CONTAINERS_CONF=$OUT/containers.conf
fi
PODMAN=(podman --runtime "$OCI_RUNTIME")

echo "== base image $BASE"
if ! podman image exists "$BASE" && ! podman pull -q "$BASE" >/dev/null 2>&1; then
  echo "   no registry answers: making it with debootstrap --variant=minbase bookworm"
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  debootstrap --variant=minbase bookworm "$OUT/rootfs" "${mirror:-http://deb.debian.org/debian}" >"$OUT/debootstrap.log" 2>&1
  tar -C "$OUT/rootfs" -c . | podman import - "$BASE" >/dev/null
  rm -rf "$OUT/rootfs"
fi

# Both images are built from one snapshot of the working tree (tracked and untracked files
# that git does not ignore, and .git for the version line), so they hold the same sources
# even while the checkout changes, and the client image reuses the server's build stage.
context=.
if git rev-parse --git-dir >/dev/null 2>&1; then
  context=$OUT/context
  mkdir -p "$context"
  git ls-files -z --cached --others --exclude-standard |
    tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -C "$context" -xf -
  cp -a "$(git rev-parse --git-dir)" "$context/.git"
fi
# The build stage copies the sources to this checkout's own path and uses this machine's
# ccache, so the image build reuses what a bare-metal build of build-pkg compiled.
ccache_dir=$(ccache -k cache_dir 2>/dev/null || echo "$OUT/ccache")
mkdir -p "$ccache_dir"
for image in server client; do
  if [[ "${KEEP_IMAGES:-0}" == 1 ]] && podman image exists "fedprllm-$image"; then
    echo "== keeping image fedprllm-$image"; continue
  fi
  echo "== building image fedprllm-$image (log: $OUT/build-$image.log)"
  t=$SECONDS
  buildah bud --isolation chroot --network host --layers --format docker \
    --build-arg SRC="$ROOT" --build-arg JOBS="$JOBS" --build-arg CCACHE_DIR=/ccache \
    --volume "$ccache_dir:/ccache" \
    -f "$context/docker/Dockerfile.$image" -t "fedprllm-$image" "$context" >"$OUT/build-$image.log" 2>&1 ||
    { tail -n 30 "$OUT/build-$image.log" >&2; exit 1; }
  echo "   built in $((SECONDS - t)) s"
done
"${PODMAN[@]}" run --rm --network none --no-healthcheck fedprllm-server --version
"${PODMAN[@]}" run --rm --network none --no-healthcheck fedprllm-client --version

echo "== bare-metal binaries ($BUILD_DIR)"
export CCACHE_BASEDIR=$ROOT
export CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)" --target fedprllm-server fedprllm-client fedprllm-generate >/dev/null
BIN=$ROOT/$BUILD_DIR

echo "== the sites' stories (scripts/run_federation.sh's seeds) and the certificates"
mkdir -p "$OUT/data"
for i in "${!SITES[@]}"; do
  "$BIN/tools/fedprllm-generate" --model "$ROOT/$MODEL_REL" --out "$OUT/data/${SITES[$i]}.txt" \
    --seed $((101 + i)) --streams 16 --tokens 160 --rounds 3 2>/dev/null
done
bash deploy/make_certs.sh "$OUT/certs" "${SITES[@]}" operator monitor >/dev/null

# write_configs DIR CERTS MODELS DATA STATE PORT: server.yaml, health.yaml and one site
# config per site in DIR, with the paths the processes see.
write_configs() {
  local dir=$1 certs=$2 models=$3 data=$4 state=$5 port=$6
  mkdir -p "$dir"
  cat > "$dir/server.yaml" <<YAML
listen_address: "127.0.0.1:$port"
tls: {cert: $certs/server.crt, key: $certs/server.key, ca: $certs/ca.crt}
allowed_clients: [site-a, site-b, site-c]
admins: [operator]
monitors: [monitor]
expected_clients: 3
min_clients: 3
model: $models/stories260K/stories260K.bin
output_dir: $state/pruned
state_dir: $state/state
sparsity: 0.5
pattern: unstructured
group: layer
strategy: one-shot
round_deadline_seconds: 600
exit_when_idle: true
YAML
  cat > "$dir/health.yaml" <<YAML
server_address: "127.0.0.1:$port"
server_name: localhost
tls: {cert: $certs/monitor.crt, key: $certs/monitor.key, ca: $certs/ca.crt}
YAML
  local i
  for i in "${!SITES[@]}"; do
    cat > "$dir/${SITES[$i]}.yaml" <<YAML
server_address: "127.0.0.1:$port"
server_name: localhost
tls: {cert: $certs/${SITES[$i]}.crt, key: $certs/${SITES[$i]}.key, ca: $certs/ca.crt}
model: $models/stories260K/stories260K.bin
calibration: [$data/${SITES[$i]}.txt]
nsamples: 32
seqlen: 128
seed: $i
exit_after_jobs: 1
YAML
  done
}

echo "== bare-metal federation on 127.0.0.1:$PORT"
bare=$OUT/bare
write_configs "$bare" "$OUT/certs" "$ROOT/models" "$OUT/data" "$bare" "$PORT"
mkdir -p "$bare/logs"
PIDS=()
NAMES=()
cleanup() {
  local pid name
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for name in "${NAMES[@]}"; do "${PODMAN[@]}" rm -f -t 5 "$name" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT
status=0
run_local_federation "$bare" "$BIN" "${SITES[@]}" || status=1
PIDS=()
if ((status)); then tail -n 20 "$bare"/logs/*.log >&2; echo "bare-metal federation failed" >&2; exit 1; fi

CPORT=$((PORT + 1))
echo "== federation in containers on 127.0.0.1:$CPORT (host network)"
ctr=$OUT/containers
# The images run as uid 10001: it owns its copy of the keys and the state folder.
mkdir -p "$ctr/certs" "$ctr/state" "$ctr/logs"
cp "$OUT"/certs/*.crt "$OUT"/certs/*.key "$ctr/certs/"
write_configs "$ctr/etc" /certs /models /data /var/lib/fedprllm "$CPORT"
chown -R 10001:10001 "$ctr/certs" "$ctr/state"
volumes=(-v "$ctr/certs:/certs:ro" -v "$ROOT/models:/models:ro" -v "$OUT/data:/data:ro")
server_name=fedprllm-check-server-$TAG
NAMES+=("$server_name")
# --health-interval disable: no systemd timer (there is no systemd here); the check is run
# by hand below. podman still logs that it cannot reach systemd: that goes to podman.log.
"${PODMAN[@]}" run -d --name "$server_name" --network host --health-interval disable "${volumes[@]}" \
  -v "$ctr/state:/var/lib/fedprllm" -v "$ctr/etc/server.yaml:/etc/fedprllm/server.yaml:ro" \
  -v "$ctr/etc/health.yaml:/etc/fedprllm/health.yaml:ro" fedprllm-server >/dev/null 2>>"$OUT/podman.log" ||
  { cat "$OUT/podman.log" >&2; exit 1; }
# The image's HEALTHCHECK (fedprllm-admin health over mTLS) must pass before the sites start.
healthy=0
for _ in $(seq 60); do
  if "${PODMAN[@]}" healthcheck run "$server_name" >/dev/null 2>&1; then healthy=1; break; fi
  sleep 1
done
((healthy)) || { "${PODMAN[@]}" logs "$server_name" >&2; echo "server container never healthy" >&2; exit 1; }
echo "   server container healthy (HEALTHCHECK: fedprllm-admin health)"
site_names=()
for site in "${SITES[@]}"; do
  name=fedprllm-check-$site-$TAG
  NAMES+=("$name")
  site_names+=("$name")
  "${PODMAN[@]}" run -d --name "$name" --network host --health-interval disable "${volumes[@]}" \
    -v "$ctr/etc/$site.yaml:/etc/fedprllm/site.yaml:ro" fedprllm-client >/dev/null 2>>"$OUT/podman.log" ||
    { cat "$OUT/podman.log" >&2; exit 1; }
done
status=0
for name in "${site_names[@]}" "$server_name"; do
  code=$("${PODMAN[@]}" wait "$name")
  "${PODMAN[@]}" logs "$name" >"$ctr/logs/${name%-"$TAG"}.log" 2>&1 || true
  [[ "$code" == 0 ]] || { echo "container $name exited $code" >&2; status=1; }
done
if ((status)); then tail -n 20 "$ctr"/logs/*.log >&2; echo "federation in containers failed" >&2; exit 1; fi

echo "== the pruned models, sha256"
(cd "$bare/pruned/model" && sha256sum -- * | sort -k 2) >"$OUT/bare.sha256"
(cd "$ctr/state/pruned/model" && sha256sum -- * | sort -k 2) >"$OUT/containers.sha256"
paste "$OUT/bare.sha256" "$OUT/containers.sha256" | awk '{printf "  %-26s bare %.16s  containers %.16s\n", $2, $1, $3}'
echo "== images"
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '/fedprllm-(server|client):' || true
if ! cmp -s "$OUT/bare.sha256" "$OUT/containers.sha256"; then
  echo "container_check: FAIL: the pruned models differ ($((SECONDS - start)) s)" >&2
  exit 1
fi
echo "container_check: ok: the containers' pruned model equals the bare-metal one, file for file ($((SECONDS - start)) s)"
