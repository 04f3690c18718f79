// Federated pruning core shared by fedprllm-server, fedprllm-client and fedprllm-sim: the
// server-side GlobalPruner (votes -> chosen masks -> pruned global model) and the
// in-process federation that runs the same steps without a network. Networked and
// in-process runs call exactly these functions, so their results agree bit for bit.
#pragma once

#include <functional>
#include <optional>
#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "engine/site_agreement.h"
#include "engine/site_session.h"
#include "engine/vote_aggregation.h"
#include "model/llama_model.h"

namespace fedprllm {

// kExact: one round per decoder layer in which sites send Wanda's column statistics, not
// masks, and the server decides like centralized Wanda (engine/exact_statistics.h).
enum class Strategy { kOneShot, kIterative, kExact };
absl::StatusOr<Strategy> ParseStrategy(absl::string_view text);  // "one-shot", "iterative", "exact"
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

// The aggregation settings as a written checkpoint records them: group, pattern, tie_break,
// seed and weight_scaling.
std::map<std::string, std::string> AggregationSettings(const AggregationOptions& options);

// Zeroes the pruned weights and, when `scale` is defined, multiplies the kept ones by it
// (in float32, cast back once). The server and every client use this one function.
absl::StatusOr<at::Tensor> ApplyTensorDecision(const at::Tensor& weight, const TensorDecision& decision);

// One client's mask for a tensor of the open round, produced when the round closes (the
// server reads it from the client's committed upload file).
using MaskSource = std::function<absl::StatusOr<PackedMask>(const std::string& tensor_name)>;
// Receives each decision of a closing round as it is made.
using DecisionSink = std::function<absl::Status(TensorDecision decision)>;
// The decision of a tensor, or nullopt for a tensor no round decided (kept dense).
using DecisionLookup = std::function<absl::StatusOr<std::optional<TensorDecision>>(const std::string& tensor_name)>;

// The server's side: the global model and the votes of the open round. Votes are counted
// when the round closes, one tensor at a time, so a round holds one tensor's counters at
// most, whatever the model's size.
// One site's standing in a closed round (docs/robustness.md §2).
struct SiteStanding {
  std::string site;
  // Its masks against the round's final decision, over every tensor of the round.
  AgreementCounts against_final;
  // The agreement the outlier rule judged: with the decision of ALL the round's sites (with
  // kReport that is the final decision, so equal to against_final.agreement()).
  double judged_agreement = 1;
  // Its robust z-score and verdict under the outlier rule.
  double z = 0;
  bool outlier = false;
  // True when its votes were not counted (kExclude and an outlier).
  bool excluded = false;
};

class GlobalPruner {
 public:
  // `outliers` says what happens to a site whose agreement is far below the others'
  // (default: reported only).
  GlobalPruner(LlamaModel model, AggregationOptions options, OutlierOptions outliers = {});

  // Starts a round that aggregates `layers` (one-shot: all decoder layers; iterative: one),
  // from at most `max_clients` clients: up to 255 the counters take 1 byte per weight, else 2.
  absl::Status OpenRound(int64_t round, std::vector<int64_t> layers, int max_clients = VoteCounter::kMaxClients);
  // Names and shapes of the masks each client must send in the open round.
  std::vector<std::pair<std::string, std::vector<int64_t>>> ExpectedTensors() const;
  // Adds one client's masks for every tensor of the round (kept until the round closes).
  // All-or-nothing: any missing, unexpected or mis-shaped mask, a client already counted,
  // or a round already at its max_clients leaves the round unchanged.
  absl::Status AddClient(const std::string& client_id, std::map<std::string, PackedMask> masks);
  // The same for a client whose masks `source` yields when the round closes; `provided`
  // names the tensors and shapes it yields, checked as AddClient checks the masks. A mask
  // from `source` that does not have its tensor's shape fails CloseRound.
  absl::Status AddClientSource(const std::string& client_id,
                               const std::vector<std::pair<std::string, std::vector<int64_t>>>& provided,
                               MaskSource source);
  int num_clients_in_round() const;
  // Chooses every tensor's mask from the votes, keeps it for the global model, and returns
  // the decisions. Requires at least one client.
  absl::StatusOr<RoundDecision> CloseRound();
  // The same, but each decision goes to `sink` as soon as it is made and none is kept:
  // memory holds one tensor's counters and decision at a time. The caller keeps the
  // decisions and gives them back to SavePrunedHf through a DecisionLookup.
  absl::Status CloseRoundInto(const DecisionSink& sink);

