// GlobalPruner (server-side vote aggregation over the global model) and the in-process
// federation used by the simulator and by the networked run's reference test.
#include "engine/federation.h"

#include <algorithm>
#include <cmath>
#include <memory>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "model/torch_wall.h"

namespace fedprllm {

absl::StatusOr<Strategy> ParseStrategy(absl::string_view text) {
  if (text == "one-shot") return Strategy::kOneShot;
  if (text == "iterative") return Strategy::kIterative;
  if (text == "exact") return Strategy::kExact;
  return absl::InvalidArgumentError(absl::StrCat("strategy \"", text, "\": expected one-shot, iterative or exact"));
}

std::string StrategyName(Strategy strategy) {
  switch (strategy) {
    case Strategy::kOneShot: return "one-shot";
    case Strategy::kIterative: return "iterative";
    case Strategy::kExact: return "exact";
  }
  return "?";
}

absl::StatusOr<at::Tensor> ApplyTensorDecision(const at::Tensor& weight, const TensorDecision& decision) {
  if (weight.sizes().vec() != decision.mask.shape()) {
    return absl::InvalidArgumentError(absl::StrCat("decision for ", decision.name, " has shape ",
                                                   ShapeToString(decision.mask.shape()), ", weight has ",
                                                   ShapeToString(weight.sizes().vec())));
  }
  return TorchCall(absl::StrCat("applying the decision for ", decision.name), [&] {
    const at::Tensor pruned = FromPackedMask(decision.mask).reshape(weight.sizes()).to(weight.device());
    if (!decision.scale.defined()) return weight.masked_fill(pruned, 0);
    TORCH_CHECK(decision.scale.sizes() == weight.sizes(), "scale shape does not match the weight");
    return weight.to(at::kFloat)
        .mul(decision.scale.to(weight.device(), at::kFloat))
        .masked_fill_(pruned, 0)
        .to(weight.scalar_type());
  });
}

GlobalPruner::GlobalPruner(LlamaModel model, AggregationOptions options, OutlierOptions outliers)
    : model_(std::move(model)), options_(std::move(options)), outliers_(outliers) {
  report_["rounds"] = nlohmann::json::array();
  report_["tensors"] = nlohmann::json::object();
}

absl::Status GlobalPruner::OpenRound(int64_t round, std::vector<int64_t> layers, int max_clients) {
  if (round <= round_) return absl::FailedPreconditionError(absl::StrCat("round ", round, " is not after round ", round_));
  shapes_.clear();
  clients_.clear();
  sources_.clear();
  for (int64_t layer : layers) {
    if (layer < 0 || layer >= model_.config().num_hidden_layers) {
      return absl::OutOfRangeError(absl::StrCat("round ", round, ": no decoder layer ", layer));
    }
    for (const char* linear : kLinearNames) {
      const std::string name = LayerTensorName(layer, linear);
      shapes_.emplace(name, model_.tensors().at(name).sizes().vec());
    }
  }
  round_ = round;
  layers_ = std::move(layers);
  max_clients_ = std::clamp(max_clients, 1, VoteCounter::kMaxClients);
  return absl::OkStatus();
}

std::vector<std::pair<std::string, std::vector<int64_t>>> GlobalPruner::ExpectedTensors() const {
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  for (int64_t layer : layers_) {
    for (const char* linear : kLinearNames) {
      const std::string name = LayerTensorName(layer, linear);
      out.emplace_back(name, shapes_.at(name));
    }
  }
  return out;
}

int GlobalPruner::num_clients_in_round() const { return static_cast<int>(clients_.size()); }

absl::Status GlobalPruner::AddClient(const std::string& client_id, std::map<std::string, PackedMask> masks) {
  std::vector<std::pair<std::string, std::vector<int64_t>>> provided;
  for (const auto& [name, mask] : masks) provided.emplace_back(name, mask.shape());
  auto held = std::make_shared<const std::map<std::string, PackedMask>>(std::move(masks));
  return AddClientSource(client_id, provided, [held](const std::string& name) -> absl::StatusOr<PackedMask> {
    auto it = held->find(name);
    if (it == held->end()) return absl::NotFoundError(absl::StrCat("no mask for ", name));
    return it->second;
  });
}

absl::Status GlobalPruner::AddClientSource(const std::string& client_id,
                                           const std::vector<std::pair<std::string, std::vector<int64_t>>>& provided,
                                           MaskSource source) {
  if (std::find(clients_.begin(), clients_.end(), client_id) != clients_.end()) {
    return absl::AlreadyExistsError(absl::StrCat("client ", client_id, " is already counted in round ", round_));
  }
  std::map<std::string, const std::vector<int64_t>*> given;
  for (const auto& [name, shape] : provided) {
    if (shapes_.find(name) == shapes_.end()) {
      return absl::InvalidArgumentError(absl::StrCat("client ", client_id, " sent a mask for ", name,
                                                     ", which round ", round_, " does not aggregate"));
    }
    given[name] = &shape;
  }
  for (const auto& [name, shape] : shapes_) {
    auto it = given.find(name);
    if (it == given.end()) {
      return absl::InvalidArgumentError(absl::StrCat("client ", client_id, " sent no mask for ", name));
    }
    if (*it->second != shape) {
      return absl::InvalidArgumentError(absl::StrCat("client ", client_id, ": mask for ", name, " has shape ",
                                                     ShapeToString(*it->second), ", expected ", ShapeToString(shape)));
    }
  }
  if (static_cast<int>(clients_.size()) >= max_clients_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("round ", round_, " already counts its maximum of ", max_clients_, " clients"));
  }
  clients_.push_back(client_id);
  sources_.push_back(std::move(source));
  return absl::OkStatus();
}

