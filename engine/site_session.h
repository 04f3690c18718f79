// SiteSession: one site's sequential Wanda calibration (Sun et al. 2023), layer by layer.
// For each decoder layer it runs the layer densely on the site's calibration inputs,
// accumulates each linear input column's mean squared L2 norm, scores the weights and
// chooses the site's local masks; then it takes the layer's final weights (the site's own
// pruning, or the server's decision) and runs the layer again to produce the next inputs.
//
//   ASSIGN_OR_RETURN(SiteSession site, SiteSession::Start(model, samples, options));
//   while (site.next_layer() < model.config().num_hidden_layers) {
//     ASSIGN_OR_RETURN(LayerMasks masks, site.ComputeMasks());
//     RETURN_IF_ERROR(site.Advance(site.ApplyMasks(masks)));   // local-only pruning
//   }
//
// Only one decoder layer's weights are on the device at a time.
#pragma once

#include <array>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "common/packed_mask.h"
#include "engine/exact_statistics.h"
#include "engine/mask_selection.h"
#include "model/llama_model.h"

namespace fedprllm {

enum class PruneMetric { kWanda, kMagnitude };
absl::StatusOr<PruneMetric> ParsePruneMetric(absl::string_view text);  // "wanda", "magnitude"
std::string PruneMetricName(PruneMetric metric);

// Where a site is within a decoder layer.
struct BatchProgress {
  int64_t layer = 0;
  bool propagating = false;
  int64_t batches_done = 0;
  int64_t batches_total = 0;
};

struct LocalPruneOptions {
  // Sparsity and pattern (unstructured, 2:4, 4:8). Default: 50% unstructured.
  SparsityPattern pattern;
  // Default: Wanda (|W| * ||X||_2).
  PruneMetric metric = PruneMetric::kWanda;
  // Comparison group for the site's own masks: kRow (Wanda's default) or kLayer.
  ComparisonGroup group = ComparisonGroup::kRow;
  // Device and dtype of the forward passes.
  ComputeOptions compute;
  // Keep calibration activations in host memory between layers (for models whose
  // activations do not fit on the device). Default: on the compute device.
  bool activations_on_host = false;
  // Accumulate the column statistics as float64 sums over tokens and choose masks with
  // MasksFromStatistics (engine/exact_statistics.h): the exact strategy's sites and its
  // centralized comparison. Default: float32 sums over samples, as the Wanda reference.
  bool float64_statistics = false;
  // Samples per forward pass. Default 8.
  int64_t batch_size = 8;
  // Called after each batch of a layer's calibration pass (`propagating` false) and of its
  // propagation through the pruned layer (true), on the computing thread. Default: none.
  std::function<void(const BatchProgress&)> batch_progress;
};

// One decoder layer's linear weights (host, the model's dtype), ordered as kLinearNames.
using LayerLinears = std::array<at::Tensor, kNumLinears>;

struct LayerTiming {
  double forward_seconds = 0;    // dense forward passes (including statistics hooks' matmuls)
  double statistics_seconds = 0; // accumulating column norms
  double selection_seconds = 0;  // scoring and choosing masks
  double propagate_seconds = 0;  // forward of the pruned layer
};

class SiteSession {
 public:
  // Captures the inputs of decoder layer 0 for `samples` (int64 [n, seqlen]). Refuses a
  // seqlen above the model's max_position_embeddings.
  static absl::StatusOr<SiteSession> Start(const LlamaModel& model, const at::Tensor& samples,
                                           LocalPruneOptions options);

  // The decoder layer the next ComputeMasks/Advance applies to.
  int64_t next_layer() const { return next_layer_; }
  int64_t num_layers() const;

  // Runs next_layer() densely with its current weights over all samples and returns the
  // site's masks for its 7 linear layers. Embeddings and the LM head are never pruned.
  absl::StatusOr<LayerMasks> ComputeMasks();

  // Runs next_layer() densely over all samples and returns its float64 column sums and token
  // count (Wanda only), without choosing masks: what an exact-strategy site sends.
  absl::StatusOr<LayerStatistics> ComputeStatistics();

  // The current weights of next_layer() with `masks` applied (pruned weights zeroed).
  absl::StatusOr<LayerLinears> ApplyMasks(const LayerMasks& masks) const;

  // Installs `weights` as next_layer()'s final linear weights, runs the layer on the
  // stored inputs to produce the next layer's inputs, and advances next_layer().
  absl::Status Advance(const LayerLinears& weights);

  // The column statistics of the last ComputeMasks: per linear, float32 [in_features]
  // mean over samples of each input column's squared L2 norm.
  const std::array<at::Tensor, kNumLinears>& column_norms() const { return column_norms_; }
  const std::vector<LayerTiming>& timings() const { return timings_; }

 private:
  SiteSession(const LlamaModel& model, LocalPruneOptions options) : model_(&model), options_(std::move(options)) {}

  // What a dense pass over next_layer() gathered: per linear index (0, 3, 4, 6 filled) the
  // column sums of squares, in float64 or float32.
  struct DenseStatistics {
    std::array<at::Tensor, kNumLinears> sums;
    int64_t samples = 0;
    int64_t tokens = 0;
    LayerTiming timing;
  };
  absl::Status RunDense(const DecoderLayerWeights& weights, bool float64, DenseStatistics* out);

  const LlamaModel* model_;  // not owned; outlives the session
  LocalPruneOptions options_;
  int64_t next_layer_ = 0;
  std::vector<at::Tensor> inputs_;  // per batch: [b, seqlen, hidden]
  std::array<at::Tensor, kNumLinears> column_norms_;
  std::vector<LayerTiming> timings_;
};

// Runs a whole site locally: sequential pruning where each layer's own masks are applied
// before the next layer is calibrated. Returns every layer's masks and the site's timings.
// `progress(layer_done, num_layers)` is called after each layer.
struct LocalPruneResult {
  std::vector<LayerMasks> masks;  // per decoder layer
  std::vector<LayerTiming> timings;
};
absl::StatusOr<LocalPruneResult> PruneLocally(const LlamaModel& model, const at::Tensor& samples,
                                              const LocalPruneOptions& options,
                                              const std::function<void(int64_t, int64_t)>& progress = nullptr);

}  // namespace fedprllm
