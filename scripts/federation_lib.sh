# Shell functions shared by the scripts that run a federation on this machine
# (run_federation.sh, container_check.sh, scale_check.sh). Source it; it runs nothing.

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
