// LlamaConfig: the architecture hyper-parameters of a LLaMA-family model, read from and
// written to Hugging Face `config.json`.
#pragma once

#include <cstdint>
#include <string>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fedprllm {

struct LlamaConfig {
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  // Grouped-query attention: query head h uses kv head h / (heads / kv_heads).
  int64_t num_key_value_heads = 0;
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 2048;
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;
  int64_t bos_token_id = 1;
  int64_t eos_token_id = 2;
  // Storage dtype of the checkpoint (kFloat, kHalf or kBFloat16).
  at::ScalarType dtype = at::kFloat;
  // "LlamaForCausalLM" or "MistralForCausalLM": written back unchanged.
  std::string architecture = "LlamaForCausalLM";

  int64_t head_dim() const { return hidden_size / num_attention_heads; }
  int64_t kv_dim() const { return head_dim() * num_key_value_heads; }

  // Checks positivity and divisibility of the sizes.
  absl::Status Validate() const;

  static absl::StatusOr<LlamaConfig> FromHfJson(const nlohmann::json& json);
  nlohmann::json ToHfJson() const;
};

// "F32" / "F16" / "BF16" <-> dtype, as safetensors names them.
absl::StatusOr<at::ScalarType> DtypeFromSafetensorsName(absl::string_view name);
std::string SafetensorsDtypeName(at::ScalarType dtype);
// "float32" / "float16" / "bfloat16" <-> dtype, as config.json and command lines name them.
absl::StatusOr<at::ScalarType> DtypeFromTorchName(absl::string_view name);
std::string TorchDtypeName(at::ScalarType dtype);

}  // namespace fedprllm