absl::StatusOr<RoundDecision> GlobalPruner::CloseRound() {
  RoundDecision decisions;
  RETURN_IF_ERROR(CloseRoundInto([&](TensorDecision decision) {
    decided_[decision.name] = decision;
    decisions.push_back(std::move(decision));
    return absl::OkStatus();
  }));
  return decisions;
}

absl::Status GlobalPruner::DecideRound(const std::vector<bool>& counted, const DecisionSink* sink,
                                       std::vector<AgreementCounts>* agreement) {
  agreement->assign(sources_.size(), AgreementCounts{});
  for (const auto& [name, shape] : shapes_) {
    VoteCounter counter(shape, max_clients_);
    for (size_t c = 0; c < sources_.size(); ++c) {
      if (!counted[c]) continue;
      absl::StatusOr<PackedMask> mask = sources_[c](name);
      absl::Status added = mask.ok() ? counter.Add(*mask) : mask.status();
      if (!added.ok()) {
        return absl::DataLossError(absl::StrCat("round ", round_, ": the mask of ", clients_[c], " for ", name,
                                                " cannot be counted: ", added.message()));
      }
    }
    const at::Tensor weight = model_.tensors().at(name);
    TensorDecision decision;
    decision.name = name;
    ASSIGN_OR_RETURN(decision.mask, ChooseMask(counter, weight, options_, name));
    // Each client's mask is read again rather than kept from the count: memory holds one
    // client mask of the tensor at a time (the sources are memory-mapped upload files).
    for (size_t c = 0; c < sources_.size(); ++c) {
      absl::StatusOr<PackedMask> mask = sources_[c](name);
      absl::Status compared = mask.ok() ? AddAgreement(*mask, decision.mask, &(*agreement)[c]) : mask.status();
      if (!compared.ok()) {
        return absl::DataLossError(absl::StrCat("round ", round_, ": the mask of ", clients_[c], " for ", name,
                                                " cannot be compared with the decision: ", compared.message()));
      }
    }
    if (sink == nullptr) continue;
    if (options_.weight_scaling) {
      ASSIGN_OR_RETURN(decision.scale, TorchCall("computing keep fractions", [&] {
        const float clients = static_cast<float>(counter.num_clients());
        return counter.votes().to(at::kFloat).neg().add(clients).div(clients).reshape(weight.sizes());
      }));
    }
    ASSIGN_OR_RETURN(at::Tensor histogram, TorchCall("vote histogram", [&] { return VoteHistogram(counter); }));
    const at::Tensor h = histogram.to(at::kLong).contiguous();
    report_["tensors"][name] = {
        {"shape", counter.shape()},
        {"pruned", decision.mask.CountOnes()},
        {"sparsity", static_cast<double>(decision.mask.CountOnes()) / static_cast<double>(decision.mask.numel())},
        {"vote_histogram", std::vector<int64_t>(h.data_ptr<int64_t>(), h.data_ptr<int64_t>() + h.numel())},
        {"round", round_}};
    RETURN_IF_ERROR((*sink)(std::move(decision)));
  }
  return absl::OkStatus();
}

