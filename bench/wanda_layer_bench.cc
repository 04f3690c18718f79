// Benchmark: one decoder layer of LLaMA-7B shape (hidden 4096, intermediate 11008, 32
// heads) with random weights, calibrated on a few 512-token samples on CPU. Prints the time
// of the dense forward passes, the column statistics and the mask selection, and the ratio
// (statistics + selection) / forward, whose target is <= 0.25.
#include <ATen/Parallel.h>

#include <cstdio>

#include "absl/flags/flag.h"
#include "common/command_line.h"
#include "common/status_macros.h"
#include "engine/site_session.h"
#include "model/cpu_runtime.h"

ABSL_FLAG(int64_t, samples, 4, "Calibration samples");
ABSL_FLAG(int64_t, seqlen, 512, "Tokens per sample");
ABSL_FLAG(int64_t, hidden, 4096, "Hidden size");
ABSL_FLAG(int64_t, intermediate, 11008, "MLP intermediate size");
ABSL_FLAG(int64_t, heads, 32, "Attention heads");
ABSL_FLAG(std::string, pattern, "unstructured", "unstructured, 2:4 or 4:8");

namespace fedprllm {

absl::Status Run() {
  LlamaConfig config;
  config.hidden_size = absl::GetFlag(FLAGS_hidden);
  config.intermediate_size = absl::GetFlag(FLAGS_intermediate);
  config.num_attention_heads = config.num_key_value_heads = absl::GetFlag(FLAGS_heads);
  config.num_hidden_layers = 1;
  config.vocab_size = 256;  // only the decoder layer is measured
  config.max_position_embeddings = 4096;
  config.tie_word_embeddings = true;
  at::manual_seed(0);
  TensorMap tensors;
  const int64_t h = config.hidden_size, i = config.intermediate_size;
  tensors["model.embed_tokens.weight"] = at::randn({config.vocab_size, h});
  tensors["model.norm.weight"] = at::ones({h});
  tensors[LayerTensorName(0, "input_layernorm")] = at::ones({h});
  tensors[LayerTensorName(0, "post_attention_layernorm")] = at::ones({h});
  const std::array<std::vector<int64_t>, kNumLinears> shapes = {
      std::vector<int64_t>{h, h}, {h, h}, {h, h}, {h, h}, {i, h}, {i, h}, {h, i}};
  for (int k = 0; k < kNumLinears; ++k) {
    tensors[LayerTensorName(0, kLinearNames[k])] = at::randn(shapes[k]) * 0.02;
  }
  ASSIGN_OR_RETURN(LlamaModel model, LlamaModel::FromTensors(config, std::move(tensors), "random LLaMA-7B layer"));
  const at::Tensor samples = at::randint(0, config.vocab_size, {absl::GetFlag(FLAGS_samples), absl::GetFlag(FLAGS_seqlen)}, at::kLong);
  LocalPruneOptions options;
  ASSIGN_OR_RETURN(options.pattern, SparsityPattern::Parse(absl::GetFlag(FLAGS_pattern), 0.5));
  options.batch_size = 1;
  std::printf("layer: hidden %lld, intermediate %lld, heads %lld; %lld samples x %lld tokens; %s; %d threads\n",
              static_cast<long long>(h), static_cast<long long>(i), static_cast<long long>(config.num_attention_heads),
              static_cast<long long>(samples.size(0)), static_cast<long long>(samples.size(1)),
              options.pattern.ToString().c_str(), at::get_num_threads());
  ASSIGN_OR_RETURN(SiteSession site, SiteSession::Start(model, samples, options));
  ASSIGN_OR_RETURN(LayerMasks masks, site.ComputeMasks());
  ASSIGN_OR_RETURN(LayerLinears pruned, site.ApplyMasks(masks));
  RETURN_IF_ERROR(site.Advance(pruned));
  const LayerTiming& t = site.timings().back();
  std::printf("dense forward:        %8.3f s\n", t.forward_seconds);
  std::printf("column statistics:    %8.3f s\n", t.statistics_seconds);
  std::printf("mask selection:       %8.3f s\n", t.selection_seconds);
  std::printf("pruned forward:       %8.3f s\n", t.propagate_seconds);
  std::printf("ratio (statistics + selection) / dense forward: %.3f (target <= 0.25)\n",
              (t.statistics_seconds + t.selection_seconds) / t.forward_seconds);
  return absl::OkStatus();
}

}  // namespace fedprllm

int main(int argc, char** argv) {
  fedprllm::ParseCommandLine(argc, argv, "fedprllm-bench-wanda-layer [--samples N] [--seqlen N] [--pattern P] ...");
  fedprllm::UseAllCores();
  const absl::Status status = fedprllm::Run();
  if (!status.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
