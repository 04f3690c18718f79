// Single-site pruning job: calibration sampling, sequential pruning, writing the result.
#include "engine/prune_job.h"

#include <chrono>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "model/model_and_tokenizer.h"
#include "model/perplexity.h"
#include "model/safetensors.h"
#include "model/tokenizer.h"
#include "model/torch_wall.h"

namespace fedprllm {

nlohmann::json MatrixSparsity(const LlamaModel& model) {
  nlohmann::json out = nlohmann::json::object();
  for (int64_t l = 0; l < model.config().num_hidden_layers; ++l) {
    for (const char* linear : kLinearNames) {
      const std::string name = LayerTensorName(l, linear);
      const at::Tensor& w = model.tensors().at(name);
      out[name] = static_cast<double>((w == 0).sum().item<int64_t>()) / static_cast<double>(w.numel());
    }
  }
  return out;
}

absl::StatusOr<LlamaModel> PruneModel(const LlamaModel& model, const at::Tensor& samples,
                                      const LocalPruneOptions& options, nlohmann::json* report,
                                      const std::function<void(const std::string&)>& log) {
  ASSIGN_OR_RETURN(SiteSession site, SiteSession::Start(model, samples, options));
  LlamaModel pruned = model;
  nlohmann::json layers = nlohmann::json::array();
  while (site.next_layer() < site.num_layers()) {
    const int64_t layer = site.next_layer();
    ASSIGN_OR_RETURN(LayerMasks masks, site.ComputeMasks());
    ASSIGN_OR_RETURN(LayerLinears linears, site.ApplyMasks(masks));
    RETURN_IF_ERROR(site.Advance(linears));
    for (int k = 0; k < kNumLinears; ++k) {
      RETURN_IF_ERROR(pruned.SetTensor(masks[k].first, linears[k]));
      if (report != nullptr) (*report)["mask_sha256"][masks[k].first] = MaskSha256(masks[k].second);
    }
    const LayerTiming& t = site.timings().back();
    layers.push_back({{"layer", layer}, {"forward_seconds", t.forward_seconds},
                      {"statistics_seconds", t.statistics_seconds}, {"selection_seconds", t.selection_seconds},
                      {"propagate_seconds", t.propagate_seconds}});
    if (log) {
      log(absl::StrFormat("layer %d/%d pruned (forward %.3fs, statistics %.3fs, selection %.3fs)", layer + 1,
                          site.num_layers(), t.forward_seconds, t.statistics_seconds, t.selection_seconds));
    }
  }
  if (report != nullptr) {
    (*report)["layers"] = layers;
    ASSIGN_OR_RETURN((*report)["matrix_sparsity"], TorchCall("measuring sparsity", [&] { return MatrixSparsity(pruned); }));
  }
  return pruned;
}

absl::StatusOr<nlohmann::json> RunPruneJob(const PruneJobOptions& options,
                                           const std::function<void(const std::string&)>& log) {
  if (options.out_dir.empty()) return absl::InvalidArgumentError("an output directory is required");
  const auto start = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(ModelAndTokenizer loaded, LoadModelAndTokenizer(options.model_path, options.tokenizer_path));
  LlamaModel model = std::move(loaded.model);
  Tokenizer tokenizer = std::move(loaded.tokenizer);
  RETURN_IF_ERROR(CheckSeqlenFitsModel("seqlen", options.sampling.seqlen, model.config()));
  ASSIGN_OR_RETURN(std::vector<int> tokens,
                   TokenizeCalibrationSources(tokenizer, options.calibration, {model.config().vocab_size, log}));
  ASSIGN_OR_RETURN(at::Tensor samples, SampleWindows(tokens, options.sampling));
  log(absl::StrCat("calibration: ", tokens.size(), " tokens, ", options.sampling.nsamples, " windows of ",
                   options.sampling.seqlen, " (seed ", options.sampling.seed, ")"));
  nlohmann::json report;
  ASSIGN_OR_RETURN(LlamaModel pruned, PruneModel(model, samples, options.prune, &report, log));
  std::vector<std::string> files;
  for (const auto& s : options.calibration) files.push_back(s.path);
  report["model"] = options.model_path;
  report["calibration_files"] = files;
  report["nsamples"] = options.sampling.nsamples;
  report["seqlen"] = options.sampling.seqlen;
  report["seed"] = options.sampling.seed;
  report["sparsity"] = options.prune.pattern.sparsity;
  report["pattern"] = options.prune.pattern.ToString();
  report["metric"] = PruneMetricName(options.prune.metric);
  report["group"] = std::string(ComparisonGroupName(options.prune.group));
  HfSaveOptions save;
  save.tokenizer_path = tokenizer.path();
  save.settings = {{"tool", "fedprllm-prune"},
                   {"sparsity", absl::StrCat(options.prune.pattern.sparsity)},
                   {"pattern", options.prune.pattern.ToString()},
                   {"metric", PruneMetricName(options.prune.metric)},
                   {"group", std::string(ComparisonGroupName(options.prune.group))},
                   {"nsamples", absl::StrCat(options.sampling.nsamples)},
                   {"seqlen", absl::StrCat(options.sampling.seqlen)},
                   {"seed", absl::StrCat(options.sampling.seed)}};
  const nlohmann::json digests = report["mask_sha256"];
  save.transform = [&digests](const std::string& name, const at::Tensor& stored) -> absl::StatusOr<SavedTensor> {
    return SavedTensor{stored, digests.value(name, std::string())};
  };
  report["total_seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  save.report = report;
  RETURN_IF_ERROR(pruned.SaveHf(options.out_dir, save));
  log(absl::StrCat("wrote ", options.out_dir));
  return report;
}

}  // namespace fedprllm
