// fedprllm-client: one site of a federated pruning job.
//   fedprllm-client --config client.yaml
//   fedprllm-client check --config client.yaml   (preflight, client/preflight.h; joins nothing)
// Exits 0 when the server reports the job done, or on SIGTERM/SIGINT; non-zero with the
// reason otherwise. `check` exits 0 only if every check passed.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <grpc/support/log.h>
#include <spdlog/spdlog.h>

#include "absl/flags/flag.h"
#include "common/command_line.h"
#include "common/logging.h"
#include "client/client_config.h"
#include "client/federation_client.h"
#include "client/preflight.h"
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
  RETURN_IF_ERROR(ConfigureLogging("client", config.log_format));
  return RunClient(config);
}

// `check`: the preflight's lines on stdout; true if all passed.
bool Check() {
  // One line per check: the loaders' info lines and gRPC's own error lines (a refused bind, a
  // failed handshake) are noise here, and each check says what went wrong in its own words.
  spdlog::set_level(spdlog::level::warn);
  gpr_set_log_function([](gpr_log_func_args*) {});
  ClientPreflightOptions options;
  options.server_address = absl::GetFlag(FLAGS_server_address);
  CheckReport report(stdout);
  return RunClientPreflight(absl::GetFlag(FLAGS_config), options, &report);
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
  const std::vector<char*> args =
      fedprllm::ParseCommandLine(argc, argv, "fedprllm-client [check] --config client.yaml");
  fedprllm::UseAllCores(fedprllm::PoolUse::kOperations);
  if (args.size() > 1) {
    if (args.size() > 2 || std::string(args[1]) != "check") {
      std::fprintf(stderr,
                   "fedprllm-client: unexpected argument '%s'\n"
                   "usage: fedprllm-client [check] --config client.yaml\n",
                   args.back());
      return 2;
    }
    return fedprllm::Check() ? 0 : 1;
  }
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e [%^%l%$] client: %v");
  const absl::Status status = fedprllm::Run();
  if (!status.ok()) {
    std::fprintf(stderr, "fedprllm-client: error: %s: %s\n", absl::StatusCodeToString(status.code()).c_str(),
                 std::string(status.message()).c_str());
    fedprllm::FlushAndExit(1);
  }
  fedprllm::FlushAndExit(0);
}
