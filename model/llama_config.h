// LlamaConfig: the architecture hyper-parameters of a LLaMA-family model (LLaMA-1/2/3/3.1,
// TinyLlama, Mistral, Qwen2), read from and written to Hugging Face `config.json`, and the
// list of tensors such a model has. Every config.json key is either understood, known not to
// change the forward pass, or refused with a message that names it (docs/models.md).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fedprllm {

// The seven prunable linear layers of a decoder layer, in forward order. Index i of
// kLinearNames is the `linear_index` used by DecoderLayerWeights and observers.
inline constexpr int kNumLinears = 7;
inline constexpr std::array<const char*, kNumLinears> kLinearNames = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};

// "model.layers.<layer>.<suffix>.weight"
std::string LayerTensorName(int64_t layer, absl::string_view suffix);
// "model.layers.<layer>.<suffix>.bias"
std::string LayerBiasName(int64_t layer, absl::string_view suffix);

// config.json's rope_scaling, with the formulas of the transformers version that introduced
// each type (model/rotary_embedding.h).
struct RopeScaling {
  enum class Type { kNone, kLinear, kDynamic, kLlama3 };
  Type type = Type::kNone;
  // linear: positions are divided by it; dynamic: NTK base scaling past the original
  // context; llama3: the low-frequency divisor. Bounds: >= 1.
  double factor = 1.0;
  // llama3 only: wavelengths longer than original / low_freq_factor are divided by factor,
  // shorter than original / high_freq_factor are kept, and those between are blended.
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  // The context the model was trained with: llama3 (required) and dynamic (default:
  // max_position_embeddings).
  int64_t original_max_position_embeddings = 0;
};
std::string RopeScalingName(RopeScaling::Type type);  // "none", "linear", "dynamic", "llama3"

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
  // 0: hidden_size / num_attention_heads (config.json without head_dim, or head_dim null).
  int64_t explicit_head_dim = 0;
  // LLaMA's attention_bias (q, k, v and o biases) and mlp_bias (gate, up and down biases).
  // Qwen2 always has q, k and v biases and no others.
  bool attention_bias = false;
  bool mlp_bias = false;
  RopeScaling rope_scaling;
  // Attention window of Mistral (sliding_window) and of Qwen2 (when use_sliding_window).
  // Sequences longer than the window are refused (CheckSequenceLength), so no window mask is
  // ever needed.
  std::optional<int64_t> sliding_window;
  // Storage dtype of the checkpoint (kFloat, kHalf or kBFloat16).
  at::ScalarType dtype = at::kFloat;
  // "LlamaForCausalLM", "MistralForCausalLM" or "Qwen2ForCausalLM".
  std::string architecture = "LlamaForCausalLM";
  // The config.json this config was read from, every key kept (null when the model came
  // from elsewhere, e.g. a llama2.c checkpoint). Written back by HfJsonForSave.
  nlohmann::json source_json;

  int64_t head_dim() const { return explicit_head_dim > 0 ? explicit_head_dim : hidden_size / num_attention_heads; }
  int64_t q_dim() const { return head_dim() * num_attention_heads; }
  int64_t kv_dim() const { return head_dim() * num_key_value_heads; }
  // Whether linear kLinearNames[i] has a bias tensor.
  std::array<bool, kNumLinears> linear_has_bias() const;
  // The longest sequence the forward pass accepts: max_position_embeddings, times the
  // factor for dynamic RoPE scaling (which exists to run past the trained context), and no
  // more than the sliding window.
  int64_t max_sequence_length() const;
  // OK when `tokens` positions fit max_sequence_length(); the error names the limit's key.
  absl::Status CheckSequenceLength(int64_t tokens) const;

  // Checks positivity and divisibility of the sizes.
  absl::Status Validate() const;

  // Reads config.json. Refuses, naming the key, any key that would change the forward pass
  // in a way this implementation does not follow, and any key it does not know.
  static absl::StatusOr<LlamaConfig> FromHfJson(const nlohmann::json& json);
  // The config's own fields as config.json (independent of where the model came from; the
  // model fingerprint hashes it).
  nlohmann::json ToHfJson() const;
  // What a written checkpoint's config.json holds: the source's config.json with every key
  // and value, torch_dtype updated to `dtype`; ToHfJson() when there is no source.
  nlohmann::json HfJsonForSave() const;
};

// Every tensor a model with `config` has, in Hugging Face order (embeddings, then each
// layer's norms, projections and biases, the final norm, lm_head unless tied), with shapes.
std::vector<std::pair<std::string, std::vector<int64_t>>> ArchitectureTensors(const LlamaConfig& config);

// "F32" / "F16" / "BF16" <-> dtype, as safetensors names them.
absl::StatusOr<at::ScalarType> DtypeFromSafetensorsName(absl::string_view name);
std::string SafetensorsDtypeName(at::ScalarType dtype);
// "float32" / "float16" / "bfloat16" <-> dtype, as config.json and command lines name them.
absl::StatusOr<at::ScalarType> DtypeFromTorchName(absl::string_view name);
std::string TorchDtypeName(at::ScalarType dtype);

}  // namespace fedprllm
