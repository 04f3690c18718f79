// SiteSession: sequential layer-by-layer Wanda/magnitude calibration for one site.
#include "engine/site_session.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "model/perplexity.h"
#include "model/torch_wall.h"

namespace fedprllm {
namespace {

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

void Synchronize(const at::Device& device) {
  // Timings on CUDA need the queued kernels to finish; a cheap device-to-host copy does it.
  if (device.is_cuda()) at::zeros({1}, at::TensorOptions().device(device)).cpu();
}

}  // namespace

absl::StatusOr<PruneMetric> ParsePruneMetric(absl::string_view text) {
  if (text == "wanda") return PruneMetric::kWanda;
  if (text == "magnitude") return PruneMetric::kMagnitude;
  return absl::InvalidArgumentError(absl::StrCat("metric \"", text, "\": expected wanda or magnitude"));
}

std::string PruneMetricName(PruneMetric metric) { return metric == PruneMetric::kWanda ? "wanda" : "magnitude"; }

int64_t SiteSession::num_layers() const { return model_->config().num_hidden_layers; }

absl::StatusOr<SiteSession> SiteSession::Start(const LlamaModel& model, const at::Tensor& samples,
                                               LocalPruneOptions options) {
  if (!samples.defined() || samples.dim() != 2 || samples.size(0) < 1) {
    return absl::InvalidArgumentError("calibration samples must be a non-empty [n, seqlen] tensor");
  }
  RETURN_IF_ERROR(CheckSeqlenFitsModel("calibration window length (seqlen)", samples.size(1), model.config()));
  if (options.batch_size < 1) return absl::InvalidArgumentError("batch_size must be >= 1");
  SiteSession session(model, std::move(options));
  const int64_t n = samples.size(0);
  for (int64_t start = 0; start < n; start += session.options_.batch_size) {
    const int64_t count = std::min(session.options_.batch_size, n - start);
    ASSIGN_OR_RETURN(at::Tensor hidden, model.Embed(samples.narrow(0, start, count), session.options_.compute));
    if (session.options_.activations_on_host) hidden = hidden.cpu();
    session.inputs_.push_back(std::move(hidden));
  }
  return session;
}

absl::Status SiteSession::RunDense(const DecoderLayerWeights& weights, bool float64, DenseStatistics* out) {
  const int64_t layer = next_layer_;
  // Running sums of squared input columns; q/k/v share one input, as do gate/up.
  double statistics_seconds = 0;
  const bool need_statistics = options_.metric == PruneMetric::kWanda;
  const at::ScalarType sum_type = float64 ? at::kDouble : at::kFloat;
  LinearInputObserver observer = [&](int index, const at::Tensor& input) {
    if (!need_statistics || index == 1 || index == 2 || index == 5) return;
    const auto start = std::chrono::steady_clock::now();
    const at::Tensor squares = input.to(sum_type).pow(2).sum(at::IntArrayRef{0, 1});
    out->sums[index] = out->sums[index].defined() ? out->sums[index] + squares : squares;
    Synchronize(input.device());
    statistics_seconds += Seconds(start);
  };
  const auto forward_start = std::chrono::steady_clock::now();
  // Magnitude scores need no activations: the dense forward is skipped.
  for (size_t b = 0; need_statistics && b < inputs_.size(); ++b) {
    const at::Tensor input = inputs_[b].to(options_.compute.device);
    ASSIGN_OR_RETURN(at::Tensor unused, model_->DecoderLayerForward(weights, input, &observer));
    out->samples += input.size(0);
    out->tokens += input.size(0) * input.size(1);
    if (options_.batch_progress) {
      options_.batch_progress({layer, false, static_cast<int64_t>(b) + 1, static_cast<int64_t>(inputs_.size())});
    }
  }
  Synchronize(options_.compute.device);
  out->timing.statistics_seconds = statistics_seconds;
  out->timing.forward_seconds = Seconds(forward_start) - statistics_seconds;
  return absl::OkStatus();
}

absl::StatusOr<LayerStatistics> SiteSession::ComputeStatistics() {
  if (options_.metric != PruneMetric::kWanda) {
    return absl::FailedPreconditionError("column statistics are Wanda's; this site prunes by magnitude");
  }
  ASSIGN_OR_RETURN(DecoderLayerWeights weights, model_->Layer(next_layer_, options_.compute));
  DenseStatistics dense;
  RETURN_IF_ERROR(RunDense(weights, /*float64=*/true, &dense));
  LayerStatistics out;
  out.layer = next_layer_;
  out.tokens = dense.tokens;
  for (int k = 0; k < kNumLinears; ++k) {
    if (k == 1 || k == 2 || k == 5) continue;
    out.column_sums[kStatisticInputOf[k]] = dense.sums[k].cpu();
  }
  timings_.push_back(dense.timing);
  return out;
}

absl::StatusOr<LayerMasks> SiteSession::ComputeMasks() {
  const int64_t layer = next_layer_;
  if (options_.float64_statistics && options_.metric == PruneMetric::kWanda) {
    ASSIGN_OR_RETURN(LayerStatistics statistics, ComputeStatistics());
    const auto selection_start = std::chrono::steady_clock::now();
    ASSIGN_OR_RETURN(LayerMasks masks, MasksFromStatistics(*model_, statistics, options_.group, options_.pattern,
                                                           options_.compute));
    for (int k = 0; k < kNumLinears; ++k) {
      column_norms_[k] = (statistics.column_sums[kStatisticInputOf[k]] / static_cast<double>(statistics.tokens))
                             .to(at::kFloat);
    }
    timings_.back().selection_seconds = Seconds(selection_start);
    return masks;
  }
  ASSIGN_OR_RETURN(DecoderLayerWeights weights, model_->Layer(layer, options_.compute));
  DenseStatistics dense;
  RETURN_IF_ERROR(RunDense(weights, /*float64=*/false, &dense));
  LayerTiming timing = dense.timing;
  const std::array<at::Tensor, kNumLinears>& sums = dense.sums;
  const int64_t samples = dense.samples;
  const bool need_statistics = options_.metric == PruneMetric::kWanda;

  const auto selection_start = std::chrono::steady_clock::now();
  LayerMasks masks;
  RETURN_IF_ERROR(TorchCall(absl::StrCat("choosing masks of decoder layer ", layer), [&] {
    for (int k = 0; k < kNumLinears; ++k) {
      const int source = (k == 1 || k == 2) ? 0 : (k == 5 ? 4 : k);
      const at::Tensor weight = weights.linears[k].to(at::kFloat);
      if (need_statistics) column_norms_[k] = sums[source] / static_cast<double>(samples);
      const at::Tensor norm = need_statistics ? column_norms_[k] : at::Tensor();
      const std::string name = LayerTensorName(layer, kLinearNames[k]);
      if (options_.group == ComparisonGroup::kRow && !options_.pattern.structured()) {
        masks.emplace_back(name, RowMask(weight, norm, options_.pattern.sparsity));  // Wanda's default, fused
        continue;
      }
      const at::Tensor score = need_statistics ? WandaScore(weight, norm) : MagnitudeScore(weight);
      masks.emplace_back(name, ToPackedMask(SelectLowest(score, options_.group, options_.pattern).cpu()));
    }
  }));
  timing.selection_seconds = Seconds(selection_start);
  timings_.push_back(timing);
  return masks;
}

absl::StatusOr<LayerLinears> SiteSession::ApplyMasks(const LayerMasks& masks) const {
  if (masks.size() != kNumLinears) return absl::InvalidArgumentError("ApplyMasks needs 7 masks");
  LayerLinears out;
  for (int k = 0; k < kNumLinears; ++k) {
    ASSIGN_OR_RETURN(at::Tensor weight, model_->tensor(masks[k].first));
    if (masks[k].first != LayerTensorName(next_layer_, kLinearNames[k])) {
      return absl::InvalidArgumentError(absl::StrCat("mask ", masks[k].first, " is not for decoder layer ", next_layer_));
    }
    ASSIGN_OR_RETURN(out[k], TorchCall(absl::StrCat("applying mask to ", masks[k].first), [&] {
      return weight.masked_fill(FromPackedMask(masks[k].second).reshape(weight.sizes()), 0);
    }));
  }
  return out;
}

absl::Status SiteSession::Advance(const LayerLinears& linears) {
  const int64_t layer = next_layer_;
  if (layer >= num_layers()) return absl::FailedPreconditionError("all decoder layers are done");
  ASSIGN_OR_RETURN(DecoderLayerWeights weights, model_->Layer(layer, options_.compute));
  const at::ScalarType dtype = model_->ComputeDtype(options_.compute);
  for (int k = 0; k < kNumLinears; ++k) {
    if (!linears[k].defined() || linears[k].sizes() != weights.linears[k].sizes()) {
      return absl::InvalidArgumentError(absl::StrCat("Advance: weight ", kNumLinears, " of layer ", layer, " has the wrong shape"));
    }
    ASSIGN_OR_RETURN(weights.linears[k], TorchCall("moving pruned weights", [&] {
      return linears[k].to(options_.compute.device, dtype);
    }));
  }
  const auto start = std::chrono::steady_clock::now();
  for (size_t b = 0; b < inputs_.size(); ++b) {
    at::Tensor& batch = inputs_[b];
    ASSIGN_OR_RETURN(at::Tensor next, model_->DecoderLayerForward(weights, batch.to(options_.compute.device)));
    batch = options_.activations_on_host ? next.cpu() : next;
    if (options_.batch_progress) {
      options_.batch_progress({layer, true, static_cast<int64_t>(b) + 1, static_cast<int64_t>(inputs_.size())});
    }
  }
  Synchronize(options_.compute.device);
  if (!timings_.empty()) timings_.back().propagate_seconds = Seconds(start);
  ++next_layer_;
  return absl::OkStatus();
}

absl::StatusOr<LocalPruneResult> PruneLocally(const LlamaModel& model, const at::Tensor& samples,
                                              const LocalPruneOptions& options,
                                              const std::function<void(int64_t, int64_t)>& progress) {
  ASSIGN_OR_RETURN(SiteSession site, SiteSession::Start(model, samples, options));
  LocalPruneResult result;
  while (site.next_layer() < site.num_layers()) {
    ASSIGN_OR_RETURN(LayerMasks masks, site.ComputeMasks());
    ASSIGN_OR_RETURN(LayerLinears pruned, site.ApplyMasks(masks));
    RETURN_IF_ERROR(site.Advance(pruned));
    result.masks.push_back(std::move(masks));
    if (progress) progress(site.next_layer(), site.num_layers());
  }
  result.timings = site.timings();
  return result;
}

}  // namespace fedprllm
