// The exact strategy's statistics (docs/round_protocol.md, "exact"): Wanda's score
// |W_ij| * ||X_j||_2 needs only each linear input column's sum of squared activations, which
// pools exactly across sites. A site sends float64 column sums and its token count per
// decoder layer; the server pools them and scores like centralized Wanda on the union of
// the sites' windows.
//
//   ASSIGN_OR_RETURN(LayerStatistics mine, site.ComputeStatistics());            // each site
//   ASSIGN_OR_RETURN(LayerStatistics pooled, PoolStatistics({a, b, c}));          // server
//   ASSIGN_OR_RETURN(LayerMasks masks, MasksFromStatistics(model, pooled, group, pattern));
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/mask_selection.h"
#include "model/llama_model.h"

namespace fedprllm {

// The distinct linear inputs of a decoder layer: q/k/v share the attention input, gate/up
// the MLP input. kStatisticInputOf[k] is the input of linear kLinearNames[k].
inline constexpr int kNumStatisticInputs = 4;
inline constexpr std::array<const char*, kNumStatisticInputs> kStatisticInputNames = {"qkv", "o", "gate_up", "down"};
inline constexpr std::array<int, kNumLinears> kStatisticInputOf = {0, 0, 0, 1, 2, 2, 3};

struct LayerStatistics {
  int64_t layer = 0;
  // float64 [in_features] sums over every calibration token of the squared activation.
  std::array<at::Tensor, kNumStatisticInputs> column_sums;
  int64_t tokens = 0;
};

// The column count of each statistic input of `config`'s layers (hidden, q heads * head_dim,
// hidden, intermediate): 23,296 numbers per LLaMA-7B layer.
std::array<int64_t, kNumStatisticInputs> StatisticWidths(const LlamaConfig& config);

// Checks one site's statistics against the model: layer, widths, float64, finite and
// non-negative sums, tokens >= 1. INVALID_ARGUMENT naming what is wrong.
absl::Status CheckStatistics(const LlamaConfig& config, const LayerStatistics& statistics);

// The statistics record that crosses the wire and the state directory
// (docs/round_protocol.md §4, "Exact"): the token count as a little-endian uint64, then the
// four column sums in kStatisticInputNames order as little-endian float64; 8 * (1 + the sum
// of StatisticWidths) bytes. `statistics` must pass CheckStatistics.
absl::StatusOr<std::string> EncodeStatistics(const LayerStatistics& statistics);
// Parses a record of `layer` and checks it (size, then CheckStatistics). INVALID_ARGUMENT
// saying what is wrong.
absl::StatusOr<LayerStatistics> DecodeStatistics(const LlamaConfig& config, int64_t layer, absl::string_view record);

// Sums in the given order (float64), tokens added. All of one layer; at least one.
absl::StatusOr<LayerStatistics> PoolStatistics(const std::vector<LayerStatistics>& sites);

// Wanda's masks of `statistics.layer` from (pooled) statistics: the column norm is
// float32(sum / tokens), the score |W| * sqrt(norm) in float32, selected in `group` with
// `pattern` (row and unstructured: the fused RowMask). The one function behind the exact
// strategy's decision and the float64 centralized baseline, so the two agree.
absl::StatusOr<LayerMasks> MasksFromStatistics(const LlamaModel& model, const LayerStatistics& statistics,
                                               ComparisonGroup group, const SparsityPattern& pattern,
                                               const ComputeOptions& compute = {});

}  // namespace fedprllm
