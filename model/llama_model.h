// LlamaModel: a LLaMA-family causal language model held as named host tensors (Hugging
// Face names, rotate-half RoPE convention), with a LibTorch forward pass that can run the
// whole model or one decoder layer at a time on any device.
//
//   ASSIGN_OR_RETURN(LlamaModel model, LlamaModel::Load("models/stories260K/stories260K.bin"));
//   ASSIGN_OR_RETURN(at::Tensor logits, model.Forward(tokens, ComputeOptions{}));
#pragma once

#include <array>
#include <functional>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "model/compute_device.h"
#include "model/llama_config.h"
#include "model/safetensors.h"

namespace fedprllm {

// The seven prunable linear layers of a decoder layer, in forward order. Index i of
// kLinearNames is the `linear_index` used by DecoderLayerWeights and observers.
inline constexpr int kNumLinears = 7;
inline constexpr std::array<const char*, kNumLinears> kLinearNames = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};

// "model.layers.<layer>.<suffix>.weight"
std::string LayerTensorName(int64_t layer, absl::string_view suffix);

// Where and in which precision a forward pass runs. On CPU, float16 compute is carried
// out in float32 (CPU half matmuls are not supported by LibTorch); bfloat16 runs natively.
struct ComputeOptions {
  at::Device device = at::kCPU;
  // Compute dtype; Undefined means the checkpoint's dtype, except on the CPU, where a
  // float16 or bfloat16 checkpoint computes in float32 (LibTorch's CPU half-precision
  // matmuls are much slower). float16 is float32 on the CPU even when asked for.
  at::ScalarType dtype = at::ScalarType::Undefined;
};

// Parses a device and a compute dtype as users write them. Device: "auto" (cuda:0 when this
// LibTorch has CUDA and the machine a visible device, else the CPU), "cpu", "cuda" (cuda:0)
// or "cuda:N", resolved by ResolveDevice (model/compute_device.h). Dtype: "float32",
// "bfloat16", "float16", or "" for the checkpoint's. Errors: INVALID_ARGUMENT for an unknown
// spelling, FAILED_PRECONDITION for a CUDA device this build or machine lacks.
absl::StatusOr<ComputeOptions> ParseComputeOptions(const std::string& device, const std::string& dtype);
// The device a site computes on and why, for its log, from ProbeCuda():
// "cuda:0 (device: auto; NVIDIA H200, 140 GiB; 1 CUDA device)",
// "cpu (device: auto; this LibTorch has no CUDA)", "cpu (device: cpu; 1 CUDA device not used)".
std::string DescribeDevice(const ComputeOptions& options, const std::string& requested);

// One decoder layer's tensors on one device, in the compute dtype.
struct DecoderLayerWeights {
  at::Tensor input_layernorm;
  at::Tensor post_attention_layernorm;
  std::array<at::Tensor, kNumLinears> linears;  // [out, in], ordered as kLinearNames
};

// Keys and values one decoder layer has seen, for incremental decoding: each
// [batch * kv_heads, tokens so far, head_dim], undefined before the first step.
struct LayerKvCache {
  at::Tensor keys, values;
  int64_t tokens() const { return keys.defined() ? keys.size(1) : 0; }
};

// Called with each linear layer's input just before its matmul: `input` is
// [batch, tokens, in_features]. q, k and v (0, 1, 2) see the same input, as do gate and up.
using LinearInputObserver = std::function<void(int linear_index, const at::Tensor& input)>;

class LlamaModel {
 public:
  // Loads a Hugging Face directory (config.json + model.safetensors or a sharded index) or
  // a llama2.c legacy checkpoint (a .bin file). Every tensor's name, shape and dtype are
  // checked against the config; errors name the file and the tensor.
  static absl::StatusOr<LlamaModel> Load(const std::string& path);
  // Builds a model from tensors already in memory (validated the same way).
  static absl::StatusOr<LlamaModel> FromTensors(LlamaConfig config, TensorMap tensors,
                                                std::string source);

