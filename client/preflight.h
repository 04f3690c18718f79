// `fedprllm-client check --config client.yaml`: everything a site needs before it can take
// part in a job, checked without joining one, one CheckReport line each:
//   config       the YAML loads and validates (on failure nothing else is checked);
//   certificate  tls.cert, tls.key and tls.ca belong together, are in their validity period
//                (a warning within 30 days of notAfter) and chain to the CA;
//   server       the server is reachable, trusts this certificate and names it a site
//                (a TLS probe, then the WhoAmI RPC, within 10 s);
//   model ...    `model` and every `models` entry load, and seqlen fits their
//                max_position_embeddings; their fingerprint and shape;
//   calibration  the sources read and tokenize into enough tokens for the windows (token
//                ids checked against each model's vocabulary).
// The quick checks come first, so a slow model load is not waited for to learn that the
// server refuses this site.
//
//   CheckReport report(stdout);
//   return RunClientPreflight("client.yaml", {}, &report) ? 0 : 1;
#pragma once

#include <string>

#include "absl/time/time.h"
#include "client/client_config.h"
#include "common/check_report.h"
#include "tls/certificate_check.h"

namespace fedprllm {

struct ClientPreflightOptions {
  // Replaces the config's server_address when not empty (the --server_address flag).
  std::string server_address;
  // Deadline of the TLS probe and of the WhoAmI call, each. Default 10 s.
  absl::Duration server_timeout = absl::Seconds(10);
  // A certificate whose notAfter is closer than this is a warning. Default 30 days.
  absl::Duration certificate_warning = kCertificateWarningPeriod;
  // When certificates are checked; InfinitePast = the time of the check. Default that.
  absl::Time now = absl::InfinitePast();
};

// Loads `config_path` and runs every check, adding its lines to `report` (the config line
// first). Returns report->passed(). Blocks for the checks' duration (model loads included).
bool RunClientPreflight(const std::string& config_path, const ClientPreflightOptions& options, CheckReport* report);

// The checks after "config", for an already loaded and validated `config`
// (options.server_address is not applied here).
bool RunClientChecks(const ClientConfig& config, const ClientPreflightOptions& options, CheckReport* report);

}  // namespace fedprllm
