// A single-site pruning job (fedprllm-prune, and the centralized Wanda baseline): sample
// calibration windows, prune layer by layer, write the model and a JSON report.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "engine/calibration_data.h"
#include "engine/site_session.h"
#include "model/llama_model.h"

namespace fedprllm {

struct PruneJobOptions {
  std::string model_path;
  // Default: found beside the model (model/tokenizer.h).
  std::string tokenizer_path;
  std::vector<CalibrationSource> calibration;
  SamplingOptions sampling;
  LocalPruneOptions prune;
  // Output directory: Hugging Face layout plus pruning_report.json (settings, mask digests,
  // per-matrix sparsity, per-layer timings).
  std::string out_dir;
};

// Prunes `model` on `samples` and returns it with every pruned matrix replaced. `report`
// receives per-matrix sparsity, per-layer timings and each mask's digest (mask_sha256). Progress lines go to `log`.
absl::StatusOr<LlamaModel> PruneModel(const LlamaModel& model, const at::Tensor& samples,
                                      const LocalPruneOptions& options, nlohmann::json* report,
                                      const std::function<void(const std::string&)>& log = nullptr);

// Runs the whole job and returns the report that was written.
absl::StatusOr<nlohmann::json> RunPruneJob(const PruneJobOptions& options,
                                           const std::function<void(const std::string&)>& log);

// Fraction of zeros in each pruned matrix of `model` (report helper).
nlohmann::json MatrixSparsity(const LlamaModel& model);

}  // namespace fedprllm
