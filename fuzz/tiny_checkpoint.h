// The tiny sharded Hugging Face checkpoint that safetensors_fuzz puts its fuzzed
// model.safetensors.index.json beside, and that fuzz_make_seeds takes the real index seed
// from: written by the project's own WriteSyntheticCheckpoint, so both see the same shards.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "model/llama_config.h"
#include "model/synthetic_checkpoint.h"

namespace fedprllm::fuzz {

// A 2-layer float32 model of hidden size 8 (about 6 KB of weights).
inline LlamaConfig TinyFuzzConfig() {
  LlamaConfig c;
  c.hidden_size = 8;
  c.intermediate_size = 16;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.vocab_size = 16;
  c.max_position_embeddings = 32;
  c.dtype = at::kFloat;
  return c;
}

// Writes config.json, the shards (about 2 KB each) and model.safetensors.index.json into `dir`.
inline absl::Status WriteTinyShardedCheckpoint(const std::string& dir) {
  SyntheticOptions options;
  options.max_shard_bytes = 2048;
  return WriteSyntheticCheckpoint(TinyFuzzConfig(), options, dir);
}

}  // namespace fedprllm::fuzz