  // Closes the open round with a decision made elsewhere (the exact strategy's, chosen from
  // pooled statistics): `masks` must hold exactly the round's tensors with their shapes, and
  // the round must count no client's votes. Each decision goes to `sink` as in
  // CloseRoundInto; the report lists `contributors` as the round's clients.
  absl::Status CloseRoundWithMasks(const LayerMasks& masks, const std::vector<std::string>& contributors,
                                   const DecisionSink& sink);

  // The dense model the rounds decide on.
  const LlamaModel& base_model() const { return model_; }
  // The base model with every decision so far applied (a copy of the decided tensors).
  absl::StatusOr<LlamaModel> PrunedModel() const;
  // Writes PrunedModel() in Hugging Face layout (LlamaModel::SaveHf), applying each decision
  // while its tensor is written: memory holds one pruned tensor at a time. The shards'
  // metadata and pruning_report.json carry AggregationSettings(options) plus `settings`,
  // and the digest of every decided mask.
  absl::Status SavePrunedHf(const std::string& dir, const std::string& tokenizer_path,
                            const std::map<std::string, std::string>& settings = {}) const;
  // The same with the decisions from `lookup` (for rounds closed by CloseRoundInto).
  absl::Status SavePrunedHf(const std::string& dir, const std::string& tokenizer_path, const DecisionLookup& lookup,
                            const std::map<std::string, std::string>& settings = {}) const;
  // Per-matrix sparsity, vote histograms and contributing clients per round; per round,
  // every client's agreement with the decision, its distance and the outlier verdict
  // ("sites", "outliers").
  const nlohmann::json& report() const { return report_; }
  // The standing of every client of the round closed last, in AddClient order, and the rule's
  // median, MAD and cut-off for it.
  const std::vector<SiteStanding>& last_standings() const { return last_standings_; }
  const OutlierVerdict& last_verdict() const { return last_verdict_; }
  const OutlierOptions& outlier_options() const { return outliers_; }

 private:
  // Counts the votes of the clients with counted[c] for every tensor of the round, decides,
  // and adds every client's (counted or not) agreement with each decision to agreement[c].
  // The decisions go to `sink` (and the tensor report is written) when `sink` is not null.
  absl::Status DecideRound(const std::vector<bool>& counted, const DecisionSink* sink,
                           std::vector<AgreementCounts>* agreement);

  LlamaModel model_;
  AggregationOptions options_;
  OutlierOptions outliers_;
  std::vector<SiteStanding> last_standings_;
  OutlierVerdict last_verdict_;
  int64_t round_ = -1;
  std::vector<int64_t> layers_;
  int max_clients_ = VoteCounter::kMaxClients;
  std::map<std::string, std::vector<int64_t>> shapes_;  // the round's tensors
  std::vector<std::string> clients_;
  std::vector<MaskSource> sources_;  // one per client, in clients_ order
  std::map<std::string, TensorDecision> decided_;  // every round's decisions so far
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

// The exact strategy in one process: per decoder layer, every client's float64 column
// statistics are pooled and the layer's masks chosen from them (options.aggregation's
// group and pattern), then every client propagates through the decided layer. Returns
// the decided masks per layer.
absl::StatusOr<std::vector<LayerMasks>> RunExactRounds(const LlamaModel& base,
                                                       const std::vector<at::Tensor>& client_samples,
                                                       const FederationOptions& options,
                                                       const std::function<void(const std::string&)>& progress = nullptr);

// One-shot aggregation from masks computed beforehand (client -> per-layer masks): lets the
// simulator reuse clients' masks across comparison groups, scaling and tie-break settings.
absl::StatusOr<LlamaModel> AggregateOneShot(const LlamaModel& base,
                                            const std::vector<std::vector<LayerMasks>>& client_masks,
                                            const AggregationOptions& options, nlohmann::json* report = nullptr);

}  // namespace fedprllm
