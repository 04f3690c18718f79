// ServerConfig: everything fedprllm-server reads from its YAML file (deploy/server.example.yaml
// lists every key with its default). One struct, one loader, one Validate() whose errors name
// the offending key.
//
//   ASSIGN_OR_RETURN(ServerConfig config, LoadServerConfig("server.yaml"));   // parses + validates
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "config/yaml_config.h"
#include "engine/federation.h"
#include "engine/site_agreement.h"
#include "engine/mask_selection.h"
#include "engine/vote_aggregation.h"

namespace fedprllm {

struct ServerTlsConfig {
  // PEM files of the server certificate chain, its private key, and the federation CA that
  // signs client certificates. Default: none; all three are required unless `insecure`.
  std::string cert;
  std::string key;
  std::string ca;
  // PEM CRL signed by that CA (`fedprllm-certs revoke`): a revoked client certificate is
  // refused on every call. Re-read on SIGHUP. Default "" = none.
  std::string crl;
};

struct ServerConfig {
  // host:port to listen on. Default "0.0.0.0:50051". Port 0 is refused (clients need it).
  std::string listen_address = "0.0.0.0:50051";
  ServerTlsConfig tls;
  // Plaintext without any authentication; for local experiments only, logged as a warning.
  // Identities then come from JoinRequest.client_name. Default false.
  bool insecure = false;
  // Client identities (certificate CN or SAN DNS name) allowed to join. 1..1000 distinct
  // names of [A-Za-z0-9._-], at most 64 bytes each. Required. A job's `sites` are a subset.
  std::vector<std::string> allowed_clients;
  // Operator identities allowed to call the admin API (docs/admin_api.md). Same syntax,
  // 0..100 names, none also in allowed_clients: a certificate is a site's or an operator's,
  // never both. Default [] (no admin API).
  std::vector<std::string> admins;
  // Monitor identities: health checks and the admin API's read-only RPCs (ListJobs,
  // GetJobStatus, ListSites, StreamJobLog), never SubmitJob or AbortJob. For probes and
  // dashboards. Same syntax, 0..100 names, none also a site's or an operator's. Default [].
  std::vector<std::string> monitors;
  // Where submitted jobs live: jobs_dir/NAME/{job.yaml,status.json,server.log,state/,output/}.
  // Default "" = jobs cannot be submitted, only the config's own job runs.
  std::string jobs_dir;
  // Job YAML files queued at start, in order, unless a job of that name is already known
  // (then it resumes or stays done). Needs jobs_dir. Default [].
  std::vector<std::string> jobs;
  // Exit once no job is queued or running (the config's own job and `jobs` done). Default
  // false: the server runs until SIGTERM/SIGINT.
  bool exit_when_idle = false;
  // host:port of the Prometheus text endpoint (docs/metrics.md). Default "" = none.
  std::string metrics_address;
  // "text" | "json" (one JSON object per line). Default "text".
  std::string log_format = "text";
  // Commits that close a round early. Default 0 = all allowed clients. Bounds
  // 1..len(allowed_clients).
  int expected_clients = 0;
  // Commits needed to close a round at its deadline. Default 0 = expected_clients. Bounds
  // 1..expected_clients.
  int min_clients = 0;
  // ---- The config's own job: set `model`, `output_dir` and `state_dir` for the server to
  // run one job at start (named `job_name`), or none of them. The keys from here to
  // max_round_extensions are also a job YAML's (server/job_config.h).
  std::string job_name = "default";
  // Dense base model: Hugging Face directory or llama2.c .bin.
  std::string model;
  // The name sites look the model up by (their `models:` map). Default "" = the model's
  // file name without extension (stories260K.bin -> stories260K).
  std::string model_name;
  // SentencePiece file copied next to the pruned model. Default "" = found beside the model
  // if there is one, otherwise none is copied.
  std::string tokenizer;
  // Where the pruned model (output_dir/model) and report (output_dir/report.json) go.
  std::string output_dir;
  // Job state (manifest, commits, uploads, decisions), docs/round_protocol.md §6.
  std::string state_dir;
  // Fraction pruned per comparison group, [0, 1). Default 0.5. Ignored for N:M (n/m).
  double sparsity = 0.5;
  // "unstructured" | "2:4" | "4:8". Default "unstructured".
  std::string pattern = "unstructured";
  // Comparison group of the vote aggregation: "layer" | "row" | "column". Default "layer".
  std::string group = "layer";
  // "one-shot" | "iterative" | "exact" (docs/round_protocol.md §4). Default "one-shot".
  std::string strategy = "one-shot";
  // Scale kept weights by (clients that kept them)/(clients). Default false.
  bool weight_scaling = false;
  // Exact strategy only: the sites' statistics are summed by secure aggregation, so the
  // server learns only the sum (docs/secure_aggregation.md). Needs mutual TLS and at least 3
  // allowed sites. Default false.
  bool secure_aggregation = false;
  // Shamir threshold t of the secure sum; 0 = floor(n / 2) + 1 for n allowed sites. Bounds
  // 0 or [2, n]. Default 0.
  int secure_aggregation_threshold = 0;
  // Fixed-point fraction bits of the secure sum. Bounds [8, 40]. Default 24.
  int secure_aggregation_fraction_bits = 24;
  // The threshold in force (resolves 0).
  int SecureThreshold() const {
    return secure_aggregation_threshold > 0 ? secure_aggregation_threshold
                                            : static_cast<int>(allowed_clients.size()) / 2 + 1;
  }
  // Order among equal vote counts: "magnitude" (smaller |W| first) | "random". Default
  // "magnitude".
  std::string tie_break = "magnitude";
  // Seed of the "random" tie-break. Default 0.
  uint64_t seed = 0;
  // Seconds to wait for every expected client before opening round 0 with at least
  // min_clients joined. Default 600. Bounds 1..86400.
  int join_timeout_seconds = 600;
  // The comparison group of every site's own masks (the clients' `local_group`), which
  // each upload is checked against before it is counted (docs/robustness.md §1): "row"
  // (Wanda's: every row prunes exactly NumToPrune(row length, sparsity)) | "layer" (every
  // tensor prunes exactly NumToPrune(numel, sparsity)) | "any" (no sparsity rule, only the
  // wire format's checks). N:M jobs are checked by the wire format's N:M rule whatever this
  // says. Default "row".
  std::string site_group = "row";
  // What to do with a site whose agreement with the consensus is far below the others'
  // (docs/robustness.md §2): "report" (log it and name it in the report; its votes count) |
  // "exclude" (drop its votes and decide again without it). Default "report".
  std::string outlier_policy = "report";
  // A site is an outlier when its robust z-score, (agreement - median) / (1.4826 * MAD) over
  // the round's sites, is below -outlier_z_threshold AND its agreement is more than
  // outlier_min_gap below the median. Default 3.5. Bounds 1..100.
  double outlier_z_threshold = 3.5;
  // The least agreement gap (fraction of a site's pruned weights) below the median that
  // can make a site an outlier, whatever the spread. Default 0.05. Bounds 0..1.
  double outlier_min_gap = 0.05;
  // Sites a round needs before any site can be called an outlier. Default 3. Bounds 3..1000.
  int outlier_min_sites = 3;
  // Seconds from a round's opening to its deadline. Default 3600. Bounds 10..604800.
  int round_deadline_seconds = 3600;
  // Deadline extensions (each round_deadline_seconds) when fewer than min_clients have
  // committed; then the job fails. Default 2. Bounds 0..100.
  int max_round_extensions = 2;
  // Longest a WaitForRound long poll is held, seconds. Default 30. Bounds 1..300.
  int poll_window_seconds = 30;
  // A joined site that sends nothing (no RPC, heartbeat or held long poll) for this long is
  // declared lost: its session ends, it no longer holds up a round, and the log names it.
  // Default 120. Bounds 2..86400.
  int site_timeout_seconds = 120;
  // When a restart finds the open round's deadline passed (or closer than this), the
  // deadline is moved to now + resume_grace_seconds so sites can reconnect. Default 120.
  // Bounds 1..86400.
  int resume_grace_seconds = 120;
  // Largest chunk accepted and sent, bytes. Default 1048576. Bounds 4096..2097152.
  int64_t max_chunk_bytes = int64_t{1} << 20;
  // An upload stream that carries no message for this long is closed with
  // DEADLINE_EXCEEDED (logged; nothing of it is counted). Seconds. Default 60. Bounds
  // 1..3600.
  int upload_idle_timeout_seconds = 60;
  // Memory gRPC's transport may hold for all connections together (read buffers, received
  // and not yet handled messages), bytes; past it gRPC closes idle connections, then
  // cancels streams. Default 0 = 64 MiB + 4 * max_chunk_bytes per allowed client. Bounds 0
  // or 16 MiB..64 GiB.
  int64_t transport_memory_bytes = 0;