absl::Status GlobalPruner::CloseRoundInto(const DecisionSink& sink) {
  if (clients_.empty()) return absl::FailedPreconditionError(absl::StrCat("round ", round_, " has no clients"));
  const size_t n = clients_.size();
  std::vector<bool> counted(n, true);
  std::vector<AgreementCounts> all_sites;  // against the decision of all sites
  auto agreements = [](const std::vector<AgreementCounts>& counts) {
    std::vector<double> out;
    for (const AgreementCounts& c : counts) out.push_back(c.agreement());
    return out;
  };
  OutlierVerdict verdict;
  const bool exclude = outliers_.policy == OutlierPolicy::kExclude && static_cast<int>(n) >= outliers_.min_sites;
  if (exclude) {
    // The pre-decision consensus: decide once with every site (nothing is kept), judge the
    // sites against it, then decide for real without the outliers.
    RETURN_IF_ERROR(DecideRound(counted, nullptr, &all_sites));
    verdict = FindOutliers(agreements(all_sites), outliers_);
    for (size_t c = 0; c < n; ++c) counted[c] = !verdict.outlier[c];
  }
  std::vector<AgreementCounts> final_counts;
  RETURN_IF_ERROR(DecideRound(counted, &sink, &final_counts));
  if (!exclude) verdict = FindOutliers(agreements(final_counts), outliers_);

  last_standings_.clear();
  nlohmann::json sites = nlohmann::json::object();
  std::vector<std::string> counted_clients, excluded_clients;
  auto finite_or_null = [](double x) { return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(); };
  for (size_t c = 0; c < n; ++c) {
    SiteStanding s{clients_[c], final_counts[c],
                   exclude ? all_sites[c].agreement() : final_counts[c].agreement(), verdict.z[c],
                   verdict.outlier[c], !counted[c]};
    (counted[c] ? counted_clients : excluded_clients).push_back(clients_[c]);
    sites[clients_[c]] = {{"agreement", s.against_final.agreement()},
                          {"distance", s.against_final.distance()},
                          {"pruned", s.against_final.site_pruned},
                          {"also_pruned_by_decision", s.against_final.both_pruned},
                          {"weights", s.against_final.weights},
                          {"robust_z", finite_or_null(s.z)},
                          {"outlier", s.outlier},
                          {"excluded", s.excluded}};
    if (exclude) sites[clients_[c]]["agreement_with_all_sites"] = all_sites[c].agreement();
    last_standings_.push_back(std::move(s));
  }
  last_verdict_ = verdict;
  report_["rounds"].push_back({{"round", round_},
                               {"layers", layers_},
                               {"clients", clients_},
                               {"counted_clients", counted_clients},
                               {"excluded_clients", excluded_clients},
                               {"sites", sites},
                               {"outliers",
                                {{"policy", std::string(OutlierPolicyName(outliers_.policy))},
                                 {"applied", verdict.applied},
                                 {"median_agreement", verdict.median},
                                 {"mad", verdict.mad},
                                 {"cutoff", verdict.cutoff},
                                 {"z_threshold", outliers_.z_threshold},
                                 {"min_gap", outliers_.min_gap},
                                 {"min_sites", outliers_.min_sites}}}});
  sources_.clear();  // the masks held for in-memory clients
  return absl::OkStatus();
}

absl::Status GlobalPruner::CloseRoundWithMasks(const LayerMasks& masks, const std::vector<std::string>& contributors,
                                               const DecisionSink& sink) {
  if (!clients_.empty()) {
    return absl::FailedPreconditionError(absl::StrCat("round ", round_, " counts votes; its decision comes from them"));
  }
  if (masks.size() != shapes_.size()) {
    return absl::InvalidArgumentError(absl::StrCat("round ", round_, " decides ", shapes_.size(), " tensors, not ",
                                                   masks.size()));
  }
  for (const auto& [name, mask] : masks) {
    auto it = shapes_.find(name);
    if (it == shapes_.end()) return absl::InvalidArgumentError(absl::StrCat("round ", round_, " does not decide ", name));
    if (mask.shape() != it->second) {
      return absl::InvalidArgumentError(absl::StrCat("decision for ", name, " has shape ", ShapeToString(mask.shape()),
                                                     ", expected ", ShapeToString(it->second)));
    }
  }
  for (const auto& [name, mask] : masks) {
    report_["tensors"][name] = {
        {"shape", mask.shape()},
        {"pruned", mask.CountOnes()},
        {"sparsity", static_cast<double>(mask.CountOnes()) / static_cast<double>(mask.numel())},
        {"round", round_}};
    RETURN_IF_ERROR(sink(TensorDecision{name, mask, at::Tensor()}));
  }
  last_standings_.clear();
  last_verdict_ = OutlierVerdict{};
  report_["rounds"].push_back({{"round", round_},
                               {"layers", layers_},
                               {"clients", contributors},
                               {"counted_clients", contributors},
                               {"excluded_clients", nlohmann::json::array()}});
  return absl::OkStatus();
}

