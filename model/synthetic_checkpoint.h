// Hugging Face checkpoints in the exact shapes and config of real LLaMA-family models, with
// seeded random weights, for scale tests and benchmarks without downloading weights. Written
// tensor by tensor in bounded memory, sharded as Hugging Face shards them.
//
//   ASSIGN_OR_RETURN(LlamaConfig config, SyntheticArchitecture("llama-2-7b"));
//   SyntheticOptions options;  // bfloat16, seed 0, 5 GB shards
//   RETURN_IF_ERROR(WriteSyntheticCheckpoint(config, options, "/data/llama-2-7b-synth"));
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/llama_config.h"
#include "model/safetensors.h"

namespace fedprllm {

// The architectures SyntheticArchitecture knows, in the order `fedprllm-synth --list`
// prints them: llama-2-7b, llama-2-13b, llama-3-8b (GQA, vocab 128256), mistral-7b (v0.3:
// GQA, vocab 32768, no sliding window), tinyllama-1.1b, and tiny-test (a few MB, for tests).
std::vector<std::string> SyntheticArchitectureNames();

// The config.json values of `name` (sizes, heads, vocab, RoPE theta, norm epsilon, token
// ids, architecture), dtype bfloat16. NOT_FOUND naming the known ones otherwise.
absl::StatusOr<LlamaConfig> SyntheticArchitecture(const std::string& name);

// Every tensor of a model with `config`, in Hugging Face order (embeddings, then each layer's
// norms and projections, the final norm, lm_head unless tied), in `config.dtype`.
std::vector<SafetensorsEntry> CheckpointEntries(const LlamaConfig& config);

// The parameter count of a model with `config` (lm_head counted unless tied).
int64_t ParameterCount(const LlamaConfig& config);

struct SyntheticOptions {
  uint64_t seed = 0;
  // A new shard starts before a tensor that would take the current one past this many
  // bytes (Hugging Face's max_shard_size, "5GB" = 5e9). One shard is model.safetensors,
  // more are model-0000i-of-0000n.safetensors with model.safetensors.index.json.
  uint64_t max_shard_bytes = 5'000'000'000;
  // Copied into the directory as tokenizer.model when set.
  std::string tokenizer;
  // Called after each tensor: bytes written so far, bytes in all.
  std::function<void(uint64_t written, uint64_t total)> progress;
};

// Writes config.json, generation_config.json, the shards (and their index) and the tokenizer
// into `dir` (created if needed). Weights: norms are 1; biases N(0, 0.02^2); embeddings N(0, 1); every linear
// layer N(0, 1/in_features), with o_proj and down_proj further scaled by
// 1/sqrt(2·layers), so that the residual stream and the logits stay finite through every
// layer in bfloat16. The values depend only on the seed, the tensor's name and its shape
// (not on the shard size). Memory: one chunk of at most 16 M elements in float32 at a time.
absl::Status WriteSyntheticCheckpoint(const LlamaConfig& config, const SyntheticOptions& options,
                                      const std::string& dir);

}  // namespace fedprllm
