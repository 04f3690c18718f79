// fedprllm-prune: single-site pruning (the centralized Wanda baseline, or magnitude) of a
// model on calibration text, written in Hugging Face layout with a JSON report.
#include <cstdio>

#include "absl/flags/flag.h"
#include "common/command_line.h"
#include "common/status_macros.h"
#include "engine/prune_job.h"
#include "tools/tool_flags.h"

ABSL_FLAG(std::string, model, "", "Model: Hugging Face directory or llama2.c .bin (required)");
ABSL_FLAG(std::string, tokenizer, "", "SentencePiece .model (default: found beside the model)");
ABSL_FLAG(std::vector<std::string>, calib, {},
          "Calibration sources, comma-separated: file.txt, file.jsonl:field1+field2, file.npy or "
          "file.bin:uint16|uint32 (docs/calibration_data.md; required)");
ABSL_FLAG(int64_t, nsamples, 128, "Calibration windows");
ABSL_FLAG(int64_t, seqlen, 256, "Tokens per calibration window");
ABSL_FLAG(uint64_t, seed, 0, "Seed of the window positions");
ABSL_FLAG(double, sparsity, 0.5, "Fraction pruned per comparison group, in [0, 1) (unstructured only)");
ABSL_FLAG(std::string, pattern, "unstructured", "unstructured, 2:4 or 4:8");
ABSL_FLAG(std::string, metric, "wanda", "wanda or magnitude");
ABSL_FLAG(std::string, group, "row", "Comparison group: row (Wanda's default) or layer");
ABSL_FLAG(std::string, out, "", "Output directory (required)");
ABSL_FLAG(std::string, device, "auto", "auto (CUDA when present, else CPU), cpu, cuda or cuda:N");
ABSL_FLAG(std::string, dtype, "", "Compute dtype (default: the model's)");
ABSL_FLAG(bool, activations_on_host, false, "Keep calibration activations in host memory");

namespace fedprllm {

absl::Status Run() {
  PruneJobOptions options;
  options.model_path = absl::GetFlag(FLAGS_model);
  if (options.model_path.empty()) return absl::InvalidArgumentError("--model is required");
  options.tokenizer_path = absl::GetFlag(FLAGS_tokenizer);
  RETURN_IF_ERROR(CheckListFlagFields(absl::GetFlag(FLAGS_calib), "--calib"));
  for (const std::string& spec : absl::GetFlag(FLAGS_calib)) {
    ASSIGN_OR_RETURN(CalibrationSource source, ParseCalibrationSource(spec));
    options.calibration.push_back(std::move(source));
  }
  options.sampling = {absl::GetFlag(FLAGS_nsamples), absl::GetFlag(FLAGS_seqlen), absl::GetFlag(FLAGS_seed)};
  ASSIGN_OR_RETURN(options.prune.pattern, SparsityPattern::Parse(absl::GetFlag(FLAGS_pattern), absl::GetFlag(FLAGS_sparsity)));
  ASSIGN_OR_RETURN(options.prune.metric, ParsePruneMetric(absl::GetFlag(FLAGS_metric)));
  ASSIGN_OR_RETURN(options.prune.group, ParseComparisonGroup(absl::GetFlag(FLAGS_group)));
  ASSIGN_OR_RETURN(options.prune.compute, ParseComputeOptions(absl::GetFlag(FLAGS_device), absl::GetFlag(FLAGS_dtype)));
  options.prune.activations_on_host = absl::GetFlag(FLAGS_activations_on_host);
  options.out_dir = absl::GetFlag(FLAGS_out);
  auto log = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
  log("computing on " + DescribeDevice(options.prune.compute, absl::GetFlag(FLAGS_device)));
  ASSIGN_OR_RETURN(nlohmann::json report, RunPruneJob(options, log));
  std::printf("pruned %zu matrices in %.2fs -> %s\n", report["matrix_sparsity"].size(),
              report["total_seconds"].get<double>(), options.out_dir.c_str());
  return absl::OkStatus();
}

}  // namespace fedprllm

int main(int argc, char** argv) {
  fedprllm::ParseCommandLine(argc, argv, 
      "fedprllm-prune --model M --calib FILE... --nsamples 128 --seqlen N --sparsity 0.5 "
      "--pattern unstructured|2:4|4:8 --metric wanda|magnitude --out DIR [--device D] [--seed S]");
  fedprllm::UseAllCores(fedprllm::PoolUse::kOperations);
  return fedprllm::ExitWith(fedprllm::Run(), "fedprllm-prune");
}
