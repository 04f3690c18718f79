// Pooling and scoring of the exact strategy's column statistics.
#include "engine/exact_statistics.h"

#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "model/torch_wall.h"

namespace fedprllm {

std::array<int64_t, kNumStatisticInputs> StatisticWidths(const LlamaConfig& config) {
  return {config.hidden_size, config.q_dim(), config.hidden_size, config.intermediate_size};
}

absl::Status CheckStatistics(const LlamaConfig& config, const LayerStatistics& statistics) {
  if (statistics.layer < 0 || statistics.layer >= config.num_hidden_layers) {
    return absl::InvalidArgumentError(absl::StrCat("statistics for decoder layer ", statistics.layer, " of a model with ",
                                                   config.num_hidden_layers));
  }
  if (statistics.tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat("statistics of layer ", statistics.layer, " cover ",
                                                   statistics.tokens, " tokens"));
  }
  const std::array<int64_t, kNumStatisticInputs> widths = StatisticWidths(config);
  return TorchCall("checking statistics", [&]() -> absl::Status {
    for (int i = 0; i < kNumStatisticInputs; ++i) {
      const at::Tensor& sums = statistics.column_sums[i];
      const std::string what = absl::StrCat("layer ", statistics.layer, " input '", kStatisticInputNames[i], "'");
      if (!sums.defined() || sums.dim() != 1 || sums.size(0) != widths[i] || sums.scalar_type() != at::kDouble) {
        return absl::InvalidArgumentError(
            absl::StrCat("statistics of ", what, " must be float64 [", widths[i], "]"));
      }
      if (!at::isfinite(sums).all().item<bool>() || (sums < 0).any().item<bool>()) {
        return absl::InvalidArgumentError(absl::StrCat("statistics of ", what, " hold a negative or non-finite sum"));
      }
    }
    return absl::OkStatus();
  });
}

namespace {

// Host byte order is little-endian on every platform FedPrLLM builds for; the record is
// little-endian by definition, so a big-endian host would need a swap here.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the statistics record is little-endian");

}  // namespace

absl::StatusOr<std::string> EncodeStatistics(const LayerStatistics& statistics) {
  return TorchCall("encoding statistics", [&] {
    int64_t values = 0;
    for (const at::Tensor& sums : statistics.column_sums) values += sums.numel();
    std::string record(8 * (1 + values), '\0');
    const uint64_t tokens = static_cast<uint64_t>(statistics.tokens);
    std::memcpy(record.data(), &tokens, 8);
    size_t offset = 8;
    for (const at::Tensor& sums : statistics.column_sums) {
      const at::Tensor host = sums.to(at::kCPU, at::kDouble).contiguous();
      std::memcpy(record.data() + offset, host.data_ptr<double>(), 8 * host.numel());
      offset += 8 * host.numel();
    }
    return record;
  });
}

absl::StatusOr<LayerStatistics> DecodeStatistics(const LlamaConfig& config, int64_t layer, absl::string_view record) {
  const std::array<int64_t, kNumStatisticInputs> widths = StatisticWidths(config);
  int64_t values = 0;
  for (int64_t w : widths) values += w;
  if (static_cast<int64_t>(record.size()) != 8 * (1 + values)) {
    return absl::InvalidArgumentError(absl::StrCat("the statistics record of layer ", layer, " has ", record.size(),
                                                   " bytes; this model's is ", 8 * (1 + values)));
  }
  LayerStatistics statistics;
  statistics.layer = layer;
  uint64_t tokens = 0;
  std::memcpy(&tokens, record.data(), 8);
  if (tokens > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return absl::InvalidArgumentError(absl::StrCat("the statistics record of layer ", layer, " claims ", tokens, " tokens"));
  }
  statistics.tokens = static_cast<int64_t>(tokens);
  RETURN_IF_ERROR(TorchCall("decoding statistics", [&]() -> absl::Status {
    size_t offset = 8;
    for (int i = 0; i < kNumStatisticInputs; ++i) {
      statistics.column_sums[i] = at::empty({widths[i]}, at::kDouble);
      std::memcpy(statistics.column_sums[i].data_ptr<double>(), record.data() + offset, 8 * widths[i]);
      offset += 8 * widths[i];
    }
    return absl::OkStatus();
  }));
  RETURN_IF_ERROR(CheckStatistics(config, statistics));
  return statistics;
}

absl::StatusOr<LayerStatistics> PoolStatistics(const std::vector<LayerStatistics>& sites) {
  if (sites.empty()) return absl::InvalidArgumentError("no statistics to pool");
  for (const LayerStatistics& site : sites) {
    if (site.layer != sites[0].layer) {
      return absl::InvalidArgumentError(absl::StrCat("statistics of layers ", sites[0].layer, " and ", site.layer,
                                                     " cannot be pooled"));
    }
  }
  return TorchCall("pooling statistics", [&] {
    LayerStatistics pooled;
    pooled.layer = sites[0].layer;
    for (int i = 0; i < kNumStatisticInputs; ++i) pooled.column_sums[i] = sites[0].column_sums[i].clone();
    pooled.tokens = sites[0].tokens;
    for (size_t s = 1; s < sites.size(); ++s) {
      for (int i = 0; i < kNumStatisticInputs; ++i) pooled.column_sums[i].add_(sites[s].column_sums[i]);
      pooled.tokens += sites[s].tokens;
    }
    return pooled;
  });
}

absl::StatusOr<LayerMasks> MasksFromStatistics(const LlamaModel& model, const LayerStatistics& statistics,
                                               ComparisonGroup group, const SparsityPattern& pattern,
                                               const ComputeOptions& compute) {
  RETURN_IF_ERROR(CheckStatistics(model.config(), statistics));
  ASSIGN_OR_RETURN(DecoderLayerWeights weights, model.Layer(statistics.layer, compute));
  return TorchCall(absl::StrCat("choosing masks of decoder layer ", statistics.layer), [&] {
    LayerMasks masks;
    for (int k = 0; k < kNumLinears; ++k) {
      const at::Tensor weight = weights.linears[k].to(at::kFloat);
      const at::Tensor norm = (statistics.column_sums[kStatisticInputOf[k]] / static_cast<double>(statistics.tokens))
                                  .to(weight.device(), at::kFloat);
      const std::string name = LayerTensorName(statistics.layer, kLinearNames[k]);
      if (group == ComparisonGroup::kRow && !pattern.structured()) {
        masks.emplace_back(name, RowMask(weight, norm, pattern.sparsity));
      } else {
        masks.emplace_back(name, ToPackedMask(SelectLowest(WandaScore(weight, norm), group, pattern).cpu()));
      }
    }
    return masks;
  });
}

}  // namespace fedprllm
