// AdminConfig: everything fedprllm-admin reads from its YAML file (deploy/admin.example.yaml
// lists every key with its default). One struct, one loader, one Validate() whose errors
// name the offending key.
//
//   ASSIGN_OR_RETURN(AdminConfig config, LoadAdminConfig("admin.yaml"));
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fedprllm {

struct AdminTlsConfig {
  // PEM files: the operator's certificate (its CN must be on the server's `admins:` list)
  // and key, and the federation CA that signed the server's certificate. Required unless
  // `insecure`.
  std::string cert;
  std::string key;
  std::string ca;
};

struct AdminConfig {
  // host:port of fedprllm-server (the port its sites use). Required; --server_address
  // overrides it.
  std::string server_address;
  // Name the server's certificate must carry, when it differs from the host in
  // server_address (e.g. connecting by IP). Default "" = the host.
  std::string server_name;
  AdminTlsConfig tls;
  // Plaintext, no authentication (test setups only; the server must be insecure too).
  // Default false.
  bool insecure = false;

  // INVALID_ARGUMENT "config key 'k': why" for the first bad value.
  absl::Status Validate() const;
};

// Parses `yaml_text` (`source` names it in errors); unknown keys are refused.
absl::StatusOr<AdminConfig> ParseAdminConfig(const std::string& yaml_text, const std::string& source);
// Reads and parses the file at `path`.
absl::StatusOr<AdminConfig> LoadAdminConfig(const std::string& path);

}  // namespace fedprllm