absl::StatusOr<LlamaModel> GlobalPruner::PrunedModel() const {
  LlamaModel pruned = model_;
  for (const auto& [name, decision] : decided_) {
    ASSIGN_OR_RETURN(at::Tensor weight, ApplyTensorDecision(model_.tensors().at(name), decision));
    RETURN_IF_ERROR(pruned.SetTensor(name, weight));
  }
  return pruned;
}

absl::Status GlobalPruner::SavePrunedHf(const std::string& dir, const std::string& tokenizer_path,
                                        const std::map<std::string, std::string>& settings) const {
  return SavePrunedHf(
      dir, tokenizer_path,
      [this](const std::string& name) -> absl::StatusOr<std::optional<TensorDecision>> {
        auto it = decided_.find(name);
        if (it == decided_.end()) return std::nullopt;
        return it->second;
      },
      settings);
}

absl::Status GlobalPruner::SavePrunedHf(const std::string& dir, const std::string& tokenizer_path,
                                        const DecisionLookup& lookup,
                                        const std::map<std::string, std::string>& settings) const {
  HfSaveOptions save;
  save.tokenizer_path = tokenizer_path;
  save.settings = AggregationSettings(options_);
  save.settings["outlier_policy"] = std::string(OutlierPolicyName(outliers_.policy));
  for (const auto& [key, value] : settings) save.settings[key] = value;
  save.report = report_;
  save.transform = [&](const std::string& name, const at::Tensor& stored) -> absl::StatusOr<SavedTensor> {
    ASSIGN_OR_RETURN(std::optional<TensorDecision> decision, lookup(name));
    if (!decision.has_value()) return SavedTensor{stored, ""};
    ASSIGN_OR_RETURN(at::Tensor value, ApplyTensorDecision(stored, *decision));
    return SavedTensor{std::move(value), MaskSha256(decision->mask)};
  };
  return model_.SaveHf(dir, save);
}

std::map<std::string, std::string> AggregationSettings(const AggregationOptions& options) {
  return {{"group", std::string(ComparisonGroupName(options.group))},
          {"pattern", options.pattern.ToString()},
          {"tie_break", std::string(TieBreakName(options.tie_break))},
          {"seed", absl::StrCat(options.seed)},
          {"weight_scaling", options.weight_scaling ? "true" : "false"}};
}

namespace {

std::map<std::string, PackedMask> ToMap(const LayerMasks& masks) {
  return std::map<std::string, PackedMask>(masks.begin(), masks.end());
}

std::vector<int64_t> AllLayers(const LlamaModel& model) {
  std::vector<int64_t> layers(model.config().num_hidden_layers);
  for (size_t i = 0; i < layers.size(); ++i) layers[i] = static_cast<int64_t>(i);
  return layers;
}

}  // namespace

absl::StatusOr<LlamaModel> AggregateOneShot(const LlamaModel& base,
                                            const std::vector<std::vector<LayerMasks>>& client_masks,
                                            const AggregationOptions& options, nlohmann::json* report) {
  GlobalPruner pruner(base, options);
  RETURN_IF_ERROR(pruner.OpenRound(0, AllLayers(base), static_cast<int>(client_masks.size())));
  for (size_t c = 0; c < client_masks.size(); ++c) {
    std::map<std::string, PackedMask> all;
    for (const LayerMasks& layer : client_masks[c]) all.insert(layer.begin(), layer.end());
    RETURN_IF_ERROR(pruner.AddClient(absl::StrCat("client-", c), all));
  }
  RETURN_IF_ERROR(pruner.CloseRound().status());
  if (report != nullptr) *report = pruner.report();
  return pruner.PrunedModel();
}

