// fedprllm-server: the aggregation server of a federated pruning job.
//   fedprllm-server --config server.yaml
//   fedprllm-server check --config server.yaml   (preflight, server/server_preflight.h; starts
//                                                 nothing; exits 0 only if every check passed)
// Exits 0 once the pruned model and its report are written, or after SIGTERM/SIGINT (the job
// then resumes where it stopped when the server is started again with the same config).
#include <cstdio>
#include <string>
#include <vector>

#include <grpc/support/log.h>
#include <spdlog/spdlog.h>

#include "absl/flags/flag.h"
#include "common/command_line.h"
#include "common/logging.h"
#include "common/shutdown_signal.h"
#include "common/status_macros.h"
#include "model/cpu_runtime.h"
#include "server/server.h"
#include "server/server_config.h"
#include "server/server_preflight.h"

ABSL_FLAG(std::string, config, "", "Server YAML config (see deploy/server.example.yaml); required");
ABSL_FLAG(std::string, listen_address, "", "Overrides the config's listen_address");

namespace fedprllm {

absl::Status Run() {
  const std::string path = absl::GetFlag(FLAGS_config);
  if (path.empty()) return absl::InvalidArgumentError("--config is required");
  ASSIGN_OR_RETURN(ServerConfig config, LoadServerConfig(path));
  if (const std::string listen = absl::GetFlag(FLAGS_listen_address); !listen.empty()) {
    config.listen_address = listen;
    RETURN_IF_ERROR(config.Validate());
  }
  RETURN_IF_ERROR(ConfigureLogging("server", config.log_format));
  return RunServer(config, path);
}

// `check`: the preflight's lines on stdout; true if all passed.
bool Check() {
  // One line per check: the loaders' info lines and gRPC's own error lines (a refused bind, a
  // failed handshake) are noise here, and each check says what went wrong in its own words.
  spdlog::set_level(spdlog::level::warn);
  gpr_set_log_function([](gpr_log_func_args*) {});
  ServerPreflightOptions options;
  options.listen_address = absl::GetFlag(FLAGS_listen_address);
  CheckReport report(stdout);
  return RunServerPreflight(absl::GetFlag(FLAGS_config), options, &report);
}

}  // namespace fedprllm

int main(int argc, char** argv) {
  fedprllm::InstallShutdownHandler(fedprllm::RequestServerShutdown);
  fedprllm::InstallReloadHandler(fedprllm::RequestServerReload);
  const std::vector<char*> args =
      fedprllm::ParseCommandLine(argc, argv, "fedprllm-server [check] --config server.yaml");
  fedprllm::UseAllCores();
  if (args.size() > 1) {
    if (args.size() > 2 || std::string(args[1]) != "check") {
      std::fprintf(stderr,
                   "fedprllm-server: unexpected argument '%s'\n"
                   "usage: fedprllm-server [check] --config server.yaml\n",
                   args.back());
      return 2;
    }
    return fedprllm::Check() ? 0 : 1;
  }
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e [%^%l%$] server: %v");
  const absl::Status status = fedprllm::Run();
  if (!status.ok()) {
    spdlog::error("{}", std::string(status.message()));
    std::fprintf(stderr, "fedprllm-server: error: %s\n", std::string(status.message()).c_str());
    fedprllm::FlushAndExit(1);
  }
  fedprllm::FlushAndExit(0);
}
