// Seeded text generation from a model: the bundled main job uses it to give each site
// its own private stories, and the evaluation a held-out text, without shipping data.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "model/llama_model.h"
#include "model/tokenizer.h"

namespace fedprllm {

struct GenerationOptions {
  // Independent streams generated together, each starting at BOS. Default 16.
  int64_t streams = 16;
  // Tokens per stream (at most max_position_embeddings). Default 256.
  int64_t tokens_per_stream = 256;
  // Softmax temperature; > 0. Default 1.0.
  double temperature = 1.0;
  uint64_t seed = 0;
  ComputeOptions compute;
};

// Samples `streams` texts and returns them decoded, separated by blank lines. The same
// seed gives the same text on any machine (portable splitmix64 sampling over float64
// probabilities).
absl::StatusOr<std::string> GenerateText(const LlamaModel& model, const Tokenizer& tokenizer,
                                         const GenerationOptions& options);

}  // namespace fedprllm
