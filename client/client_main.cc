// fedprllm-client: one site of a federated pruning job.
//   fedprllm-client --config client.yaml
// Exits 0 when the server reports the job done, or on SIGTERM/SIGINT; non-zero with the
// reason otherwise.
#include <cstdio>
#include <cstdlib>
#include <string>

#include <spdlog/spdlog.h>

#include "absl/flags/flag.h"
#include "common/command_line.h"
#include "client/client_config.h"
#include "client/federation_client.h"
#include "common/shutdown_signal.h"
#include "common/status_macros.h"
#include "model/cpu_runtime.h"

ABSL_FLAG(std::string, config, "", "Client YAML config (see deploy/client.example.yaml); required");
ABSL_FLAG(std::string, server_address, "", "Overrides the config's server_address");

namespace fedprllm {

absl::Status Run() {
  const std::string path = absl::GetFlag(FLAGS_config);
  if (path.empty()) return absl::InvalidArgumentError("--config is required");
  ASSIGN_OR_RETURN(ClientConfig config, LoadClientConfig(path));
  if (const std::string address = absl::GetFlag(FLAGS_server_address); !address.empty()) {
    config.server_address = address;
    RETURN_IF_ERROR(config.Validate());
  }
  return RunClient(config);
}

}  // namespace fedprllm

int main(int argc, char** argv) {
  // The site holds no durable state: what it committed is on the server, and a restarted
  // client joins again and catches up.
  fedprllm::InstallShutdownHandler([](const char* signal_name) {
    spdlog::info("{} received: leaving the job; the server keeps this site's committed uploads, and a restarted "
                 "client joins again and catches up",
                 signal_name);
    spdlog::default_logger()->flush();
    std::_Exit(0);
  });
  fedprllm::ParseCommandLine(argc, argv, "fedprllm-client --config client.yaml");
  fedprllm::UseAllCores();
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e [%^%l%$] client: %v");
  const absl::Status status = fedprllm::Run();
  if (!status.ok()) {
    std::fprintf(stderr, "fedprllm-client: error: %s: %s\n", absl::StatusCodeToString(status.code()).c_str(),
                 std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
