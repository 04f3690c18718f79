// Federated pruning core shared by fedprllm-server, fedprllm-client and fedprllm-sim: the
// server-side GlobalPruner (votes -> chosen masks -> pruned global model) and the
// in-process federation that runs the same steps without a network. Networked and
// in-process runs call exactly these functions, so their results agree bit for bit.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "engine/site_session.h"
#include "engine/vote_aggregation.h"
#include "model/llama_model.h"

namespace fedprllm {

enum class Strategy { kOneShot, kIterative };
absl::StatusOr<Strategy> ParseStrategy(absl::string_view text);  // "one-shot", "iterative"
std::string StrategyName(Strategy strategy);

// The server's decision for one tensor.
struct TensorDecision {
  std::string name;
  PackedMask mask;  // 1 = pruned
  // float32 per-weight factor (clients that kept it) / (clients) when weight scaling is on;
  // undefined otherwise.
  at::Tensor scale;
};
using RoundDecision = std::vector<TensorDecision>;

// Zeroes the pruned weights and, when `scale` is defined, multiplies the kept ones by it
// (in float32, cast back once). The server and every client use this one function.
absl::StatusOr<at::Tensor> ApplyTensorDecision(const at::Tensor& weight, const TensorDecision& decision);

// The server's side: the global model and the votes of the open round.
class GlobalPruner {
 public:
  GlobalPruner(LlamaModel model, AggregationOptions options);

  // Starts a round that aggregates `layers` (one-shot: all decoder layers; iterative: one),
  // from at most `max_clients` clients: up to 255 the counters take 1 byte per weight, else 2.
  absl::Status OpenRound(int64_t round, std::vector<int64_t> layers, int max_clients = VoteCounter::kMaxClients);
  // Names and shapes of the masks each client must send in the open round.
  std::vector<std::pair<std::string, std::vector<int64_t>>> ExpectedTensors() const;
  // Adds one client's masks for every tensor of the round. All-or-nothing: any missing,
  // unexpected or mis-shaped mask, or a client already counted, leaves the votes unchanged.
  absl::Status AddClient(const std::string& client_id, const std::map<std::string, PackedMask>& masks);
  int num_clients_in_round() const;
  // Chooses every tensor's mask from the votes, applies it to the global model, and
  // returns the decisions. Requires at least one client.
  absl::StatusOr<RoundDecision> CloseRound();

  const LlamaModel& model() const { return model_; }
  // Per-matrix sparsity, vote histograms and contributing clients per round.
  const nlohmann::json& report() const { return report_; }

 private:
  LlamaModel model_;
  AggregationOptions options_;
  int64_t round_ = -1;
  std::vector<int64_t> layers_;
  std::map<std::string, VoteCounter> votes_;
  std::vector<std::string> clients_;
  nlohmann::json report_ = nlohmann::json::object();
};

struct FederationOptions {
  Strategy strategy = Strategy::kOneShot;
  AggregationOptions aggregation;
  LocalPruneOptions local;  // each client's Wanda settings
};

// Runs a whole federation in one process: client c calibrates on client_samples[c].
// `progress(message)` receives one line per finished step.
absl::StatusOr<LlamaModel> RunInProcessFederation(const LlamaModel& base, const std::vector<at::Tensor>& client_samples,
                                                  const FederationOptions& options,
                                                  const std::function<void(const std::string&)>& progress = nullptr,
                                                  nlohmann::json* report = nullptr);

// One-shot aggregation from masks computed beforehand (client -> per-layer masks): lets the
// simulator reuse clients' masks across comparison groups, scaling and tie-break settings.
absl::StatusOr<LlamaModel> AggregateOneShot(const LlamaModel& base,
                                            const std::vector<std::vector<LayerMasks>>& client_masks,
                                            const AggregationOptions& options, nlohmann::json* report = nullptr);

}  // namespace fedprllm
