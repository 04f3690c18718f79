// A job YAML: what one pruning job is (its model, pruning settings and sites), submitted to a
// running server or listed in its config. ParseJobYaml turns it into the ServerConfig that
// FederationJob runs: the server's own keys (listen address, TLS, timeouts, chunk sizes)
// with the job's keys on top, and the job's state and output under jobs_dir/NAME.
//
//   ASSIGN_OR_RETURN(JobDefinition job, ParseJobYaml(text, "nightly.yaml", server_config));
//   FederationJob::Create(job.config, ...);
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "server/server_config.h"

namespace fedprllm {

struct JobDefinition {
  std::string name;       // the YAML's `name`, unique on the server
  std::string yaml_text;  // as submitted, kept in jobs_dir/NAME/job.yaml
  ServerConfig config;    // validated; allowed_clients = the job's sites
};

// Keys (deploy/job.example.yaml): name (required), model (required, a path on the server),
// model_name, tokenizer, output_dir (default jobs_dir/NAME/output), sites (default: every
// allowed client; each must be one), expected_clients, min_clients, sparsity, pattern,
// group, strategy, weight_scaling, tie_break, seed, join_timeout_seconds,
// round_deadline_seconds, max_round_extensions; each with the server config's default and
// bounds. Unknown keys are refused. INVALID_ARGUMENT "source:line: ..." naming the key;
// FAILED_PRECONDITION if the server has no jobs_dir.
absl::StatusOr<JobDefinition> ParseJobYaml(const std::string& yaml_text, const std::string& source,
                                           const ServerConfig& server);

// The config's own job (ServerConfig::has_own_job()) as a JobDefinition.
JobDefinition OwnJob(const ServerConfig& server);

}  // namespace fedprllm
