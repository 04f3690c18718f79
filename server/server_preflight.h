// `fedprllm-server check --config server.yaml`: what the server needs before it starts,
// checked without starting it, one CheckReport line each:
//   config       the YAML loads and validates (on failure nothing else is checked);
//   certificate  tls.cert, tls.key and tls.ca belong together, are in their validity period
//                (a warning within 30 days of notAfter) and chain to the CA, for a TLS server;
//   listen       listen_address can be bound the way the server binds it (no SO_REUSEPORT);
//   state_dir, output_dir, jobs_dir   each set one is a writable directory or can be created;
//   model        the model of the config's own job (when `model` is set) loads; its
//                fingerprint and shape.
//
//   CheckReport report(stdout);
//   return RunServerPreflight("server.yaml", {}, &report) ? 0 : 1;
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/check_report.h"
#include "server/server_config.h"
#include "tls/certificate_check.h"

namespace fedprllm {

struct ServerPreflightOptions {
  // Replaces the config's listen_address when not empty (the --listen_address flag).
  std::string listen_address;
  // A certificate whose notAfter is closer than this is a warning. Default 30 days.
  absl::Duration certificate_warning = kCertificateWarningPeriod;
  // When certificates are checked; InfinitePast = the time of the check. Default that.
  absl::Time now = absl::InfinitePast();
};

// Loads `config_path` and runs every check, adding its lines to `report` (the config line
// first). Returns report->passed().
bool RunServerPreflight(const std::string& config_path, const ServerPreflightOptions& options, CheckReport* report);

// The checks after "config", for an already loaded and validated `config`.
bool RunServerChecks(const ServerConfig& config, const ServerPreflightOptions& options, CheckReport* report);

// OK if `dir` is a directory this process can create files in, or does not exist and its
// nearest existing ancestor is one (it would be created). Creates and removes one temporary
// file to find out; creates no directory. `*how` says which ("exists" / "will be created
// in PARENT"). FAILED_PRECONDITION naming `config_key`, the path and why otherwise.
absl::Status CheckWritableDirectory(const std::string& config_key, const std::string& dir, std::string* how);

}  // namespace fedprllm
