// RunServer: the whole fedprllm-server program after flag parsing. Starts the mTLS gRPC
// services (sites, admin, health), the metrics endpoint and the job queue, and serves until
// a shutdown is requested (or, with exit_when_idle, until no job is left).
#pragma once

#include "absl/status/status.h"
#include "server/server_config.h"

namespace fedprllm {

// OK after a requested shutdown (the running job stays resumable), or, with
// exit_when_idle, when every job is done; otherwise the first failed job's reason, or why
// the server could not start. `config_path` is re-read by RequestServerReload.
absl::Status RunServer(const ServerConfig& config, const std::string& config_path = "");

// Asks RunServer to stop cleanly (from the SIGTERM/SIGINT handler; any thread).
void RequestServerShutdown(const char* signal_name);

// Re-reads the config file's access keys (allowed_clients, admins, tls.crl) and its
// certificate files (tls.cert, tls.key, tls.ca) without stopping the running job: the next
// call of every peer is checked against the new rules, and new connections get the new
// certificate. Other keys take effect at the next start. A config that does not load
// changes nothing, and certificate files that fail the startup check keep the previous
// certificate (the error is logged). From the SIGHUP handler; any thread.
void RequestServerReload();

}  // namespace fedprllm
