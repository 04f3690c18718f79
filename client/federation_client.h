// The fedprllm-client program after flag parsing: loads the model and this site's private
// calibration text, joins the server with the model's fingerprint, and for each round
// computes its masks layer by layer (SiteSession), streams each layer's masks in CRC-checked
// chunks as soon as they are computed (client/upload_stream.h), and,
// with the iterative strategy, fetches and applies the server's decision before calibrating
// the next layer. Transient failures are retried with exponential backoff.
//
//   ASSIGN_OR_RETURN(ClientConfig config, LoadClientConfig("client.yaml"));
//   RETURN_IF_ERROR(RunClient(config));   // OK once the server reports JOB_DONE
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "client/client_config.h"
#include "engine/federation.h"
#include "proto/fedprllm.pb.h"

namespace fedprllm {

absl::Status RunClient(const ClientConfig& config);

// Reassembles a FetchDecisions stream for decoder layers `layers` of `job`: every message
// validated (round, header, chunks) with the codec's assemblers; requires exactly one mask
// per tensor of those layers, each followed by its WEIGHT_SCALE when job.weight_scaling().
absl::StatusOr<RoundDecision> DecodeDecisionStream(const std::vector<v1::DecisionChunk>& stream, int round,
                                                   const v1::JobSpec& job, const std::vector<int32_t>& layers);

// Whether a failed RPC is worth retrying (docs/round_protocol.md §5).
bool IsTransient(const absl::Status& status);

}  // namespace fedprllm
