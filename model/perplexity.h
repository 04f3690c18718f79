// Perplexity the way Wanda and FedPrLLM evaluate it: tokenize the whole text once with BOS
// first, cut non-overlapping windows of seqlen tokens, drop the remainder, and report
// exp(total NLL / total predicted tokens).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model/llama_model.h"

namespace fedprllm {

struct PerplexityOptions {
  // Tokens per window. Default: 256. Bounds: [2, max_position_embeddings] (checked).
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

// Called after each batch with (windows done, windows total), from one thread at a time and
// with `done` increasing (batches may finish out of order when evaluated side by side).
using ProgressCallback = std::function<void(int64_t done, int64_t total)>;

// `tokens` is the whole tokenized text (BOS first).
absl::StatusOr<PerplexityResult> EvaluatePerplexity(const LlamaModel& model, const std::vector<int>& tokens,
                                                    const PerplexityOptions& options,
                                                    const ProgressCallback& progress = nullptr);

// Summed negative log-likelihood (nats) of tokens[1..] given the prefix, for each row of
// `tokens` ([batch, seq] int64), computed in float64 from float32 logits.
absl::StatusOr<double> SumNll(const LlamaModel& model, const at::Tensor& tokens, const ComputeOptions& compute);

// OK when windows of `seqlen` tokens fit `config` (LlamaConfig::CheckSequenceLength:
// max_position_embeddings, a sliding window, dynamic RoPE scaling). Otherwise InvalidArgument
// "<what> <seqlen> exceeds the model's max_position_embeddings <n>", or "<what> <seqlen>: "
// and the window's or the scaling's limit (`what` names the setting: "seqlen", "--seqlen").
absl::Status CheckSeqlenFitsModel(absl::string_view what, int64_t seqlen, const LlamaConfig& config);

// Reads a whole file into a string, bytes unchanged (also for PEM and other non-text files).
absl::StatusOr<std::string> ReadTextFile(const std::string& path);

// Replaces every CRLF ("\r\n") in `*text` with LF and returns how many it replaced; a lone
// CR is kept. Text is tokenized with LF line ends everywhere (calibration and evaluation),
// so a file with Windows line ends gives the tokens of its LF copy.
int64_t NormalizeCrlf(std::string* text);

// The line a tool prints once for a file whose `count` CRLF line ends were normalized:
// "<path>: <count> CRLF line ends normalized to LF before tokenizing".
std::string CrlfNote(const std::string& path, int64_t count);

// A text file about to be tokenized: ReadTextFile, then NormalizeCrlf. `*crlf_replaced`
// (when not null) receives the count.
absl::StatusOr<std::string> ReadTextForTokenizing(const std::string& path, int64_t* crlf_replaced);

}  // namespace fedprllm