  const LlamaConfig& config() const { return config_; }
  // Where the model was loaded from (for messages).
  const std::string& source() const { return source_; }
  // All tensors by Hugging Face name, on the host. lm_head.weight is absent when tied.
  const TensorMap& tensors() const { return tensors_; }
  absl::StatusOr<at::Tensor> tensor(const std::string& name) const;
  // Replaces a tensor; its shape must match. The new tensor is stored in the model's dtype.
  absl::Status SetTensor(const std::string& name, const at::Tensor& value);

  // Copies decoder layer `layer` to the device and compute dtype of `options`.
  absl::StatusOr<DecoderLayerWeights> Layer(int64_t layer, const ComputeOptions& options) const;

  // Token embeddings for `tokens` ([batch, seq] int64) -> [batch, seq, hidden].
  absl::StatusOr<at::Tensor> Embed(const at::Tensor& tokens, const ComputeOptions& options) const;
  // Runs one decoder layer. `hidden` is [batch, seq, hidden] on the weights' device and dtype;
  // positions are 0..seq-1. Returns the layer output, same shape.
  absl::StatusOr<at::Tensor> DecoderLayerForward(const DecoderLayerWeights& weights,
                                                 const at::Tensor& hidden,
                                                 const LinearInputObserver* observer = nullptr) const;
  // DecoderLayerForward for the next tokens of sequences whose earlier keys and values are in
  // *cache: positions continue from cache->tokens(), and this step's keys and values are
  // appended. Stepping token by token gives the logits of one full forward (generation).
  absl::StatusOr<at::Tensor> DecoderLayerStep(const DecoderLayerWeights& weights, const at::Tensor& hidden,
                                              LayerKvCache* cache) const;
  // Final RMSNorm and LM head: [batch, seq, hidden] -> float32 logits [batch, seq, vocab].
  absl::StatusOr<at::Tensor> Logits(const at::Tensor& hidden, const ComputeOptions& options) const;
  // Full forward: tokens [batch, seq] -> float32 logits [batch, seq, vocab].
  absl::StatusOr<at::Tensor> Forward(const at::Tensor& tokens, const ComputeOptions& options) const;

  // A copy of the model with every tensor stored in `dtype` (kFloat, kHalf or kBFloat16).
  absl::StatusOr<LlamaModel> CastTo(at::ScalarType dtype) const;

  // Resolves Undefined dtype and CPU half as documented on ComputeOptions.
  at::ScalarType ComputeDtype(const ComputeOptions& options) const;

  // Hex SHA-256 over every tensor's name, shape, dtype and bytes, in name order, plus the
  // config: two sites hold the same base model exactly when their fingerprints agree.
  std::string Fingerprint() const;

  // Writes the model in Hugging Face layout into `dir` (created if needed): config.json,
  // model.safetensors in the model's dtype and, when given, the tokenizer file copied as
  // tokenizer.model.
  // With `transform`, each tensor is written as transform(name, tensor), one at a time.
  absl::Status SaveHf(const std::string& dir, const std::string& tokenizer_path = "",
                      const TensorTransform& transform = nullptr) const;

 private:
  LlamaModel(LlamaConfig config, TensorMap tensors, std::string source)
      : config_(std::move(config)), tensors_(std::move(tensors)), source_(std::move(source)) {}

  at::Tensor RopeRotate(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) const;
  // The decoder layer after `cache`'s tokens (none when cache is null), appending to it.
  absl::StatusOr<at::Tensor> DecoderLayer(const DecoderLayerWeights& weights, const at::Tensor& hidden,
                                          const LinearInputObserver* observer, LayerKvCache* cache) const;

  LlamaConfig config_;
  TensorMap tensors_;
  std::string source_;
};

// Loads a llama2.c legacy ("version 0") checkpoint as Hugging Face-named tensors, with the
// q/k rows permuted from interleaved-pair RoPE to rotate-half RoPE.
absl::StatusOr<LlamaModel> LoadLlama2c(const std::string& path);

}  // namespace fedprllm
