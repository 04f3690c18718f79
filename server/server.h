// RunServer: the whole fedprllm-server program after flag parsing. Loads the model, starts
// the mTLS gRPC service and the job, serves until the job is done (pruned model and report
// written) and every joined client has been told, or until a shutdown is requested, then
// shuts down.
#pragma once

#include "absl/status/status.h"
#include "server/server_config.h"

namespace fedprllm {

// Reads a PEM (or any small) file whole; errors name the config key it came from.
absl::StatusOr<std::string> ReadSmallFile(const std::string& path, const std::string& key);

// OK when the job is DONE, or when a shutdown was requested (the job stays resumable);
// otherwise the reason the job failed or could not start.
absl::Status RunServer(const ServerConfig& config);

// Asks RunServer to stop cleanly (from the SIGTERM/SIGINT handler; any thread).
void RequestServerShutdown(const char* signal_name);

}  // namespace fedprllm