absl::StatusOr<std::vector<LayerMasks>> RunExactRounds(const LlamaModel& base,
                                                       const std::vector<at::Tensor>& client_samples,
                                                       const FederationOptions& options,
                                                       const std::function<void(const std::string&)>& progress) {
  if (client_samples.empty()) return absl::InvalidArgumentError("a federation needs at least one client");
  if (options.local.metric != PruneMetric::kWanda) {
    return absl::InvalidArgumentError("the exact strategy pools Wanda's statistics; it has no magnitude variant");
  }
  std::vector<SiteSession> sites;
  for (const at::Tensor& samples : client_samples) {
    ASSIGN_OR_RETURN(SiteSession site, SiteSession::Start(base, samples, options.local));
    sites.push_back(std::move(site));
  }
  std::vector<LayerMasks> decided;
  for (int64_t layer = 0; layer < base.config().num_hidden_layers; ++layer) {
    std::vector<LayerStatistics> statistics;
    for (SiteSession& site : sites) {
      ASSIGN_OR_RETURN(LayerStatistics mine, site.ComputeStatistics());
      statistics.push_back(std::move(mine));
    }
    ASSIGN_OR_RETURN(const LayerStatistics pooled, PoolStatistics(statistics));
    ASSIGN_OR_RETURN(LayerMasks masks, MasksFromStatistics(base, pooled, options.aggregation.group,
                                                           options.aggregation.pattern, options.local.compute));
    for (SiteSession& site : sites) {
      ASSIGN_OR_RETURN(const LayerLinears linears, site.ApplyMasks(masks));
      RETURN_IF_ERROR(site.Advance(linears));
    }
    decided.push_back(std::move(masks));
    if (progress) progress(absl::StrCat("layer ", layer, " decided from ", pooled.tokens, " pooled tokens"));
  }
  return decided;
}

absl::StatusOr<LlamaModel> RunInProcessFederation(const LlamaModel& base, const std::vector<at::Tensor>& client_samples,
                                                  const FederationOptions& options,
                                                  const std::function<void(const std::string&)>& progress,
                                                  nlohmann::json* report) {
  if (client_samples.empty()) return absl::InvalidArgumentError("a federation needs at least one client");
  auto say = [&](const std::string& line) { if (progress) progress(line); };
  if (options.strategy == Strategy::kExact) {
    ASSIGN_OR_RETURN(std::vector<LayerMasks> decided, RunExactRounds(base, client_samples, options, progress));
    // One "client" whose 0/1 votes hold exactly the decided count per group: aggregating
    // them in the same group returns them unchanged.
    AggregationOptions apply;
    apply.group = options.aggregation.group;
    apply.pattern = options.aggregation.pattern;
    return AggregateOneShot(base, {decided}, apply, report);
  }
  if (options.strategy == Strategy::kOneShot) {
    std::vector<std::vector<LayerMasks>> client_masks;
    for (size_t c = 0; c < client_samples.size(); ++c) {
      ASSIGN_OR_RETURN(LocalPruneResult local, PruneLocally(base, client_samples[c], options.local));
      client_masks.push_back(std::move(local.masks));
      say(absl::StrCat("client ", c, " computed its masks"));
    }
    return AggregateOneShot(base, client_masks, options.aggregation, report);
  }
  GlobalPruner pruner(base, options.aggregation);
  std::vector<SiteSession> sites;
  for (const at::Tensor& samples : client_samples) {
    ASSIGN_OR_RETURN(SiteSession site, SiteSession::Start(base, samples, options.local));
    sites.push_back(std::move(site));
  }
  for (int64_t layer = 0; layer < base.config().num_hidden_layers; ++layer) {
    RETURN_IF_ERROR(pruner.OpenRound(layer, {layer}, static_cast<int>(sites.size())));
    for (size_t c = 0; c < sites.size(); ++c) {
      ASSIGN_OR_RETURN(LayerMasks masks, sites[c].ComputeMasks());
      RETURN_IF_ERROR(pruner.AddClient(absl::StrCat("client-", c), ToMap(masks)));
    }
    ASSIGN_OR_RETURN(RoundDecision decision, pruner.CloseRound());
    std::map<std::string, const TensorDecision*> by_name;
    for (const TensorDecision& d : decision) by_name[d.name] = &d;
    for (SiteSession& site : sites) {
      LayerLinears linears;
      for (int k = 0; k < kNumLinears; ++k) {
        const std::string name = LayerTensorName(layer, kLinearNames[k]);
        ASSIGN_OR_RETURN(linears[k], ApplyTensorDecision(base.tensors().at(name), *by_name.at(name)));
      }
      RETURN_IF_ERROR(site.Advance(linears));
    }
    say(absl::StrCat("layer ", layer, " aggregated"));
  }
  if (report != nullptr) *report = pruner.report();
  return pruner.PrunedModel();
}

}  // namespace fedprllm
