// fedprllm-admin: the operator's command-line client of fedprllm-server's admin API.
//   fedprllm-admin --config admin.yaml [flags] COMMAND [ARG]
// Exits 0 on success, 1 on an error (or `health` not SERVING), 2 on a usage error.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/time/time.h"
#include "admin/admin_client.h"
#include "admin/admin_commands.h"
#include "admin/admin_config.h"
#include "common/command_line.h"

ABSL_FLAG(std::string, config, "", "Admin YAML config (see deploy/admin.example.yaml); required");
ABSL_FLAG(std::string, server_address, "", "Overrides the config's server_address");
ABSL_FLAG(bool, json, false, "Print the response as JSON on stdout (and nothing else)");
ABSL_FLAG(double, timeout, 10, "Seconds to wait for each answer (logs --follow: for the start only)");
ABSL_FLAG(bool, watch, false, "status: print again every --interval seconds until the job has ended");
ABSL_FLAG(double, interval, 2, "status --watch: seconds between prints");
ABSL_FLAG(bool, follow, false, "logs: keep printing new lines until the job has ended");
ABSL_FLAG(int64_t, from_line, 0, "logs: the first line to print (0-based)");
ABSL_FLAG(std::string, reason, "", "abort: why (shown in the job's status and log)");

namespace {

int UsageError(const std::string& what) {
  std::fprintf(stderr, "fedprllm-admin: error: %s\n\nusage: %s\n", what.c_str(), fedprllm::kAdminUsage);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (const absl::Status flags = fedprllm::CheckFlagNames(argc, argv); !flags.ok()) {
    return UsageError(std::string(flags.message()));
  }
  const std::vector<char*> args = fedprllm::ParseCommandLine(argc, argv, fedprllm::kAdminUsage);

  fedprllm::AdminOptions options;
  options.json = absl::GetFlag(FLAGS_json);
  options.watch = absl::GetFlag(FLAGS_watch);
  const double interval = absl::GetFlag(FLAGS_interval);
  options.interval = std::isfinite(interval) ? absl::Seconds(interval) : absl::ZeroDuration();
  options.clear_screen = ::isatty(STDOUT_FILENO) == 1;
  options.follow = absl::GetFlag(FLAGS_follow);
  options.from_line = absl::GetFlag(FLAGS_from_line);
  options.reason = absl::GetFlag(FLAGS_reason);
  const absl::StatusOr<fedprllm::AdminCommand> command =
      fedprllm::ParseAdminCommand(std::vector<std::string>(args.begin() + 1, args.end()), options);
  if (!command.ok()) return UsageError(std::string(command.status().message()));
  const double timeout = absl::GetFlag(FLAGS_timeout);
  if (!(timeout > 0) || !std::isfinite(timeout)) return UsageError("--timeout must be a positive number of seconds");
  const std::string path = absl::GetFlag(FLAGS_config);
  if (path.empty()) return UsageError("--config is required");

  absl::StatusOr<fedprllm::AdminConfig> config = fedprllm::LoadAdminConfig(path);
  if (config.ok()) {
    if (const std::string address = absl::GetFlag(FLAGS_server_address); !address.empty()) {
      config->server_address = address;
    }
  }
  absl::StatusOr<std::unique_ptr<fedprllm::AdminClient>> client =
      config.ok() ? fedprllm::AdminClient::Connect(*config, absl::Seconds(timeout)) : config.status();
  if (!client.ok()) {
    std::cerr << fedprllm::AdminErrorText(client.status());
    return 1;
  }
  return fedprllm::RunAdminCommand(*command, options, **client, std::cout, std::cerr);
}
