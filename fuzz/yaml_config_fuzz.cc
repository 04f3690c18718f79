// Fuzz target: the daemons' YAML config readers, through config/yaml_config.h's key table
// and each struct's Validate(): the server config (server/server_config.h), a submitted job
// (server/job_config.h, against a fixed valid server config with a jobs_dir) and the client
// config (client/client_config.h). input[0] % 3 picks the reader; the rest is the YAML text.
#include <cstdint>
#include <string>

#include "client/client_config.h"
#include "fuzz/fuzz_support.h"
#include "server/job_config.h"
#include "server/server_config.h"

namespace fedprllm::fuzz {
namespace {

// The server a job is submitted to: the smallest valid config, with jobs enabled.
const ServerConfig& JobServer() {
  static const ServerConfig* server = [] {
    absl::StatusOr<ServerConfig> c = ParseServerConfig(
        "insecure: true\nallowed_clients: [site-a, site-b, site-c]\nmodel: m.bin\noutput_dir: out\n"
        "state_dir: state\njobs_dir: jobs\n",
        "fuzz-server.yaml");
    if (!c.ok()) __builtin_trap();  // the harness, not the parser, is broken
    return new ServerConfig(*std::move(c));
  }();
  return *server;
}

}  // namespace
}  // namespace fedprllm::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fedprllm;
  fuzz::QuietLogs();
  if (size == 0) return 0;
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 3) {
    case 0: {
      absl::StatusOr<ServerConfig> c = ParseServerConfig(text, "fuzz.yaml");
      fuzz::Report("ParseServerConfig", c.status());
      if (c.ok() && !c->Validate().ok()) __builtin_trap();  // Parse promises a valid config
      break;
    }
    case 1:
      fuzz::Report("ParseJobYaml", ParseJobYaml(text, "fuzz-job.yaml", fuzz::JobServer()).status());
      break;
    default:
      fuzz::Report("ParseClientConfig", ParseClientConfig(text, "fuzz-client.yaml").status());
      break;
  }
  return 0;
}