  // Checks every field against its bounds and the cross-field rules; the error names the
  // key. Fills the "0 = default" fields (expected_clients, min_clients, model_name).
  absl::Status Validate();
  // True if the config defines its own job (model, output_dir, state_dir).
  bool has_own_job() const { return !model.empty() || !output_dir.empty() || !state_dir.empty(); }
  // The job keys' part of Validate() (job_name through max_round_extensions).
  absl::Status ValidateJob();

  // Parsed forms (valid after Validate()).
  absl::StatusOr<AggregationOptions> Aggregation() const;
  absl::StatusOr<Strategy> ParsedStrategy() const { return ParseStrategy(strategy); }
  absl::StatusOr<OutlierOptions> Outliers() const;
};

// Reads and validates a YAML file. Unknown keys are refused (a typo must not silently fall
// back to a default). yaml-cpp exceptions are turned into INVALID_ARGUMENT here, naming the
// file, the key and the line.
absl::StatusOr<ServerConfig> LoadServerConfig(const std::string& path);
// Same from YAML text; `source` labels messages.
absl::StatusOr<ServerConfig> ParseServerConfig(const std::string& yaml_text, const std::string& source);

// Every key the server config accepts (deploy/server.example.yaml lists each).
std::vector<std::string> ServerConfigKeys();

// True for 1..64 bytes of [A-Za-z0-9._-] not starting with '.', '_' or '-'.
bool ValidIdentity(const std::string& name);

// The keys of one pruning job (model, model_name, tokenizer, output_dir, the client counts,
// the pruning settings and the job's timeouts), shared by the server config's own job and
// a job file (server/job_config.h), each storing into `c`.
std::map<std::string, YamlSetter> PruningJobSetters(ServerConfig* c);

// A model path's file or directory name without extension: the default model_name.
std::string DefaultModelName(const std::string& model_path);

}  // namespace fedprllm
