// Perplexity the way Wanda and FedPrLLM evaluate it: tokenize the whole text once with BOS
// first, cut non-overlapping windows of seqlen tokens, drop the remainder, and report
// exp(total NLL / total predicted tokens).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/llama_model.h"

namespace fedprllm {

struct PerplexityOptions {
  // Tokens per window. Default: 256. Bounds: [2, max_position_embeddings].
  int64_t seqlen = 256;
  // Windows evaluated together. Default: 8.
  int64_t batch_size = 8;
  // Evaluate at most this many windows (0 = all).
  int64_t max_windows = 0;
  ComputeOptions compute;
};

struct PerplexityResult {
  double perplexity = 0;
  double mean_nll = 0;        // nats per predicted token
  int64_t windows = 0;
  int64_t predicted_tokens = 0;  // windows * (seqlen - 1)
};

// Called after each batch with (windows done, windows total).
using ProgressCallback = std::function<void(int64_t done, int64_t total)>;

// `tokens` is the whole tokenized text (BOS first).
absl::StatusOr<PerplexityResult> EvaluatePerplexity(const LlamaModel& model, const std::vector<int>& tokens,
                                                    const PerplexityOptions& options,
                                                    const ProgressCallback& progress = nullptr);

// Summed negative log-likelihood (nats) of tokens[1..] given the prefix, for each row of
// `tokens` ([batch, seq] int64), computed in float64 from float32 logits.
absl::StatusOr<double> SumNll(const LlamaModel& model, const at::Tensor& tokens, const ComputeOptions& compute);

// Reads a whole file into a string.
absl::StatusOr<std::string> ReadTextFile(const std::string& path);

}  // namespace fedprllm
