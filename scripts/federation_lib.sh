# Shell functions shared by the scripts that run a federation on this machine
# (run_federation.sh, container_check.sh, scale_check.sh, bench/contention.sh). Source it; it
# runs nothing.

# write_site_config FILE PORT CERTS MODEL CALIBRATION SEED SITE: the main job's
# fedprllm-client config for SITE (mutual TLS with CERTS/SITE.{crt,key} and CERTS/ca.crt,
# 32 calibration windows of 128 tokens from CALIBRATION, one job, then exit).
write_site_config() {
  local file=$1 port=$2 certs=$3 model=$4 calibration=$5 seed=$6 site=$7
  cat > "$file" <<YAML
server_address: "127.0.0.1:$port"
server_name: localhost
tls: {cert: $certs/$site.crt, key: $certs/$site.key, ca: $certs/ca.crt}
model: $model
calibration: [$calibration]
nsamples: 32
seqlen: 128
seed: $seed
exit_after_jobs: 1
YAML
}

# run_local_federation DIR BIN SITE...: starts fedprllm-server with DIR/server.yaml and one
# fedprllm-client per SITE with DIR/SITE.yaml, logging to DIR/logs/{server,SITE}.log, and
# waits for all of them. Returns 0 only if every process exited 0. Every PID is appended
# to the caller's PIDS array as it starts, so that the caller's EXIT trap can stop them.
# When the caller defines on_federation_process PID NAME, it is called for each process.
run_local_federation() {
  local dir=$1 bin=$2 site pid status=0
  shift 2
  mkdir -p "$dir/logs"
  "$bin/server/fedprllm-server" --config "$dir/server.yaml" > "$dir/logs/server.log" 2>&1 &
  local server_pid=$!
  PIDS+=("$server_pid")
  if declare -F on_federation_process > /dev/null; then on_federation_process "$server_pid" server; fi
  sleep 1
  local client_pids=()
  for site in "$@"; do
    "$bin/client/fedprllm-client" --config "$dir/$site.yaml" > "$dir/logs/$site.log" 2>&1 &
    pid=$!
    client_pids+=("$pid")
    PIDS+=("$pid")
    if declare -F on_federation_process > /dev/null; then on_federation_process "$pid" "$site"; fi
  done
  for pid in "${client_pids[@]}"; do wait "$pid" || status=1; done
  wait "$server_pid" || status=1
  return "$status"
}
